package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"osbuild.dev/osbuild/internal/registrytest"
)

// The Debian example (issue "A real distribution: Debian 12 with systemd, auto-updates and a health
// gate"): examples/debian built from debootstrap, booted to multi-user.target under QEMU, then updated
// over the air by its own timer, and rolled back by systemd's boot assessment when a release is unhealthy.

const debianMemory = "1G"

var debianImagesOnce struct {
	once sync.Once
	dir  string
	err  error
}

// debianImages returns examples/debian with its OCI layouts and example key, running mkimages.sh
// (debootstrap, cached under ~/.cache/osbuild-examples/debian) when they are missing.
func debianImages(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds examples/debian from debootstrap and boots it with systemd")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: install it (.ci/setup)", tool)
		}
	}
	debianImagesOnce.once.Do(func() {
		dir, _ := filepath.Abs("../../examples/debian")
		debianImagesOnce.dir = dir
		ready := true
		for _, p := range []string{"images/debian/index.json", "images/web/index.json", "keys/update.pub", "keys/update.key"} {
			if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
				ready = false
			}
		}
		if ready {
			return
		}
		for _, tool := range []string{"debootstrap", "dpkg-deb", "apt-get"} {
			if _, err := exec.LookPath(tool); err != nil {
				debianImagesOnce.err = fmt.Errorf("%s is needed to make examples/debian's images: install it (.ci/setup)", tool)
				return
			}
		}
		if os.Geteuid() != 0 {
			debianImagesOnce.err = fmt.Errorf("examples/debian/mkimages.sh runs debootstrap, which needs root")
			return
		}
		cmd := exec.Command(filepath.Join(dir, "mkimages.sh"))
		cmd.Env = append(os.Environ(), "OSBUILD="+osbuildBin, "OSBUILD_PASSWORD="+debianKeyPassword)
		if out, err := cmd.CombinedOutput(); err != nil {
			debianImagesOnce.err = fmt.Errorf("examples/debian/mkimages.sh: %v\n%s", err, tail(string(out), 4000))
		}
	})
	if debianImagesOnce.err != nil {
		t.Fatal(debianImagesOnce.err)
	}
	return debianImagesOnce.dir
}

// The example key's password (mkimages.sh's default).
const debianKeyPassword = "osbuild-example"

func buildDebian(t *testing.T, variant, out string) {
	t.Helper()
	start := time.Now()
	_, stderr, code := run(t, ".", []string{minimalEpoch}, "build", "-q", "--cache", filepath.Join(os.TempDir(), "osbuild-test-cache"), variant, "-o", out)
	if code != 0 {
		t.Fatalf("osbuild build %s: exit %d: %s", variant, code, stderr)
	}
	t.Logf("built %s in %s", filepath.Base(variant), time.Since(start).Round(time.Second))
}

// bootDebian runs the image (with QEMU's user network, so that 10.0.2.2 is the host) until the console
// has matched every pattern in order, and returns the console.
func bootDebian(t *testing.T, raw, timeout string, expect ...string) string {
	t.Helper()
	return bootDebianRetry(t, raw, timeout, false, expect...)
}

// bootMenuStuck says whether a console ends at systemd-boot's menu, with nothing of the system after it.
func bootMenuStuck(console string) bool {
	i := regexp.MustCompile(`debian [0-9.]+ \([AB]\)`).FindStringIndex(console)
	return i != nil && !strings.Contains(console[i[1]:], "osbuild") && !strings.Contains(console[i[1]:], "systemd")
}

// bootDebianRetry is bootDebian that boots once more when systemd-boot stopped at its menu (only for
// boots that are not on trial: a boot that never started counts no try, but the test cannot tell).
func bootDebianRetry(t *testing.T, raw, timeout string, retryMenu bool, expect ...string) string {
	t.Helper()
	args := []string{"run", raw, "--memory", debianMemory, "--timeout", timeout}
	for _, e := range expect {
		args = append(args, "--expect", e)
	}
	start := time.Now()
	stdout, stderr, code := run(t, ".", nil, args...)
	if code != 0 && retryMenu && bootMenuStuck(stdout) {
		// Seen twice in about ten boots on a loaded host: systemd-boot (timeout 0) drew its menu and
		// waited for a key. Nothing of the system had started, so booting again is the same boot.
		t.Logf("boot %s: systemd-boot stopped at its menu; booting again", filepath.Base(raw))
		stdout, stderr, code = run(t, ".", nil, args...)
	}
	if code != 0 {
		t.Fatalf("boot %s: exit %d, wanted %q\nconsole:\n%s\n%s", raw, code, expect, tail(stdout, 6000), stderr)
	}
	t.Logf("boot %s: matched %d patterns after %s; %s", filepath.Base(raw), len(expect), time.Since(start).Round(time.Second),
		strings.TrimSpace(tail(stderr, 200)))
	return stdout
}

// consoleValues returns every value of "osbuild-status: KEY: VALUE" on a console, in order.
func consoleValues(console, key string) []string {
	re := regexp.MustCompile(`osbuild-status: ` + regexp.QuoteMeta(key) + `: (\S+)`)
	var vs []string
	for _, m := range re.FindAllStringSubmatch(console, -1) {
		vs = append(vs, m[1])
	}
	return vs
}

func sameValues(t *testing.T, what string, vs []string, n int) {
	t.Helper()
	if len(vs) < n {
		t.Fatalf("%s: want %d values on the console, got %q", what, n, vs)
	}
	for _, v := range vs {
		if v != vs[0] || v == "" {
			t.Fatalf("%s changed between boots: %q", what, vs)
		}
	}
}

// logStartup logs systemd's "Startup finished in ..." line of a console.
func logStartup(t *testing.T, what, console string) {
	if m := regexp.MustCompile(`osbuild-status: (Startup finished[^\r\n]*)`).FindStringSubmatch(console); m != nil {
		t.Logf("%s: %s", what, m[1])
	}
}

// Patterns of osbuild-status.service: "up" once multi-user.target is reached, "system running" once
// systemd has finished booting with no unit failed.
func debianUp(version, slot string) string {
	return `osbuild-status: debian ` + regexp.QuoteMeta(version) + ` slot ` + slot + `: up`
}

func debianRunning(version, slot string) string {
	return `osbuild-status: debian ` + regexp.QuoteMeta(version) + ` slot ` + slot + `: system running`
}

const (
	debianRootLine = `osbuild-status: root: /dev/(mapper/root|dm-0) +squashfs +ro[,\s]`
	debianVarLine  = `osbuild-status: var: /dev/vda6 ext4 rw\S* label=data`
)

// TestDebianBoots is check 1: the example as committed boots to multi-user.target with nothing failed,
// its root is the squashfs on the dm-verity device, /var the data partition; the health checks pass;
// the machine-id and SSH host keys made on the first boot are still there on the second.
func TestDebianBoots(t *testing.T) {
	ex := debianImages(t)
	out := t.TempDir()
	buildDebian(t, filepath.Join(ex, "variant.yaml"), out)
	raw := filepath.Join(out, "debian-1.0.0.raw")
	for _, f := range []string{"raw", "root.squashfs", "verity", "vmlinuz", "initrd", "json"} {
		st, err := os.Stat(filepath.Join(out, "debian-1.0.0."+f))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("debian-1.0.0.%s: %d bytes", f, st.Size())
	}

	first := bootDebianRetry(t, raw, "600s", true,
		debianUp("1.0.0", "a"),
		debianRootLine,
		debianVarLine,
		`osbuild-status: machine-id: [0-9a-f]{32} first-boot: yes`,
		`osbuild-status: ssh host key: SHA256:`,
		`osbuild-status: boot number 1 on this data partition`,
		debianRunning("1.0.0", "a"),
		`osbuild-status: boot entry: (clean|none)`, // slot A as built is not on trial
		`osbuild-status: Startup finished`,
		`osbuild-status: done`,
	)
	// The health gate ran before the system counted as running (its order with the lines above varies).
	for _, re := range []string{`osbuild-health: web: ok`, `osbuild-health: sshd: ok`,
		`osbuild-health: root: read \d+ MiB of /dev/\S+ through dm-verity`, `osbuild-health: all health checks passed`} {
		if !regexp.MustCompile(re).MatchString(first) {
			t.Errorf("first boot: no %q on the console", re)
		}
	}
	logStartup(t, "first boot", first)
	second := bootDebianRetry(t, raw, "600s", true,
		debianUp("1.0.0", "a"),
		`osbuild-status: machine-id: [0-9a-f]{32} first-boot: no`,
		`osbuild-status: boot number 2 on this data partition`,
		debianRunning("1.0.0", "a"),
		`osbuild-status: done`,
	)
	logStartup(t, "second boot", second)
	both := first + second
	sameValues(t, "machine-id", consoleValues(both, "machine-id"), 2)
	sameValues(t, "ssh host key", consoleValues(both, "ssh host key"), 2)
	for _, bad := range []string{"osbuild-status: failed unit", "FAILED"} {
		if strings.Contains(both, bad) {
			t.Errorf("console shows %q", bad)
		}
	}
}

// writeDebianVariant writes examples/debian's variant with absolute paths, another version, the test
// registry (as the guest sees the host), a reboot window around now, a short update timer and extra
// health checks.
func writeDebianVariant(t *testing.T, dir, ex, version, port, pub, window, extraHealth string) string {
	t.Helper()
	v := fmt.Sprintf(`name: debian
version: %[1]s
arch: amd64
layers:
  - image: oci:%[2]s/images/debian:v1
  - image: oci:%[2]s/images/web:v1
  - dir: %[2]s/overlay
files:
  - path: /etc/osbuild/update.env
    content: "OSBUILD_UPDATE_FLAGS=--insecure-registry 10.0.2.2:%[3]s\n"
  - path: /etc/systemd/system/osbuild-update.timer.d/test.conf
    content: "[Timer]\nOnBootSec=\nOnBootSec=20s\nRandomizedDelaySec=0\n"
boot:
  cmdline: quiet
disk:
  size: 2GiB
  esp: 128MiB
  slot: 512MiB
update:
  repository: 10.0.2.2:%[3]s/debian
  channel: stable
  public_key: %[4]s
  reboot: %[5]s
health:
  - name: web
    command: /opt/web/bin/busybox wget -q -O - http://127.0.0.1:8080/healthz
    timeout: 30s
%[6]s`, version, ex, port, pub, window, extraHealth)
	p := filepath.Join(dir, "debian-"+version+".yaml")
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// rebootWindow is a window "DAY HH:MM-HH:MM" that holds now (UTC, the guest's clock) for the next 90
// minutes, named by the day it starts on.
func rebootWindow(now time.Time) string {
	from, to := now.Add(-5*time.Minute), now.Add(90*time.Minute)
	return fmt.Sprintf(`window "%s %s-%s"`, from.Format("Mon"), from.Format("15:04"), to.Format("15:04"))
}

type updateStatus struct {
	Running struct{ Slot, Version, State string } `json:"running"`
	Other   struct{ Slot, Version, State string } `json:"other"`
	Staged  string                                `json:"staged"`
	Failed  string                                `json:"failed"`
}

func diskStatus(t *testing.T, raw string) updateStatus {
	t.Helper()
	stdout, stderr, code := run(t, ".", nil, "update", "status", "--disk", raw, "--json")
	if code != 0 {
		t.Fatalf("update status --disk: %s", stderr)
	}
	var st updateStatus
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("update status --json: %v\n%s", err, stdout)
	}
	return st
}

// TestDebianUpdate is checks 2–4: the device's own timer finds v2 on the host's registry, applies it,
// reboots in its window and comes up as v2, marked good by systemd-bless-boot after the health gate; a
// v3 whose health check fails is marked bad by the gate and the machine comes back as v2 by itself, and
// does not try v3 again; the data on /var, the machine-id and the SSH host keys survive all of it.
func TestDebianUpdate(t *testing.T) {
	ex := debianImages(t)
	if _, err := exec.LookPath(registrytest.Binary); err != nil {
		t.Fatalf("%s is needed: install it (.ci/setup)", registrytest.Binary)
	}
	dir := t.TempDir()
	reg := registrytest.Start(t)
	port := reg.Host[strings.LastIndex(reg.Host, ":")+1:]
	pass := []string{"OSBUILD_PASSWORD=debian-test"}
	if _, stderr, code := run(t, dir, pass, "key", "generate", "--output-key-prefix", "release"); code != 0 {
		t.Fatalf("key generate: %s", stderr)
	}
	key, pub := filepath.Join(dir, "release.key"), filepath.Join(dir, "release.pub")
	window := rebootWindow(time.Now().UTC())
	out := map[string]string{}
	for _, r := range []struct{ version, health string }{
		{"1.0.0", ""},
		{"2.0.0", ""},
		{"3.0.0", "  - name: broken\n    command: \"echo this release is broken >&2; false\"\n    timeout: 10s\n"},
	} {
		out[r.version] = filepath.Join(dir, "out-"+r.version)
		buildDebian(t, writeDebianVariant(t, dir, ex, r.version, port, pub, window, r.health), out[r.version])
	}
	publish := func(version string) {
		t.Helper()
		start := time.Now()
		if _, stderr, code := run(t, dir, pass, "publish", out[version], "--to", reg.Host+"/debian", "--channel", "stable", "--key", key); code != 0 {
			t.Fatalf("publish %s: %s", version, stderr)
		}
		t.Logf("published %s in %s", version, time.Since(start).Round(time.Second))
	}
	raw := filepath.Join(dir, "device.raw")
	if o, err := exec.Command("cp", "--sparse=always", filepath.Join(out["1.0.0"], "debian-1.0.0.raw"), raw).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, o)
	}

	// The timer fires 20 s after boot, and the update waits for multi-user.target: v1's "system running"
	// never comes (the queued update delays the end of startup, then reboots).
	publish("2.0.0")
	console := bootDebian(t, raw, "1800s",
		debianUp("1.0.0", "a"),
		`osbuild-status: boot number 1 on this data partition`,
		`osbuild-update: 2\.0\.0 is staged: rebooting into it \(window`,
		debianUp("2.0.0", "b"),
		debianRootLine,
		debianVarLine,
		`osbuild-status: boot number 2 on this data partition`,
		debianRunning("2.0.0", "b"),
		`osbuild-status: boot entry: good`,
		`osbuild-status: done`,
	)
	v2 := console[strings.Index(console, "debian 2.0.0 slot b: up"):]
	if !strings.Contains(v2, "osbuild-health: all health checks passed") {
		t.Errorf("v2's trial boot was marked good without the health gate passing")
	}
	if st := diskStatus(t, raw); st.Running.Slot != "b" || st.Running.Version != "2.0.0" || st.Running.State != "good" {
		t.Fatalf("after the update: %+v, want slot b 2.0.0 good", st)
	}

	publish("3.0.0")
	console += bootDebian(t, raw, "2400s",
		debianUp("2.0.0", "b"),
		`osbuild-status: boot number 3 on this data partition`,
		`osbuild-update: 3\.0\.0 is staged: rebooting into it`,
		`osbuild-health: broken: FAILED`,
		`osbuild-health: marked this boot's entry bad; rebooting into the other slot`,
		debianUp("2.0.0", "b"),
		`osbuild-update: 3\.0\.0 failed its boot tries on this machine: not installing it again`,
		debianRunning("2.0.0", "b"),
		`osbuild-status: boot entry: good`,
		`osbuild-status: done`,
	)
	st := diskStatus(t, raw)
	if st.Running.Slot != "b" || st.Running.Version != "2.0.0" || st.Failed != "3.0.0" {
		t.Fatalf("after the failed update: %+v, want slot b 2.0.0 running and 3.0.0 failed", st)
	}
	// Every boot saw the same machine and its data: v1, v2, v3 (which counted too), v2 again.
	sameValues(t, "machine-id", consoleValues(console, "machine-id"), 4)
	sameValues(t, "ssh host key", consoleValues(console, "ssh host key"), 4)
	if !regexp.MustCompile(`boot number [45] on this data partition`).MatchString(console) {
		t.Errorf("the data partition's boot counter did not survive the rollback")
	}
}

// TestDebianRebootPolicy runs examples/debian's update script (osbuild-update.service) with stand-ins for
// osbuild, systemctl, systemd-run and date: which update.reboot policies reboot now, which schedule the
// window's next start, and that a version that already failed here is not applied again.
func TestDebianRebootPolicy(t *testing.T) {
	script, _ := filepath.Abs("../../examples/debian/overlay/usr/lib/osbuild/update")
	bin := t.TempDir()
	stubs := map[string]string{
		"osbuild": `case "$*" in
  *"update check"*) echo "update available: debian 1.0.0 → 2.0.0 (sha256:abc)";;
  *"update apply"*) echo "applied 2.0.0 to slot B (osbuild-b+3.conf): it boots next";;
  *"update status --json"*) printf '{\n  "staged": "2.0.0",\n  "failed": "%s"\n}\n' "$FAKE_FAILED";;
esac`,
		"systemctl":   `echo "systemctl $*"; [ "$1" = is-active ] && exit 3; exit 0`,
		"systemd-run": `echo "systemd-run $*"`,
		"date":        `case "$1" in +%H:%M) echo "$FAKE_HM";; +%u) echo "$FAKE_DOW";; *) exec /bin/date "$@";; esac`,
	}
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		policy, dow, hm, failed string
		want                    string
	}{
		{`window \"Sun 02:00-04:00\"`, "7", "03:00", "", "rebooting into it (window"},
		{`window \"Sun 02:00-04:00\"`, "7", "04:00", "", "--on-calendar=Sun 02:00 systemctl reboot"},
		{`window \"Sun 02:00-04:00\"`, "1", "03:00", "", "--on-calendar=Sun 02:00 systemctl reboot"},
		{`window \"Sat 23:30-01:00\"`, "7", "00:30", "", "rebooting into it (window"},
		{`window \"Sat 23:30-01:00\"`, "7", "23:45", "", "--on-calendar=Sat 23:30"},
		{`window \"Mon..Fri 09:00-10:00\"`, "3", "09:05", "", "rebooting into it (window"},
		{`window \"Sat,Sun 09:00-10:00\"`, "3", "09:05", "", "--on-calendar=Sat,Sun 09:00"},
		{`window \"* 09:00-10:00\"`, "3", "08:59", "", "--on-calendar=09:00"},
		{"never", "3", "09:05", "", "update.reboot is never"},
		{"", "3", "09:05", "", "(immediate)"},
		{"immediate", "3", "09:05", "2.0.0", "2.0.0 failed its boot tries on this machine: not installing it again"},
	} {
		settings := filepath.Join(t.TempDir(), "variant.json")
		os.WriteFile(settings, []byte(fmt.Sprintf("{\n  \"update\": {\n    \"repository\": \"r\",\n    \"reboot\": \"%s\"\n  }\n}\n", c.policy)), 0o644)
		cmd := exec.Command("sh", script)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "OSBUILD_SETTINGS="+settings,
			"FAKE_DOW="+c.dow, "FAKE_HM="+c.hm, "FAKE_FAILED="+c.failed)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("reboot %q at day %s %s: %v\n%s", c.policy, c.dow, c.hm, err, out)
			continue
		}
		last := strings.TrimSpace(string(out))
		if !strings.Contains(last, c.want) {
			t.Errorf("reboot %q at day %s %s: want %q in\n%s", c.policy, c.dow, c.hm, c.want, out)
		}
		rebooted := regexp.MustCompile(`(?m)^systemctl reboot$`).MatchString(last)
		wantReboot := strings.Contains(c.want, "rebooting into it") || c.want == "(immediate)"
		if rebooted != wantReboot {
			t.Errorf("reboot %q at day %s %s: rebooted %v, want %v\n%s", c.policy, c.dow, c.hm, rebooted, wantReboot, out)
		}
	}
}
