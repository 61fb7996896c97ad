package zstd

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"testing"
	"time"

	kzstd "github.com/klauspost/compress/zstd"
)

// corpusFiles lists the benchmark corpus: the first ZSTD_CORPUS_MB (default 100) megabytes of
// regular files under a few system directories in sorted path order (a file that would overshoot
// is left out, so one huge binary does not make up most of it), every ZSTD_CORPUS_STEP-th file
// (default 1) to make quicker runs possible.
func corpusFiles(b *testing.B) []string {
	limit := envInt("ZSTD_CORPUS_MB", 100) * 1e6
	step := envInt("ZSTD_CORPUS_STEP", 1)
	var all []string
	for _, root := range []string{"/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/share/man", "/usr/lib/python3"} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				all = append(all, p)
			}
			return nil
		})
	}
	sort.Strings(all)
	var files []string
	total := 0
	for i, p := range all {
		st, err := os.Stat(p)
		if err != nil || st.Size() == 0 || total+int(st.Size()) > limit {
			continue
		}
		if i%step == 0 {
			files = append(files, p)
		}
		total += int(st.Size())
		if total >= limit*99/100 {
			break
		}
	}
	if len(files) == 0 {
		b.Fatal("no corpus files found")
	}
	return files
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// corpusBlocks cuts every file into independent 128 KiB blocks, like squashfs and zstd -B do.
func corpusBlocks(b *testing.B, files []string) [][]byte {
	var blocks [][]byte
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for len(data) > 0 {
			n := min(len(data), 128<<10)
			blocks = append(blocks, data[:n])
			data = data[n:]
		}
	}
	return blocks
}

var benchRe = regexp.MustCompile(`files\s*:\s*(\d+) ->\s*(\d+) \(x[0-9.]+\),\s*([0-9.]+) MB/s`)

// BenchmarkCorpus compares the summed frame sizes of independent 128 KiB blocks against C zstd
// (its benchmark mode compresses independent blocks too) and klauspost's best level. Run with
// -benchtime=1x; ZSTD_LEVEL picks the level (default 15).
func BenchmarkCorpus(b *testing.B) {
	level := envInt("ZSTD_LEVEL", 15)
	files := corpusFiles(b)
	blocks := corpusBlocks(b, files)
	in := 0
	for _, blk := range blocks {
		in += len(blk)
	}
	e := NewEncoder(level)
	var out []byte
	ours := 0
	b.SetBytes(int64(in))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		ours = 0
		for _, blk := range blocks {
			out = e.Encode(out[:0], blk)
			ours += len(out)
		}
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(ours), "ours_bytes")
	b.ReportMetric(float64(in)*float64(b.N)/el.Seconds()/1e6, "ours_MB/s")

	// klauspost's best level, configured like the squashfs writer.
	k, err := kzstd.NewWriter(nil, kzstd.WithEncoderLevel(kzstd.SpeedBestCompression), kzstd.WithEncoderCRC(false),
		kzstd.WithSingleSegment(true), kzstd.WithZeroFrames(true), kzstd.WithEncoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	kb := 0
	for _, blk := range blocks {
		if os.Getenv("ZSTD_SKIP_C") != "" {
			break
		}
		out = k.EncodeAll(blk, out[:0])
		kb += len(out)
	}
	b.ReportMetric(float64(kb), "klauspost_bytes")

	if os.Getenv("ZSTD_SKIP_C") != "" {
		return // quicker tuning runs: only our own and klauspost's sizes
	}
	args := append([]string{"-b" + strconv.Itoa(level), "-e" + strconv.Itoa(level), "-B131072", "-i1"}, files...)
	res, err := exec.Command(zstdCLI(b), args...).CombinedOutput()
	if err != nil {
		b.Fatalf("zstd bench: %v", err)
	}
	m := benchRe.FindAllSubmatch(res, -1)
	if m == nil {
		b.Fatalf("cannot parse zstd bench output: %q", res)
	}
	cIn, _ := strconv.Atoi(string(m[len(m)-1][1]))
	cb, _ := strconv.Atoi(string(m[len(m)-1][2]))
	if cIn != in {
		b.Logf("C read %d bytes, we read %d", cIn, in)
	}
	b.ReportMetric(float64(cb), "C_bytes")
	cSpeed, _ := strconv.ParseFloat(string(m[len(m)-1][3]), 64)
	b.ReportMetric(cSpeed, "C_MB/s")
	b.ReportMetric(100*(float64(ours)/float64(cb)-1), "ours_vs_C_%")
	b.ReportMetric(100*(float64(kb)/float64(cb)-1), "klauspost_vs_C_%")
}
