// Package benchcmp times the same work in Go and in PyTorch (Debian's
// python3-torch, the same libtorch) side by side in one benchmark run.
//
// The PyTorch side is a long-running script built on Serve: it sets up its
// model, answers "ready", then times each request line it reads. The two
// sides take turns, round after round, so that load from elsewhere on the
// machine falls on both, and Report compares the medians of their rounds:
// go/torch_time is Go's median wall-clock time divided by PyTorch's (at most
// 1 means Go is not slower), go/torch_cpu the same ratio of CPU time (user
// plus system), which other load disturbs less. Both processes read the same
// environment, so settings such as OMP_NUM_THREADS apply to both alike.
package benchcmp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Serve is the Python half of the protocol, to be prepended to a script.
// serve(handlers, threads) sets torch's intra-op threads, prints the ready
// line, and then answers every request line "NAME ARGS..." by timing
// handlers[NAME](*ARGS), which returns how many units of work it did, and
// printing the cost of one: wall-clock seconds, user and system CPU seconds
// and minor page faults, and the process's peak resident memory so far
// (getrusage).
const Serve = `
import json, resource, sys, time
import torch

def reply(**kw):
    print(json.dumps(kw), flush=True)

def serve(handlers, threads):
    torch.set_num_threads(threads)
    reply(ready=True, threads=torch.get_num_threads(), version=torch.__version__)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        handler = handlers.get(words[0])
        if handler is None:
            reply(error="unknown request " + repr(line))
            continue
        start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        k = handler(*words[1:])
        end = resource.getrusage(resource.RUSAGE_SELF)
        reply(seconds=(time.perf_counter() - start) / k,
              user_seconds=(end.ru_utime - usage.ru_utime) / k,
              system_seconds=(end.ru_stime - usage.ru_stime) / k,
              page_faults=(end.ru_minflt - usage.ru_minflt) / k,
              peak_rss_bytes=end.ru_maxrss * 1024)
`

// Cost is what one unit of work cost a process: wall-clock seconds, user
// and system CPU seconds, and minor page faults (fresh memory pages); and
// the process's peak resident memory in bytes when the work was done.
type Cost struct{ Wall, User, Sys, Faults, PeakRSS float64 }

// CPU is the user plus system time.
func (c Cost) CPU() float64 { return c.User + c.Sys }

// usage is this process's CPU time and minor page faults so far.
func usage(b *testing.B) Cost {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	sec := func(tv syscall.Timeval) float64 { return time.Duration(tv.Nano()).Seconds() }
	return Cost{User: sec(ru.Utime), Sys: sec(ru.Stime), Faults: float64(ru.Minflt), PeakRSS: float64(ru.Maxrss) * 1024}
}

// Measure runs f, which does n units of work, and returns the cost of one.
func Measure(b *testing.B, n int, f func()) Cost {
	start, before := time.Now(), usage(b)
	f()
	after, k := usage(b), float64(n)
	return Cost{
		Wall:    time.Since(start).Seconds() / k,
		User:    (after.User - before.User) / k,
		Sys:     (after.Sys - before.Sys) / k,
		Faults:  (after.Faults - before.Faults) / k,
		PeakRSS: after.PeakRSS,
	}
}

// Reference is a running PyTorch side.
type Reference struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr bytes.Buffer
}

type reply struct {
	Ready      bool    `json:"ready"`
	Threads    int     `json:"threads"`
	Version    string  `json:"version"`
	Seconds    float64 `json:"seconds"`
	User       float64 `json:"user_seconds"`
	System     float64 `json:"system_seconds"`
	PageFaults float64 `json:"page_faults"`
	PeakRSS    float64 `json:"peak_rss_bytes"`
	Error      string  `json:"error"`
}

// Start runs the script file with py in dir, passing args, and waits until
// it is ready; the script must call serve with threads, which must be the
// Go side's intra-op thread count. The script ends with the benchmark.
func Start(b *testing.B, py, dir, script string, threads int, args ...string) *Reference {
	b.Helper()
	r := &Reference{cmd: exec.Command(py, append([]string{script}, args...)...)}
	r.cmd.Dir = dir
	r.cmd.Stderr = &r.stderr
	var err error
	if r.in, err = r.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	r.out = bufio.NewScanner(stdout)
	if err := r.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.close)
	ready := r.read(b)
	if !ready.Ready {
		b.Fatalf("PyTorch reference: unexpected first reply %+v", ready)
	}
	if ready.Threads != threads {
		b.Fatalf("PyTorch reference runs on %d threads, Go on %d", ready.Threads, threads)
	}
	b.Logf("PyTorch %s, %d intra-op threads on both sides", ready.Version, threads)
	return r
}

// read returns the next reply, or fails with the script's error output.
func (r *Reference) read(b *testing.B) reply {
	b.Helper()
	if !r.out.Scan() {
		r.in.Close()
		err := r.cmd.Wait()
		b.Fatalf("PyTorch reference stopped (%v): %v\n%s", r.out.Err(), err, r.stderr.String())
	}
	var rep reply
	if err := json.Unmarshal(r.out.Bytes(), &rep); err != nil {
		text := r.out.Text()
		if len(text) > 500 {
			text = text[:500] + "..."
		}
		b.Fatalf("PyTorch reference: %v in reply %q", err, text)
	}
	if rep.Error != "" {
		b.Fatalf("PyTorch reference: %s", rep.Error)
	}
	return rep
}

// Run sends one request line and returns the cost it reports.
func (r *Reference) Run(b *testing.B, request string) Cost {
	b.Helper()
	if _, err := io.WriteString(r.in, request+"\n"); err != nil {
		b.Fatalf("PyTorch reference: %v\n%s", err, r.stderr.String())
	}
	rep := r.read(b)
	return Cost{Wall: rep.Seconds, User: rep.User, Sys: rep.System, Faults: rep.PageFaults, PeakRSS: rep.PeakRSS}
}

// close ends the script (it stops at the end of its input) and waits for it.
func (r *Reference) close() {
	r.in.Close()
	r.cmd.Wait()
}

// medianOf is the median of f over cs.
func medianOf(cs []Cost, f func(Cost) float64) float64 {
	v := make([]float64, len(cs))
	for i, c := range cs {
		v[i] = f(c)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Report logs every round of both sides and where their CPU time went, and
// reports Go's median wall-clock time per unit as ns/op, the throughput of
// both sides in items/s (items per unit of work, e.g. images per step,
// named unit, e.g. "images"), the ratios go/torch_time and go/torch_cpu of
// the medians, and the peak resident memory of each process in MiB (of the
// whole process: the Go test binary with whatever ran before in it, the
// Python interpreter with torch).
func Report(b *testing.B, items int, unit string, goCosts, torchCosts []Cost) {
	b.Helper()
	for _, side := range []struct {
		name  string
		costs []Cost
	}{{"Go", goCosts}, {"PyTorch", torchCosts}} {
		var wall, cpu []string
		for _, c := range side.costs {
			wall = append(wall, fmt.Sprintf("%.4g", c.Wall))
			cpu = append(cpu, fmt.Sprintf("%.4g", c.CPU()))
		}
		b.Logf("%s: wall-clock seconds per unit %s, CPU seconds %s; median user %.4g s, system %.4g s, %.0f minor page faults",
			side.name, strings.Join(wall, " "), strings.Join(cpu, " "),
			medianOf(side.costs, func(c Cost) float64 { return c.User }),
			medianOf(side.costs, func(c Cost) float64 { return c.Sys }),
			medianOf(side.costs, func(c Cost) float64 { return c.Faults }))
	}
	wall := func(c Cost) float64 { return c.Wall }
	g, t := medianOf(goCosts, wall), medianOf(torchCosts, wall)
	cpuRatio := medianOf(goCosts, Cost.CPU) / medianOf(torchCosts, Cost.CPU)
	b.Logf("median: Go %.4g s (%.4g %s/s), PyTorch %.4g s (%.4g %s/s); Go/PyTorch wall-clock %.3f, CPU %.3f",
		g, float64(items)/g, unit, t, float64(items)/t, unit, g/t, cpuRatio)
	b.ReportMetric(g*1e9, "ns/op")
	b.ReportMetric(float64(items)/g, "go_"+unit+"/s")
	b.ReportMetric(float64(items)/t, "torch_"+unit+"/s")
	b.ReportMetric(g/t, "go/torch_time")
	b.ReportMetric(cpuRatio, "go/torch_cpu")
	peak := func(cs []Cost) float64 {
		var m float64
		for _, c := range cs {
			m = max(m, c.PeakRSS)
		}
		return m / (1 << 20)
	}
	b.ReportMetric(peak(goCosts), "go_peak_rss_MiB")
	b.ReportMetric(peak(torchCosts), "torch_peak_rss_MiB")
}
