package update

import "testing"

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.0.0", "2.0.0", -1},
		{"1.0.10", "1.0.9", 1},
		{"1.0", "1.0.1", -1},
		{"2.0~rc1", "2.0", -1},
		{"2.0-rc1", "2.0", 1}, // systemd: '-' is a release separator, and longer wins at the end
		{"2.0^post1", "2.0", 1},
		{"1.010", "1.10", 0},
		{"1.0a", "1.0b", -1},
		{"10", "9", 1},
		{"1.0.0", "1.0.0.1", -1},
	} {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := CompareVersions(c.b, c.a); got != -c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}
