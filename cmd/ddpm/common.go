package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/torch"
)

// setupDevice parses --device and applies --threads (0: defaultThreads).
func setupDevice(name string, threads int) (torch.Device, error) {
	dev, err := torch.ParseDevice(name)
	if err != nil {
		return dev, err
	}
	if threads < 0 {
		return dev, fmt.Errorf("--threads %d must be non-negative", threads)
	}
	if threads == 0 {
		threads = defaultThreads()
	}
	if threads > 0 {
		if err := torch.SetNumThreads(threads); err != nil {
			return dev, err
		}
	}
	return dev, nil
}

// defaultThreads is the intra-op thread count when --threads is not given:
// 0 (libtorch's, which follows it) when OMP_NUM_THREADS is set; in a
// distributed job, the CPUs divided among the machine's ranks
// (LOCAL_WORLD_SIZE), or 1 without that variable, as torchrun does; else
// every CPU this process may use. libtorch's own default can be lower
// (one thread on a 2-CPU machine), and measured here two threads train the
// small preset 1.5x faster than one.
func defaultThreads() int {
	if os.Getenv("OMP_NUM_THREADS") != "" {
		return 0
	}
	if os.Getenv("RANK") != "" {
		if local, err := strconv.Atoi(os.Getenv("LOCAL_WORLD_SIZE")); err == nil && local > 0 {
			return max(1, runtime.NumCPU()/local)
		}
		return 1
	}
	return runtime.NumCPU()
}

func joinNames(names []string) string { return strings.Join(names, ", ") }

// humanCount writes 35746307 as "35.7M".
func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fG", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// gridColumns makes grids as square as possible (64 images: 8x8).
func gridColumns(n int) int { return int(math.Ceil(math.Sqrt(float64(n)))) }
