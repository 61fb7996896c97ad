// Package registrytest runs Debian's docker-registry (CNCF distribution) on a random loopback port for
// tests that need a real registry, and counts the blob downloads it serves.
package registrytest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binary is the registry executable (package docker-registry).
const Binary = "/usr/bin/docker-registry"

// Registry is a running registry.
type Registry struct {
	Host string // 127.0.0.1:PORT
	Dir  string // storage root

	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []string
	done chan struct{}
}

// Start runs a registry storing into a fresh temporary folder; it is stopped when the test ends. A missing
// binary fails the test: install the docker-registry package (.ci/run does).
func Start(t testing.TB) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("docker-registry is not installed (%v): apt-get install docker-registry", err)
	}
	r := &Registry{Dir: t.TempDir(), done: make(chan struct{})}
	r.Host = freeAddr(t)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(r.Dir, "storage"), r.Host)
	cfgPath := filepath.Join(r.Dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(Binary, "serve", cfgPath)
	r.cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	stdout, _ := r.cmd.StdoutPipe()
	r.cmd.Stderr = r.cmd.Stdout
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			r.mu.Lock()
			r.logs = append(r.logs, sc.Text())
			r.mu.Unlock()
		}
		close(r.done)
	}()
	t.Cleanup(r.Stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not answer on %s: %v\n%s", r.Host, err, r.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// Stop ends the registry; it is safe to call twice. Tests use it to cut a registry off mid-transfer.
func (r *Registry) Stop() {
	if r.cmd.Process == nil || r.cmd.ProcessState != nil {
		return
	}
	r.cmd.Process.Kill()
	r.cmd.Wait()
	<-r.done
}

// Logs returns everything the registry printed.
func (r *Registry) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.logs, "\n")
}

// access log lines look like: 127.0.0.1 - - [date] "GET /v2/a/b/blobs/sha256:… HTTP/1.1" 200 …
var blobGet = regexp.MustCompile(`"GET /v2/\S+/blobs/sha256:[0-9a-f]{64} HTTP/[0-9.]+" (\d+)`)

// BlobGets counts the blob downloads the registry has answered so far.
func (r *Registry) BlobGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.logs {
		if blobGet.MatchString(l) {
			n++
		}
	}
	return n
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
