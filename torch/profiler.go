package torch

// #include <stdlib.h>
// #include "ddpm_torch.h"
import "C"

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// OpStat is the time libtorch spent in one operator (aten::conv2d,
// aten::add, an autograd backward function such as MulBackward0, ...)
// between StartProfiler and StopProfiler, like a row of PyTorch's
// torch.profiler key_averages() table on the CPU.
type OpStat struct {
	Name  string
	Calls int64
	// Total is the wall-clock time from each call's start to its end,
	// summed; Self leaves out the operators it called (aten::conv2d's Total
	// holds its kernel's, which its Self does not). Work an operator hands
	// to other CPU threads counts as the time it waits for it. On CUDA an
	// operator returns once its kernels are queued, so its times are the
	// host's, and the wait lands on whatever operator synchronizes next.
	Total, Self time.Duration
}

// StartProfiler starts timing every libtorch operator called from then on,
// on any goroutine. It costs about a microsecond per operator call until
// StopProfiler. It fails if the profiler is running already.
func StartProfiler() error {
	return takeError("profiler", C.ddpm_profiler_start())
}

// StopProfiler stops the profiler and returns what it timed, one OpStat
// per operator name, the largest Self first. It fails if the profiler is
// not running.
func StopProfiler() ([]OpStat, error) {
	var table *C.char
	if err := takeError("profiler", C.ddpm_profiler_stop(&table)); err != nil {
		return nil, err
	}
	text := C.GoString(table)
	C.free(unsafe.Pointer(table))
	return parseProfile(text)
}

// parseProfile reads the shim's table: "name\tcalls\ttotal_ns\tself_ns"
// lines.
func parseProfile(text string) ([]OpStat, error) {
	var stats []OpStat
	for line := range strings.Lines(text) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(f) != 4 {
			return nil, fmt.Errorf("torch: profiler: bad line %q", line)
		}
		var n [3]int64
		for i := range n {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("torch: profiler: bad line %q", line)
			}
			n[i] = v
		}
		stats = append(stats, OpStat{Name: f[0], Calls: n[0], Total: time.Duration(n[1]), Self: time.Duration(n[2])})
	}
	slices.SortFunc(stats, func(a, b OpStat) int {
		return cmp.Or(cmp.Compare(b.Self, a.Self), strings.Compare(a.Name, b.Name))
	})
	return stats, nil
}
