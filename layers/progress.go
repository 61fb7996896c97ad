package layers

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// Progress shows one line per layer being pulled, redrawn in place, on a terminal. A nil *Progress, or one
// for a writer that is not a terminal, prints nothing: logs in CI stay readable.
type Progress struct {
	mu   sync.Mutex
	w    io.Writer
	last time.Time
}

// NewProgress returns a Progress for w when w is a terminal, else nil.
func NewProgress(w io.Writer) *Progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &Progress{w: w}
	}
	return nil
}

// Bar counts the bytes of one layer.
type Bar struct {
	p           *Progress
	label       string
	done, total int64
}

// Start begins a line for a layer of total bytes (-1 when unknown).
func (p *Progress) Start(ref, digest string, total int64) *Bar {
	if p == nil {
		return nil
	}
	short := digest
	if len(short) > 19 {
		short = short[:19]
	}
	return &Bar{p: p, label: fmt.Sprintf("%s %s", ref, short), total: total}
}

func (b *Bar) Write(x []byte) (int, error) {
	if b == nil {
		return len(x), nil
	}
	b.done += int64(len(x))
	b.p.mu.Lock()
	defer b.p.mu.Unlock()
	if time.Since(b.p.last) > 100*time.Millisecond {
		b.p.last = time.Now()
		b.draw()
	}
	return len(x), nil
}

func (b *Bar) draw() {
	if b.total > 0 {
		fmt.Fprintf(b.p.w, "\r\033[Kpull %s %6.1f/%.1f MB", b.label, float64(b.done)/1e6, float64(b.total)/1e6)
	} else {
		fmt.Fprintf(b.p.w, "\r\033[Kpull %s %6.1f MB", b.label, float64(b.done)/1e6)
	}
}

// Done finishes the layer's line.
func (b *Bar) Done() {
	if b == nil {
		return
	}
	b.p.mu.Lock()
	defer b.p.mu.Unlock()
	b.draw()
	fmt.Fprintln(b.p.w)
}
