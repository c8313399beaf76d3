package main

import (
	"fmt"
	"strconv"
	"strings"
)

// maxCacheMB is the largest cache size in MiB whose bytes fit the shim's
// int64 (it shifts the figure left by 20 bits).
const maxCacheMB = 1<<43 - 1

// checkEnvironment refuses the environment variables that libtorch and the
// shim read in forms they cannot use. For a bad OMP_NUM_THREADS or
// MKL_NUM_THREADS libtorch prints a C++ exception with its stack and carries
// on with its own default; the shim ignores an unreadable cache size
// (csrc/allocator.cpp, mb_from_env) and keeps a quarter of the memory.
// lookup is os.LookupEnv.
func checkEnvironment(lookup func(string) (string, bool)) error {
	for _, name := range []string{"OMP_NUM_THREADS", "MKL_NUM_THREADS"} {
		// OpenMP takes a list, one count per nesting level; libtorch reads
		// the first.
		// Empty is unset to both (libgomp warns and goes on).
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" && !positiveList(v) {
			return fmt.Errorf("environment: %s=%q: want a positive number of threads, or leave it unset", name, v)
		}
	}
	for _, name := range []string{"DDPM_CPU_CACHE_MB", "DDPM_WEIGHT_CACHE_MB"} {
		v, _ := lookup(name)
		if v == "" {
			continue // the default
		}
		if mb, err := strconv.ParseInt(v, 10, 64); err != nil || mb < 0 || mb > maxCacheMB {
			return fmt.Errorf("environment: %s=%q: want a size in MiB, 0 or more (0 turns the cache off), or leave it unset", name, v)
		}
	}
	return nil
}

// positiveList reports whether s is one or more positive integers,
// comma-separated, with white space around them as OpenMP allows.
func positiveList(s string) bool {
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err != nil || n < 1 {
			return false
		}
	}
	return true
}
