package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress shows how far a long operation is: a redrawn bar on a terminal,
// a plain line every few seconds otherwise, nothing with --quiet.
type progress struct {
	w        io.Writer
	tty      bool
	quiet    bool
	label    string
	total    int64
	lastLine time.Time
	// The first update's count and time: the pace, and so the eta, is
	// measured from there, leaving out the first unit's warm-up and, on a
	// resumed run, the steps done before.
	firstDone int64
	firstAt   time.Time
	every     time.Duration
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newProgress(w io.Writer, quiet bool, label string, total int64) *progress {
	return &progress{w: w, tty: isTerminal(w), quiet: quiet, label: label, total: total, every: 10 * time.Second}
}

// update reports that done of total units are finished, with a status text.
func (p *progress) update(done int64, status string) {
	if p.quiet {
		return
	}
	now := time.Now()
	if p.firstAt.IsZero() {
		p.firstDone, p.firstAt = done, now
	}
	eta := ""
	if per, n := p.pace(done, now); n > 0 && done < p.total {
		eta = " eta " + (per * time.Duration(p.total-done)).Round(time.Second).String()
	}
	if p.tty {
		const width = 24
		filled := int(float64(width) * float64(done) / float64(max(p.total, 1)))
		bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
		fmt.Fprintf(p.w, "\r%s [%s] %d/%d %s%s\x1b[K", p.label, bar, done, p.total, status, eta)
		return
	}
	if done == p.total || now.Sub(p.lastLine) >= p.every {
		p.lastLine = now
		fmt.Fprintf(p.w, "%s %d/%d %s%s\n", p.label, done, p.total, status, eta)
	}
}

// pace is the time a unit took, on average, over the n units done since
// the first update (none before the second update, or with --quiet).
func (p *progress) pace(done int64, now time.Time) (per time.Duration, n int64) {
	n = done - p.firstDone
	if p.firstAt.IsZero() || n <= 0 {
		return 0, 0
	}
	return now.Sub(p.firstAt) / time.Duration(n), n
}

// println prints line between the bar's redraws.
func (p *progress) println(line string) {
	if p.quiet {
		return
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K\n", line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// finish ends the bar's line on a terminal.
func (p *progress) finish() {
	if !p.quiet && p.tty {
		fmt.Fprintln(p.w)
	}
}
