package suite

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows where a suite run is: a progress bar on a terminal, plain "[i/n] step" lines
// otherwise (a log file, CI).
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	bar   *progressbar.ProgressBar
	n     int
	total int
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total}
	if w == nil {
		p.w = io.Discard
		return p
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionFullWidth(),
		)
	}
	return p
}

// step starts one unit of work; the previous one counts as done.
func (p *progress) step(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.n > p.total {
		p.total = p.n
		if p.bar != nil {
			p.bar.ChangeMax(p.total)
		}
	}
	desc := fmt.Sprintf(format, a...)
	if p.bar != nil {
		p.bar.Describe(desc)
		_ = p.bar.Set(p.n - 1)
		return
	}
	fmt.Fprintf(p.w, "bench suite: [%d/%d] %s\n", p.n, p.total, desc)
}

// logf prints a line above the bar.
func (p *progress) logf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.w, "bench suite: "+format+"\n", a...)
	if p.bar != nil {
		_ = p.bar.RenderBlank()
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
