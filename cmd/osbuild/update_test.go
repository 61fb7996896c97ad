package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"osbuild.dev/osbuild/internal/tooltest"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"osbuild.dev/osbuild/builder"
	"osbuild.dev/osbuild/internal/registrytest"
	"osbuild.dev/osbuild/partitions"
	"osbuild.dev/osbuild/partitions/bootentry"
	upd "osbuild.dev/osbuild/update"
	"osbuild.dev/osbuild/verity"
	"osbuild.dev/osbuild/vm"
)

const testPassword = "OSBUILD_PASSWORD=update-test"

// cosignBin finds the cosign CLI the interop checks run: $OSBUILD_COSIGN, PATH, or where .ci/cosign.sh
// installs it. A missing cosign fails the test: run .ci/cosign.sh.
func cosignBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OSBUILD_COSIGN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "cosign")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("cosign is needed for the signature interop checks: run .ci/cosign.sh (builds it into $(go env GOPATH)/bin)")
	return ""
}

// updateFixture is three releases of a minimal variant with an update: section, their disks and keys.
type updateFixture struct {
	dir      string
	reg      *registrytest.Registry
	repo     string // 127.0.0.1:PORT/minimal
	key, pub string // cosign.key / cosign.pub
	otherPub string
	out      map[string]string            // version → build folder
	man      map[string]*builder.Manifest // version → build manifest
	digest   map[string]string            // version → release digest
}

// writeUpdateVariant writes a variant of examples/minimal whose init is update/testdata/init, with
// an update: section pointing at the host's registry as QEMU's user network shows it (10.0.2.2).
func writeUpdateVariant(t *testing.T, f *updateFixture, version, cmdline string) string {
	ex := minimalImages(t)
	initPath, _ := filepath.Abs("../../update/testdata/init")
	port := f.repo[strings.Index(f.repo, ":")+1 : strings.Index(f.repo, "/")]
	v := fmt.Sprintf(`name: minimal
version: %s
arch: amd64
layers:
  - image: oci:%s/images/base:v1
  - image: oci:%s/images/kernel:v1
  - image: oci:%s/images/systemd-boot:v1
files:
  - path: /sbin/init
    source: %s
    mode: 0755
boot:
  cmdline: %s
disk:
  esp: 64MiB
  slot: 256MiB
update:
  repository: 10.0.2.2:%s/minimal
  channel: stable
  public_key: %s
health:
  - name: release file
    command: test -s /etc/osbuild/release
`, version, ex, ex, ex, initPath, cmdline, port, f.pub)
	p := filepath.Join(f.dir, "variant-"+version+".yaml")
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newUpdateFixture(t *testing.T) *updateFixture {
	if testing.Short() {
		t.Skip("builds three releases, runs a registry, cosign, skopeo and QEMU")
	}
	for _, tool := range []string{"skopeo", registrytest.Binary, "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: install it (.ci/setup)", tool)
		}
	}
	f := &updateFixture{dir: t.TempDir(), out: map[string]string{}, man: map[string]*builder.Manifest{}, digest: map[string]string{}}
	f.reg = registrytest.Start(t)
	f.repo = f.reg.Host + "/minimal"
	for _, prefix := range []string{"cosign", "other"} {
		if _, stderr, code := run(t, f.dir, []string{testPassword}, "key", "generate", "--output-key-prefix", prefix); code != 0 {
			t.Fatalf("key generate: %s", stderr)
		}
	}
	f.key, f.pub, f.otherPub = filepath.Join(f.dir, "cosign.key"), filepath.Join(f.dir, "cosign.pub"), filepath.Join(f.dir, "other.pub")
	for _, r := range []struct{ version, cmdline string }{
		{"1.0.0", "osbuild.test=update"}, {"2.0.0", "osbuild.test=status"}, {"3.0.0", "osbuild.test=broken"},
	} {
		out := filepath.Join(f.dir, "out-"+r.version)
		_, stderr, code := run(t, ".", []string{minimalEpoch}, "build", "-q", "--cache", filepath.Join(os.TempDir(), "osbuild-test-cache"),
			writeUpdateVariant(t, f, r.version, r.cmdline), "-o", out)
		if code != 0 {
			t.Fatalf("build %s: %s", r.version, stderr)
		}
		m, err := upd.ReadManifest(filepath.Join(out, "minimal-"+r.version+".json"))
		if err != nil {
			t.Fatal(err)
		}
		f.out[r.version], f.man[r.version] = out, m
	}
	// v2 goes to the stable channel the devices follow; the broken v3 to testing (tests apply it by tag).
	for v, ch := range map[string]string{"2.0.0": "stable", "3.0.0": "testing"} {
		stdout, stderr, code := run(t, f.dir, []string{testPassword}, "publish", f.out[v], "--to", f.repo, "--channel", ch, "--key", f.key)
		if code != 0 {
			t.Fatalf("publish %s: %s", v, stderr)
		}
		f.digest[v] = strings.TrimSpace(stdout[strings.Index(stdout, "@")+1:])
	}
	return f
}

func (f *updateFixture) raw(version string) string {
	return filepath.Join(f.out[version], "minimal-"+version+".raw")
}

// bootable checks a disk offline the way the firmware will see it: the entry systemd-boot picks (same
// ordering rules), its kernel and initrd on the ESP, and its slot's root against the entry's root hash
// (every block, as dm-verity would read them). It returns the version that boots.
func bootable(t *testing.T, disk string, man map[string]*builder.Manifest) string {
	t.Helper()
	// Writable, because a kill in the middle of an ESP write can leave the second FAT behind the first:
	// the firmware reads only the first, and opening for writing makes the second a copy of it (see
	// partitions.OpenESP), so what is read below is what the firmware reads. Nothing else is written.
	d, err := partitions.Open(disk, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	esp, err := d.ESP()
	if err != nil {
		t.Fatalf("ESP: %v", err)
	}
	es, err := esp.Entries()
	if err != nil {
		t.Fatalf("entries: %v", err)
	}
	order := upd.BootOrder(es)
	if len(order) == 0 {
		t.Fatal("no loader entry: the disk does not boot")
	}
	e := order[0]
	if e.Counting && e.TriesLeft == 0 {
		t.Fatalf("only failed entries left: %s", e.FileName)
	}
	m := man[e.Version]
	if m == nil {
		t.Fatalf("entry %s boots unknown version %q", e.FileName, e.Version)
	}
	slot := upd.SlotOfEntry(e)
	for _, p := range []struct{ path, sum string }{{e.Linux, m.Kernel.SHA256}, {e.Initrd[0], m.Initrd.SHA256}} {
		data, err := esp.ReadFile(strings.TrimPrefix(p.path, "/"))
		if err != nil {
			t.Fatalf("entry %s: %s: %v", e.FileName, p.path, err)
		}
		if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != p.sum {
			t.Fatalf("entry %s: %s is not %s's", e.FileName, p.path, e.Version)
		}
	}
	// The firmware reads the ESP with its own FAT driver: it must be clean for fsck.fat too.
	p, _ := d.Partition(partitions.LabelESP)
	img := filepath.Join(t.TempDir(), "esp.img")
	out, _ := os.Create(img)
	io.Copy(out, io.NewSectionReader(d.File(), p.Start, p.Size))
	out.Close()
	// A kill in the middle of writing the other slot's kernel may leave that file half-allocated: harmless,
	// no entry points at it. What the chosen entry reads must be clean.
	res, _ := exec.Command("fsck.fat", "-n", img).CombinedOutput()
	for _, line := range strings.Split(string(res), "\n") {
		if strings.HasPrefix(line, "/") && (line == e.Linux || line == e.Initrd[0] || strings.HasPrefix(line, "/loader/") || strings.HasPrefix(line, "/EFI/")) {
			t.Fatalf("entry %s: fsck.fat finds damage in what the firmware reads:\n%s", e.FileName, res)
		}
	}
	os.Remove(img)
	v, ok := bootentry.Param(e.Options, "dm-mod.create")
	if !ok {
		t.Fatalf("entry %s has no dm-mod.create", e.FileName)
	}
	if !strings.Contains(v, m.Verity.RootHash) {
		t.Fatalf("entry %s does not carry %s's root hash", e.FileName, e.Version)
	}
	rootR, _ := d.Reader("root-" + slot)
	verR, _ := d.Reader("verity-" + slot)
	rh, _ := hex.DecodeString(m.Verity.RootHash)
	if err := verity.Verify(rootR, verR, rh); err != nil {
		t.Fatalf("entry %s boots slot %s, which does not verify: %v", e.FileName, slot, err)
	}
	return e.Version
}

func bootVM(t *testing.T, disk string, network bool, timeout time.Duration, expect ...string) string {
	t.Helper()
	var console bytes.Buffer
	res, err := vm.Run(context.Background(), vm.Config{Image: disk, Network: network, Expect: expect, Timeout: timeout, Console: &console})
	if err != nil {
		t.Fatalf("boot %s: %v (matched %d of %q)\nconsole:\n%s", disk, err, res.Matched, expect, tail(console.String(), 6000))
	}
	t.Logf("boot %s: matched %d patterns in %s (%s)", filepath.Base(disk), len(expect), res.Duration.Round(time.Second), res.Accel)
	return console.String()
}

// TestUpdate is the update issue's checks: cosign interop, skopeo, refusals, an interrupted download,
// SIGKILL at random moments, then QEMU: an offline apply that boots, the device updating itself from the
// registry, and a broken release rolled back by boot counting.
func TestUpdate(t *testing.T) {
	f := newUpdateFixture(t)
	ref2 := f.repo + "@" + f.digest["2.0.0"]

	t.Run("cosign verifies our signature", func(t *testing.T) {
		cosign := cosignBin(t)
		verify := func(pub string) (string, error) {
			cmd := exec.Command(cosign, "verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-insecure-registry", ref2)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		if out, err := verify(f.pub); err != nil {
			t.Fatalf("cosign verify --key cosign.pub: %v\n%s", err, out)
		}
		if out, err := verify(f.otherPub); err == nil {
			t.Fatalf("cosign verify accepted another key:\n%s", out)
		}
		if _, stderr, code := run(t, f.dir, nil, "verify", ref2, "--key", f.otherPub); code == 0 || !strings.Contains(stderr, "no signature of the release verifies") {
			t.Fatalf("osbuild verify with another key: exit %d: %s", code, stderr)
		}
		if _, stderr, code := run(t, f.dir, nil, "verify", f.repo+":stable", "--key", f.pub); code != 0 {
			t.Fatalf("osbuild verify: %s", stderr)
		}
		// The other way round: cosign signs an unsigned release with our key file, and we accept it.
		cosigned := f.reg.Host + "/cosigned"
		stdout, stderr, code := run(t, f.dir, nil, "publish", f.out["2.0.0"], "--to", cosigned)
		if code != 0 {
			t.Fatalf("publish unsigned: %s", stderr)
		}
		sign := exec.Command(cosign, "sign", "--key", f.key, "--tlog-upload=false", "--allow-insecure-registry", "--yes", strings.TrimSpace(stdout))
		sign.Env = append(os.Environ(), "COSIGN_PASSWORD=update-test")
		if out, err := sign.CombinedOutput(); err != nil {
			t.Fatalf("cosign sign --key cosign.key (ours): %v\n%s", err, out)
		}
		if _, stderr, code := run(t, f.dir, nil, "verify", cosigned+":2.0.0", "--key", f.pub); code != 0 {
			t.Fatalf("osbuild verify of cosign's signature: %s", stderr)
		}
	})

	layout := filepath.Join(f.dir, "layout-v3")
	t.Run("skopeo sees the artifact and copies it", func(t *testing.T) {
		raw := tooltest.Run(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+f.repo+":3.0.0")
		var m upd.Manifest
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatal(err)
		}
		if m.ArtifactType != upd.ArtifactType || m.Config.MediaType != upd.ConfigMediaType || len(m.Layers) != 4 {
			t.Fatalf("skopeo inspect --raw: %s", raw)
		}
		want := []string{upd.RootMediaType, upd.VerityMediaType, upd.KernelMediaType, upd.InitrdMediaType}
		for i, l := range m.Layers {
			if l.MediaType != want[i] {
				t.Errorf("layer %d: %s, want %s", i, l.MediaType, want[i])
			}
		}
		sigTag := upd.SignatureTag(f.digest["3.0.0"])
		tooltest.Run(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+f.repo+":3.0.0", "oci:"+layout+":3.0.0")
		tooltest.Run(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+f.repo+":"+sigTag, "oci:"+layout+":"+sigTag)
		if _, stderr, code := run(t, f.dir, nil, "verify", "oci:"+layout, "--key", f.pub); code != 0 {
			t.Fatalf("osbuild verify oci:DIR: %s", stderr)
		}
	})

	t.Run("refusals write nothing", func(t *testing.T) {
		disk := copyImage(t, f.raw("1.0.0"))
		before := fileSum(t, disk)
		// A release of another variant and one for another arch: v2's build, relabelled before publishing.
		relabel := func(field, value string) string {
			dir := filepath.Join(t.TempDir(), field)
			os.MkdirAll(dir, 0o755)
			for _, n := range []string{"root.squashfs", "verity", "vmlinuz", "initrd"} {
				os.Link(filepath.Join(f.out["2.0.0"], "minimal-2.0.0."+n), filepath.Join(dir, "minimal-2.0.0."+n))
			}
			m := *f.man["2.0.0"]
			if field == "name" {
				m.Name = value
			} else {
				m.Arch = value
			}
			data, _ := json.Marshal(m)
			os.WriteFile(filepath.Join(dir, "minimal-2.0.0.json"), data, 0o644)
			if _, stderr, code := run(t, f.dir, []string{testPassword}, "publish", dir, "--to", f.reg.Host+"/"+field, "--key", f.key); code != 0 {
				t.Fatalf("publish: %s", stderr)
			}
			return f.reg.Host + "/" + field + ":2.0.0"
		}
		if _, stderr, code := run(t, f.dir, nil, "publish", f.out["2.0.0"], "--to", f.reg.Host+"/unsigned"); code != 0 {
			t.Fatalf("publish unsigned: %s", stderr)
		}
		for _, c := range []struct {
			name string
			args []string
			want string
		}{
			{"wrong key", []string{"--from", ref2, "--key", f.otherPub}, "no signature of the release verifies"},
			{"unsigned", []string{"--from", f.reg.Host + "/unsigned:2.0.0", "--key", f.pub}, "not signed"},
			{"other variant", []string{"--from", relabel("name", "other"), "--key", f.pub}, `variant "other"`},
			{"other arch", []string{"--from", relabel("arch", "arm64"), "--key", f.pub}, "is for arm64"},
		} {
			args := append([]string{"update", "apply", "--disk", disk}, c.args...)
			_, stderr, code := run(t, f.dir, nil, args...)
			if code == 0 || !strings.Contains(stderr, c.want) {
				t.Errorf("%s: exit %d, want an error with %q: %s", c.name, code, c.want, stderr)
			}
		}
		if after := fileSum(t, disk); after != before {
			t.Fatal("a refused update changed the disk")
		}
	})

	// The kill test's disk becomes the offline-apply disk that boots v2 below.
	offline := copyImage(t, f.raw("1.0.0"))
	t.Run("SIGKILL at random moments leaves a bootable disk", func(t *testing.T) {
		state := t.TempDir()
		// One full apply on a scratch copy times the window the kills fall into.
		scratch := copyImage(t, f.raw("1.0.0"))
		start := time.Now()
		if _, stderr, code := run(t, f.dir, nil, "update", "apply", "--disk", scratch, "--from", ref2, "--key", f.pub, "--state-dir", t.TempDir()); code != 0 {
			t.Fatalf("apply: %s", stderr)
		}
		window := time.Since(start)
		os.Remove(scratch)
		rng := rand.New(rand.NewSource(time.Now().UnixNano()))
		var versions []string
		for i := 0; i < 20; i++ {
			cmd := exec.Command(osbuildBin, "update", "apply", "--disk", offline, "--from", ref2, "--key", f.pub, "--state-dir", state)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Up to a little past a whole apply: kills also land in the ESP writes at the end.
			delay := time.Duration(rng.Int63n(int64(window) * 6 / 5))
			time.Sleep(delay)
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			v := bootable(t, offline, f.man)
			versions = append(versions, fmt.Sprintf("%s@%s", v, delay.Round(time.Millisecond)))
			if v == "2.0.0" && i < 19 {
				// The apply finished before the kill: start over from v1, so that every kill interrupts one.
				if out, err := exec.Command("cp", "--sparse=always", f.raw("1.0.0"), offline).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v %s", err, out)
				}
				os.RemoveAll(state)
			}
		}
		t.Logf("apply takes %s; after each kill the disk boots: %s", window.Round(time.Millisecond), strings.Join(versions, " "))
		if v := bootable(t, offline, f.man); v != "2.0.0" {
			if _, stderr, code := run(t, f.dir, nil, "update", "apply", "--disk", offline, "--from", ref2, "--key", f.pub, "--state-dir", state); code != 0 {
				t.Fatalf("apply after the kills: %s", stderr)
			}
		}
		if v := bootable(t, offline, f.man); v != "2.0.0" {
			t.Fatalf("after a complete apply the disk boots %s", v)
		}
		// The slot on trial is not a base for another update.
		_, stderr, code := run(t, f.dir, nil, "update", "apply", "--disk", offline, "--from", f.repo+":3.0.0", "--key", f.pub)
		if code == 0 || !strings.Contains(stderr, "still on trial") {
			t.Fatalf("apply over a slot on trial: exit %d: %s", code, stderr)
		}
	})

	t.Run("registry stopped mid-download then resumed", func(t *testing.T) {
		disk := copyImage(t, f.raw("1.0.0"))
		reg2 := registrytest.Start(t)
		if _, stderr, code := run(t, f.dir, []string{testPassword}, "publish", f.out["2.0.0"], "--to", reg2.Host+"/minimal", "--key", f.key); code != 0 {
			t.Fatalf("publish: %s", stderr)
		}
		key, err := upd.LoadPublicKey(f.pub)
		if err != nil {
			t.Fatal(err)
		}
		state := t.TempDir()
		apply := func(from string, progress func(string, int64, int64)) (*upd.Applied, error) {
			d, err := upd.OpenDevice(upd.DeviceOptions{Disk: disk, StateDir: state})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			return d.Apply(context.Background(), upd.ApplyOptions{From: from, Key: key, Progress: progress})
		}
		stopAt := int64(20 << 20)
		_, err = apply(reg2.Host+"/minimal:2.0.0", func(layer string, done, total int64) {
			if strings.HasPrefix(layer, "root") && done >= stopAt {
				reg2.Stop()
			}
		})
		if err == nil || !strings.Contains(err.Error(), "resume") {
			t.Fatalf("apply with the registry gone: %v", err)
		}
		t.Logf("interrupted: %v", err)
		if v := bootable(t, disk, f.man); v != "1.0.0" {
			t.Fatalf("after the interruption the disk boots %s", v)
		}
		res, err := apply(ref2, nil)
		if err != nil {
			t.Fatalf("resumed apply: %v", err)
		}
		if res.Resumed < stopAt-(16<<20) || res.Resumed == 0 {
			t.Fatalf("the second apply resumed at %d bytes, want about %d", res.Resumed, stopAt)
		}
		t.Logf("resumed at %d bytes, downloaded %d more", res.Resumed, res.Downloaded)
		if v := bootable(t, disk, f.man); v != "2.0.0" {
			t.Fatalf("after the resumed apply the disk boots %s", v)
		}
	})

	t.Run("offline apply boots v2 and marks it good", func(t *testing.T) {
		bootVM(t, offline, false, 3*time.Minute, `osbuild: booted 2\.0\.0 slot b`, `osbuild: marked good 2\.0\.0`, `osbuild: status: running: minimal 2\.0\.0, slot B \(marked good\)`)
		insp, _, _ := run(t, ".", nil, "inspect", offline)
		if !strings.Contains(insp, "osbuild-b.conf") {
			t.Fatalf("v2's entry is not marked good:\n%s", insp)
		}
		// rollback: v1 (good, older) boots next, and from then on.
		if out, stderr, code := run(t, f.dir, nil, "update", "rollback", "--disk", offline); code != 0 || !strings.Contains(out, "osbuild-a.conf boots next") {
			t.Fatalf("rollback: exit %d: %s%s", code, out, stderr)
		}
		if v := bootable(t, offline, f.man); v != "1.0.0" {
			t.Fatalf("after rollback the disk boots %s", v)
		}
	})

	t.Run("device updates itself then rolls back a broken release", func(t *testing.T) {
		disk := copyImage(t, f.raw("1.0.0"))
		bootVM(t, disk, true, 5*time.Minute,
			`osbuild: booted 1\.0\.0 slot a`, `update: minimal 2\.0\.0 .* slot B`, `osbuild: applied, rebooting`,
			`osbuild: booted 2\.0\.0 slot b`, `osbuild: history 1\.0\.0 2\.0\.0`, `osbuild: marked good 2\.0\.0`,
			`osbuild: status: running: minimal 2\.0\.0, slot B \(marked good\)`)
		// The same version again is refused.
		if _, stderr, code := run(t, f.dir, nil, "update", "apply", "--disk", disk, "--from", ref2, "--key", f.pub); code == 0 || !strings.Contains(stderr, "already running") {
			t.Fatalf("apply of the running version: exit %d: %s", code, stderr)
		}
		// The broken v3, from the air-gapped layout, offline.
		if _, stderr, code := run(t, f.dir, nil, "update", "apply", "--disk", disk, "--from", "oci:"+layout, "--key", f.pub); code != 0 {
			t.Fatalf("apply v3 from oci:DIR: %s", stderr)
		}
		st, stderr, _ := run(t, f.dir, nil, "update", "status", "--disk", disk)
		if !regexp.MustCompile(`staged:\s+3\.0\.0`).MatchString(st) {
			t.Errorf("status after staging v3:\n%s%s", st, stderr)
		}
		// Same hardware as the first run (the NIC included): OVMF keeps its boot options in the
		// variables file beside the image, and a device that moves drops the disk's option.
		bootVM(t, disk, true, 8*time.Minute,
			`osbuild: test: broken root 3\.0\.0`, `osbuild: test: broken root 3\.0\.0`, `osbuild: test: broken root 3\.0\.0`,
			`osbuild: booted 2\.0\.0 slot b`, `osbuild: history 1\.0\.0 2\.0\.0 2\.0\.0`,
			`osbuild: status: failed:\s+3\.0\.0`)
		insp, _, _ := run(t, ".", nil, "inspect", disk)
		if !regexp.MustCompile(`osbuild-a\+0-3\.conf\s+\[bad: 0 tries left`).MatchString(insp) {
			t.Fatalf("osbuild inspect does not show v3 at 0 tries left:\n%s", insp)
		}
		// The agent does not install the release that failed here again (that would loop: apply, fail, fall
		// back, apply...), and leaves the disk as it was; --retry-failed lets it.
		before := fileSum(t, disk)
		if _, stderr, code := run(t, f.dir, nil, "update", "apply", "--disk", disk, "--from", "oci:"+layout, "--key", f.pub); code == 0 ||
			!strings.Contains(stderr, "3.0.0 failed its boot tries on this machine: not installing it again") {
			t.Fatalf("apply of the failed v3 again: exit %d: %s", code, stderr)
		}
		if after := fileSum(t, disk); after != before {
			t.Fatal("the refused apply changed the disk")
		}
		if out, stderr, code := run(t, f.dir, nil, "update", "check", "--disk", disk, "--from", "oci:"+layout, "--key", f.pub, "--retry-failed"); code != 0 ||
			!strings.Contains(out, "→ 3.0.0") {
			t.Fatalf("check --retry-failed of v3: exit %d: %s%s", code, out, stderr)
		}
	})
}
