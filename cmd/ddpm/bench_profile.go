package main

import (
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/torch"
)

// profileTop is how many operators a --profile table prints.
const profileTop = 15

// opRow is one libtorch operator of a bench --profile table, averaged per
// step (see torch.OpStat: self time leaves out the operators it called).
type opRow struct {
	Name    string  `json:"name"`
	Calls   float64 `json:"calls_per_step"`
	SelfMS  float64 `json:"self_ms_per_step"`
	TotalMS float64 `json:"total_ms_per_step"`
}

// profileRows averages the profiler's stats over steps, the largest self
// time first.
func profileRows(stats []torch.OpStat, steps int) []opRow {
	rows := make([]opRow, len(stats))
	n := float64(steps)
	for i, st := range stats {
		rows[i] = opRow{Name: st.Name, Calls: float64(st.Calls) / n,
			SelfMS: st.Self.Seconds() * 1e3 / n, TotalMS: st.Total.Seconds() * 1e3 / n}
	}
	return rows
}

// printProfile prints the operators of rows that took the most self time,
// and the rest summed.
func printProfile(w io.Writer, title string, rows []opRow) {
	var all float64
	for _, r := range rows {
		all += r.SelfMS
	}
	fmt.Fprintf(w, "\n%s: %.2f ms a step in libtorch operators (self time; the profiler adds about a microsecond a call)\n", title, all)
	fmt.Fprintf(w, "%10s %10s %8s  %s\n", "self ms", "total ms", "calls", "operator")
	var rest float64
	for i, r := range rows {
		if i >= profileTop {
			rest += r.SelfMS
			continue
		}
		fmt.Fprintf(w, "%10.3f %10.3f %8.1f  %s\n", r.SelfMS, r.TotalMS, r.Calls, r.Name)
	}
	if len(rows) > profileTop {
		fmt.Fprintf(w, "%10.3f %10s %8s  (%d other operators)\n", rest, "", "", len(rows)-profileTop)
	}
}

// profiled runs f under libtorch's operator profiler.
func profiled(f func() error) ([]torch.OpStat, error) {
	if err := torch.StartProfiler(); err != nil {
		return nil, err
	}
	ferr := f()
	stats, err := torch.StopProfiler()
	if ferr != nil {
		return nil, ferr
	}
	return stats, err
}
