package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// osbuildBin is the CLI built once for the tests in this package: they run it as a user would.
var osbuildBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "osbuild-cli-test-")
	if err != nil {
		panic(err)
	}
	osbuildBin = filepath.Join(dir, "osbuild")
	build := exec.Command("go", "build", "-o", osbuildBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building osbuild: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run executes the CLI in dir with extra environment; it returns stdout, stderr and the exit code.
func run(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(osbuildBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run osbuild %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}
