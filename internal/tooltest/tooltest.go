// Package tooltest runs the standard tools tests cross-check our outputs with (sgdisk, qemu-img,
// veritysetup, ...). A missing tool fails the test with the package to install: it never skips.
package tooltest

import (
	"os/exec"
	"strings"
	"testing"
)

// Need fails the test unless name is on the PATH; pkg names the Debian package that has it.
func Need(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is missing (apt-get install %s, or run with -short): %v", name, pkg, err)
	}
}

// Run runs a tool and returns its combined output; a non-zero exit fails the test with that output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
