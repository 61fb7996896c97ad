package main

import (
	"bytes"
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

// bootDebian boots the image (osbuild run, QEMU's user network so that 10.0.2.2 is the host) and reads
// the serial console as it comes until every pattern has matched in order, through any reboots of the
// guest; it returns the console. When systemd-boot stops at its menu (seen on a loaded host, with
// "timeout 0": the menu waits for a key), it presses Enter, as a person at the console would: the
// highlighted entry is the one systemd-boot would have booted, and its try is counted only then.
func bootDebian(t *testing.T, raw string, timeout time.Duration, expect ...string) string {
	t.Helper()
	res := make([]*regexp.Regexp, len(expect))
	for i, e := range expect {
		res[i] = regexp.MustCompile(e)
	}
	cmd := exec.Command(osbuildBin, "run", raw, "--memory", debianMemory)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var console, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &console, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(os.Interrupt) // osbuild run stops QEMU
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	menu := regexp.MustCompile(`debian [0-9.]+ \([AB]\)`)
	pos, matched, menuSeen := 0, 0, 0
	var menuAt time.Time
	deadline := time.After(timeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	exited := false
	for {
		select {
		case <-done:
			exited = true
		case <-deadline:
			stop()
			t.Fatalf("boot %s: no %q after %s (matched %d of %d)\nconsole:\n%s\n%s", raw, expect[matched], timeout, matched, len(expect),
				tail(console.String(), 6000), stderr.String())
		case <-tick.C:
		}
		out := console.String()
		for matched < len(res) {
			loc := res[matched].FindStringIndex(out[pos:])
			if loc == nil {
				break
			}
			pos += loc[1]
			matched++
		}
		if matched == len(res) {
			if !exited {
				stop()
			}
			t.Logf("boot %s: matched %d patterns after %s", filepath.Base(raw), len(expect), time.Since(start).Round(time.Second))
			return out
		}
		if exited {
			t.Fatalf("boot %s: QEMU exited before %q (matched %d of %d)\nconsole:\n%s\n%s", raw, expect[matched], matched, len(expect),
				tail(out, 6000), stderr.String())
		}
		if loc := menu.FindStringIndex(out[menuSeen:]); loc != nil {
			if menuAt.IsZero() {
				menuAt = time.Now()
			} else if time.Since(menuAt) > 3*time.Second {
				t.Logf("boot %s: systemd-boot stopped at its menu after %s: pressing Enter", filepath.Base(raw), time.Since(start).Round(time.Second))
				stdin.Write([]byte("\r"))
				menuSeen += loc[1]
				menuAt = time.Time{}
			}
		}
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
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

	first := bootDebian(t, raw, 15*time.Minute,
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
	second := bootDebian(t, raw, 15*time.Minute,
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
	console := bootDebian(t, raw, 30*time.Minute,
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
	console += bootDebian(t, raw, 40*time.Minute,
		debianUp("2.0.0", "b"),
		`osbuild-status: boot number 3 on this data partition`,
		`osbuild-update: 3\.0\.0 is staged: rebooting into it`,
		`osbuild-health: broken: FAILED`,
		`osbuild-health: marked this boot's entry bad; rebooting into the other slot`,
		debianUp("2.0.0", "b"),
		`osbuild-update: no update: 3\.0\.0 failed its boot tries on this machine: not installing it again`,
		debianRunning("2.0.0", "b"),
		`osbuild-status: boot entry: clean`, // osbuild-b.conf, marked good before: no longer counted
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
  *"update check"*)
    # The agent's refusal of a release that already failed here.
    [ -n "$FAKE_FAILED" ] && { echo "osbuild: update refused: $FAKE_FAILED failed its boot tries on this machine: not installing it again (publish a newer release, or pass --retry-failed)" >&2; exit 1; }
    echo "update available: debian 1.0.0 → 2.0.0 (sha256:abc)";;
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
		{"immediate", "3", "09:05", "2.0.0", "no update: 2.0.0 failed its boot tries on this machine: not installing it again"},
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
