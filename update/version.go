package update

// CompareVersions orders two versions the way systemd-boot orders the "version" of loader entries
// (systemd's strverscmp_improved): numeric runs compare as numbers, '~' sorts before anything (even the
// end: 2.0~rc1 < 2.0), '-' and '^' and '.' separate, and a longer version wins over its prefix. Using the
// boot loader's own rule matters: "newer" for the agent must mean "sorts first" for systemd-boot, or a
// freshly installed slot would not be the one tried. It returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	valid := func(c byte) bool {
		return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '~' || c == '-' || c == '^' || c == '.'
	}
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	isAlpha := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	at := func(s string, i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	cmp := func(x, y bool) int { // CMP(x, y) on booleans: false < true
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	}
	i, j := 0, 0
	for {
		for i < len(a) && !valid(a[i]) {
			i++
		}
		for j < len(b) && !valid(b[j]) {
			j++
		}
		ca, cb := at(a, i), at(b, j)
		if ca == '~' || cb == '~' {
			if r := cmp(ca != '~', cb != '~'); r != 0 {
				return r
			}
			i, j = i+1, j+1
			continue
		}
		if ca == 0 || cb == 0 {
			return cmp(ca != 0, cb != 0)
		}
		for _, sep := range []byte{'-', '^', '.'} {
			ca, cb = at(a, i), at(b, j)
			if ca == sep || cb == sep {
				if r := cmp(ca != sep, cb != sep); r != 0 {
					return r
				}
				i, j = i+1, j+1
			}
		}
		ca, cb = at(a, i), at(b, j)
		if isDigit(ca) || isDigit(cb) {
			for i < len(a) && a[i] == '0' {
				i++
			}
			for j < len(b) && b[j] == '0' {
				j++
			}
			ea, eb := i, j
			for ea < len(a) && isDigit(a[ea]) {
				ea++
			}
			for eb < len(b) && isDigit(b[eb]) {
				eb++
			}
			if la, lb := ea-i, eb-j; la != lb {
				return cmp(la > lb, lb > la)
			}
			if r := compareStrings(a[i:ea], b[j:eb]); r != 0 {
				return r
			}
			i, j = ea, eb
			continue
		}
		ea, eb := i, j
		for ea < len(a) && isAlpha(a[ea]) {
			ea++
		}
		for eb < len(b) && isAlpha(b[eb]) {
			eb++
		}
		if r := compareStrings(a[i:ea], b[j:eb]); r != 0 {
			return r
		}
		if ea == i && eb == j { // neither moved: a separator we already handled; step on
			i, j = i+1, j+1
			continue
		}
		i, j = ea, eb
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
