// Package disttest starts the ranks of a distributed test: copies of the
// running test binary, each told by the launch environment of torchrun
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) which rank it is,
// meeting on the loopback interface.
package disttest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// HelperEnv is set in the environment of every rank; a helper test returns
// at once unless it is set.
const HelperEnv = "DDPM_DIST_HELPER"

// IsRank reports whether this process is a rank started by Start.
func IsRank() bool { return os.Getenv(HelperEnv) != "" }

// FreePort returns a TCP port on the loopback interface that was free a
// moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Rank is one started rank.
type Rank struct {
	Cmd    *exec.Cmd
	Out    bytes.Buffer // stdout and stderr together
	Done   chan struct{}
	Err    error         // Wait's result, once Done is closed
	Elapse time.Duration // from start to exit
}

// Start runs world copies of the test binary with -test.run=^helper$, rank i
// with env[i] (may be nil) added to its environment. The ranks are killed
// when ctx ends.
func Start(ctx context.Context, t testing.TB, world int, helper string, env func(rank int) []string) []*Rank {
	t.Helper()
	port := FreePort(t)
	ranks := make([]*Rank, world)
	for i := range world {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+helper+"$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), HelperEnv+"=1",
			"RANK="+strconv.Itoa(i), "WORLD_SIZE="+strconv.Itoa(world), "LOCAL_RANK="+strconv.Itoa(i),
			"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port), "OMP_NUM_THREADS=1")
		if env != nil {
			cmd.Env = append(cmd.Env, env(i)...)
		}
		r := &Rank{Cmd: cmd, Done: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = &r.Out, &r.Out
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting rank %d: %v", i, err)
		}
		go func() {
			r.Err = cmd.Wait()
			r.Elapse = time.Since(start)
			close(r.Done)
		}()
		ranks[i] = r
	}
	return ranks
}

// Wait waits for every rank and fails the test, showing its output, for
// each one that did not exit with status 0.
func Wait(t testing.TB, ranks []*Rank) {
	t.Helper()
	for i, r := range ranks {
		<-r.Done
		if r.Err != nil {
			t.Errorf("rank %d: %v\n%s", i, r.Err, r.Out.String())
		}
	}
}

// Describe is the output of every rank, for failure messages.
func Describe(ranks []*Rank) string {
	var b bytes.Buffer
	for i, r := range ranks {
		fmt.Fprintf(&b, "---- rank %d ----\n%s\n", i, r.Out.String())
	}
	return b.String()
}
