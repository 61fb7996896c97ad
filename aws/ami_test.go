package aws

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAWS implements the five calls PushAMI makes (EBS StartSnapshot, PutSnapshotBlock, CompleteSnapshot;
// EC2 DescribeSnapshots, RegisterImage) the way the AWS API references describe them, and checks every
// request it gets. It keeps what was uploaded so that the test can rebuild the disk from it.
type fakeAWS struct {
	t        *testing.T
	volume   int64 // GiB the snapshot must be started with
	failPut  bool  // answer PutSnapshotBlock with a ValidationException
	mu       sync.Mutex
	started  int
	blocks   map[int32][]byte
	sums     map[int32][]byte
	complete bool
	describe int // DescribeSnapshots calls: the first answers pending
	register url.Values
	errs     []string
}

func (f *fakeAWS) fail(format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, a...))
}

var (
	putPath      = regexp.MustCompile(`^/snapshots/(snap-[0-9a-f]+)/blocks/([0-9]+)$`)
	completePath = regexp.MustCompile(`^/snapshots/completion/(snap-[0-9a-f]+)$`)
)

const snapID = "snap-0123456789abcdef0"

func (f *fakeAWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	service := "ec2"
	if strings.HasPrefix(r.URL.Path, "/snapshots") {
		service = "ebs"
	}
	// SigV4 with the test credentials, scoped to the region and the right service.
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=AKIDOSBUILDTEST/") ||
		!strings.Contains(auth, "/eu-test-1/"+service+"/aws4_request") {
		f.fail("%s %s: Authorization %q is not SigV4 for %s in eu-test-1", r.Method, r.URL.Path, auth, service)
	}
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/snapshots":
		var in struct {
			VolumeSize  int64
			ClientToken string
			Description string
		}
		if err := json.Unmarshal(body, &in); err != nil {
			f.fail("StartSnapshot body %q: %v", body, err)
		}
		if in.VolumeSize != f.volume || in.ClientToken == "" || in.Description == "" {
			f.fail("StartSnapshot %+v: want VolumeSize %d, a client token and a description", in, f.volume)
		}
		f.mu.Lock()
		f.started++
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"SnapshotId":%q,"BlockSize":%d,"Status":"pending","VolumeSize":%d}`, snapID, BlockSize, in.VolumeSize)

	case r.Method == http.MethodPut && putPath.MatchString(r.URL.Path):
		m := putPath.FindStringSubmatch(r.URL.Path)
		idx, _ := strconv.Atoi(m[2])
		if f.failPut {
			w.Header().Set("X-Amzn-ErrorType", "ValidationException")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"message":"The checksum does not match","Reason":"INVALID_CHECKSUM"}`)
			return
		}
		sum := sha256.Sum256(body)
		switch {
		case m[1] != snapID:
			f.fail("PutSnapshotBlock for unknown snapshot %s", m[1])
		case idx < 0 || int64(idx) >= f.volume<<30/BlockSize:
			f.fail("PutSnapshotBlock index %d outside the volume", idx)
		case len(body) != BlockSize || r.Header.Get("X-Amz-Data-Length") != strconv.Itoa(BlockSize):
			f.fail("block %d: %d bytes, x-amz-Data-Length %q; want %d", idx, len(body), r.Header.Get("X-Amz-Data-Length"), BlockSize)
		case r.Header.Get("X-Amz-Checksum-Algorithm") != "SHA256":
			f.fail("block %d: checksum algorithm %q", idx, r.Header.Get("X-Amz-Checksum-Algorithm"))
		case r.Header.Get("X-Amz-Checksum") != base64.StdEncoding.EncodeToString(sum[:]):
			f.fail("block %d: checksum %q does not match the data", idx, r.Header.Get("X-Amz-Checksum"))
		case bytes.Equal(body, make([]byte, BlockSize)):
			f.fail("block %d is all zeros: it should not have been sent", idx)
		}
		f.mu.Lock()
		if _, dup := f.blocks[int32(idx)]; dup {
			f.errs = append(f.errs, fmt.Sprintf("block %d sent twice", idx))
		}
		if f.complete {
			f.errs = append(f.errs, fmt.Sprintf("block %d sent after CompleteSnapshot", idx))
		}
		f.blocks[int32(idx)] = body
		f.sums[int32(idx)] = sum[:]
		f.mu.Unlock()
		w.Header().Set("x-amz-Checksum", base64.StdEncoding.EncodeToString(sum[:]))
		w.Header().Set("x-amz-Checksum-Algorithm", "SHA256")
		w.WriteHeader(http.StatusCreated)

	case r.Method == http.MethodPost && completePath.MatchString(r.URL.Path):
		f.mu.Lock()
		idx := make([]int32, 0, len(f.sums))
		for i := range f.sums {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		agg := sha256.New()
		for _, i := range idx {
			agg.Write(f.sums[i])
		}
		want := base64.StdEncoding.EncodeToString(agg.Sum(nil))
		n := len(f.blocks)
		f.complete = true
		f.mu.Unlock()
		h := r.Header
		if h.Get("X-Amz-Changedblockscount") != strconv.Itoa(n) {
			f.fail("CompleteSnapshot changed blocks %q, %d were written", h.Get("X-Amz-Changedblockscount"), n)
		}
		if h.Get("X-Amz-Checksum") != want || h.Get("X-Amz-Checksum-Algorithm") != "SHA256" ||
			h.Get("X-Amz-Checksum-Aggregation-Method") != "LINEAR" {
			f.fail("CompleteSnapshot checksum %q %q %q, want %q SHA256 LINEAR", h.Get("X-Amz-Checksum"),
				h.Get("X-Amz-Checksum-Algorithm"), h.Get("X-Amz-Checksum-Aggregation-Method"), want)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"Status":"completed"}`)

	case r.Method == http.MethodPost && r.URL.Path == "/":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			f.fail("EC2 query body %q: %v", body, err)
		}
		w.Header().Set("Content-Type", "text/xml")
		switch form.Get("Action") {
		case "DescribeSnapshots":
			if form.Get("SnapshotId.1") != snapID {
				f.fail("DescribeSnapshots for %q", form.Get("SnapshotId.1"))
			}
			f.mu.Lock()
			f.describe++
			state := "completed"
			if f.describe == 1 || !f.complete {
				state = "pending"
			}
			f.mu.Unlock()
			fmt.Fprintf(w, `<DescribeSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r1</requestId>
<snapshotSet><item><snapshotId>%s</snapshotId><status>%s</status><progress>100%%</progress><volumeSize>%d</volumeSize></item></snapshotSet>
</DescribeSnapshotsResponse>`, snapID, state, f.volume)
		case "RegisterImage":
			f.mu.Lock()
			f.register = form
			f.mu.Unlock()
			fmt.Fprint(w, `<RegisterImageResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r2</requestId><imageId>ami-0fedcba9876543210</imageId></RegisterImageResponse>`)
		default:
			f.fail("unexpected EC2 action %q", form.Get("Action"))
			w.WriteHeader(http.StatusBadRequest)
		}
	default:
		f.fail("unexpected request %s %s", r.Method, r.URL)
		w.WriteHeader(http.StatusNotFound)
	}
}

// testEnv points the SDK's default credential chain at fixed test keys and nothing of the host's.
func testEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDOSBUILDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// makeImage writes a sparse 64 MiB raw disk with a GPT and data in a few places: random blocks, a write
// that straddles two 512 KiB blocks, a few bytes at the very end, and an allocated but all-zero MiB that
// must not be uploaded.
func makeImage(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Fatalf("sgdisk is missing (apt-get install gdisk): %v", err)
	}
	p := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sgdisk", "-o", "-n", "1:2048:0", "-t", "1:ef00", p).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	rng := rand.New(rand.NewChaCha8([32]byte{4}))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for _, w := range []struct {
		off  int64
		data []byte
	}{
		{4 << 20, rnd(3 << 20)},
		{20<<20 - 1000, rnd(2000)},
		{30 << 20, make([]byte, 1<<20)}, // allocated zeros
		{50<<20 + 12345, []byte("osbuild")},
	} {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestPushAMI(t *testing.T) {
	img := makeImage(t)
	src, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	var nonZero []int32
	for i := 0; i < len(src); i += BlockSize {
		if !bytes.Equal(src[i:i+BlockSize], make([]byte, BlockSize)) {
			nonZero = append(nonZero, int32(i/BlockSize))
		}
	}
	for _, c := range []struct{ arch, want string }{
		{"", "x86_64"},
		{"x86_64", "x86_64"},
		{"arm64", "arm64"},
		{"aarch64", "arm64"},
	} {
		t.Run("arch="+c.arch, func(t *testing.T) {
			testEnv(t)
			fake := &fakeAWS{t: t, volume: 1, blocks: map[int32][]byte{}, sums: map[int32][]byte{}}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			var log bytes.Buffer
			res, err := PushAMI(context.Background(), img, Options{
				Region: "eu-test-1", Name: "osbuild-test-1.0.0", Arch: c.arch, EndpointURL: srv.URL,
				Workers: 4, PollInterval: 10 * time.Millisecond, WaitTimeout: 30 * time.Second, Log: &log,
			})
			if err != nil {
				t.Fatalf("PushAMI: %v\nlog:\n%s", err, log.String())
			}
			for _, e := range fake.errs {
				t.Error(e)
			}
			if res.ImageID != "ami-0fedcba9876543210" || res.SnapshotID != snapID || res.VolumeSizeGiB != 1 {
				t.Errorf("result %+v", res)
			}
			if fake.started != 1 || fake.describe < 2 {
				t.Errorf("StartSnapshot called %d times, DescribeSnapshots %d times (want 1, and >= 2 to see pending then completed)",
					fake.started, fake.describe)
			}
			// Exactly the non-zero blocks, and together they rebuild the disk.
			got := make([]int32, 0, len(fake.blocks))
			rebuilt := make([]byte, len(src))
			for i, b := range fake.blocks {
				got = append(got, i)
				copy(rebuilt[int64(i)*BlockSize:], b)
			}
			slices.Sort(got)
			if !slices.Equal(got, nonZero) || res.BlocksWritten != len(nonZero) {
				t.Errorf("blocks written %v (%d), want the non-zero ones %v", got, res.BlocksWritten, nonZero)
			}
			if !bytes.Equal(rebuilt, src) {
				t.Error("the uploaded blocks do not rebuild the image")
			}
			want := map[string]string{
				"Name":                                "osbuild-test-1.0.0",
				"Architecture":                        c.want,
				"BootMode":                            "uefi",
				"EnaSupport":                          "true",
				"ImdsSupport":                         "v2.0",
				"VirtualizationType":                  "hvm",
				"RootDeviceName":                      "/dev/xvda",
				"BlockDeviceMapping.1.DeviceName":     "/dev/xvda",
				"BlockDeviceMapping.1.Ebs.SnapshotId": snapID,
				"BlockDeviceMapping.1.Ebs.VolumeType": "gp3",
				"BlockDeviceMapping.1.Ebs.VolumeSize": "1",
				"BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true",
			}
			for k, v := range want {
				if g := fake.register.Get(k); g != v {
					t.Errorf("RegisterImage %s = %q, want %q", k, g, v)
				}
			}
		})
	}
}

func TestPushAMIErrors(t *testing.T) {
	img := makeImage(t)
	notDisk := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notDisk, bytes.Repeat([]byte("text "), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		img     string
		opts    Options
		failPut bool
		want    []string
	}{
		{"not a disk", notDisk, Options{Region: "eu-test-1", Name: "osbuild-x"}, false, []string{"raw disk image"}},
		{"bad arch", img, Options{Region: "eu-test-1", Name: "osbuild-x", Arch: "riscv"}, false, []string{"x86_64 or arm64"}},
		{"no region", img, Options{Name: "osbuild-x"}, false, []string{"--region"}},
		{"no name", img, Options{Region: "eu-test-1"}, false, []string{"--name"}},
		{"block rejected", img, Options{Region: "eu-test-1", Name: "osbuild-x"}, true,
			[]string{"PutSnapshotBlock", snapID, "delete-snapshot", "checksum does not match"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			testEnv(t)
			fake := &fakeAWS{t: t, volume: 1, failPut: c.failPut, blocks: map[int32][]byte{}, sums: map[int32][]byte{}}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			c.opts.EndpointURL = srv.URL
			_, err := PushAMI(context.Background(), c.img, c.opts)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if fake.register != nil || fake.complete {
				t.Error("the snapshot was completed or an image registered after a failure")
			}
		})
	}
}
