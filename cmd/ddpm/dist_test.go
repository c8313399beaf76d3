package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/internal/disttest"
	"github.com/ddpm-go/ddpm/torch"
)

// TestDistHelperCLI is one rank of the tests below: `ddpm` with the
// arguments in DIST_ARGS (separated by newlines), exiting with its status.
func TestDistHelperCLI(t *testing.T) {
	if !disttest.IsRank() {
		t.Skip("started only as a rank of a distributed test")
	}
	os.Exit(run(append([]string{"ddpm"}, strings.Split(os.Getenv("DIST_ARGS"), "\n")...), os.Stdout, os.Stderr))
}

func needDist(t testing.TB) {
	t.Helper()
	if !torch.DistAvailable() {
		t.Skip("this build has no distributed support (install libgloo-dev and rebuild the shim)")
	}
}

func startRanks(ctx context.Context, t testing.TB, args ...string) []*disttest.Rank {
	return disttest.Start(ctx, t, 2, "TestDistHelperCLI", func(int) []string {
		return []string{"DIST_ARGS=" + strings.Join(args, "\n")}
	})
}

// A two-process run writes one run directory (rank 0), and a single process
// resumes it.
func TestDistTrainThenResumeAlone(t *testing.T) {
	needDist(t)
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 48)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ranks := startRanks(ctx, t, "train", "--preset", "tiny", "--data", dataDir, "--steps", "6", "--batch", "4",
		"--checkpoint-every", "3", "--sample-every", "0", "--sample-n", "4", "--log-every", "3", "--threads", "1",
		"--out", runDir, "--quiet")
	disttest.Wait(t, ranks)
	if t.Failed() {
		return
	}
	for i, want := range []string{"rank 0 of 2", "rank 1 of 2"} {
		if !strings.Contains(ranks[i].Out.String(), want) {
			t.Errorf("rank %d output lacks %q:\n%s", i, want, ranks[i].Out.String())
		}
	}
	if strings.Contains(ranks[1].Out.String(), "writing to") {
		t.Errorf("rank 1 wrote output:\n%s", ranks[1].Out.String())
	}
	if _, err := os.Stat(filepath.Join(runDir, "ckpt-00000006.safetensors")); err != nil {
		t.Fatalf("no final checkpoint: %v\n%s", err, disttest.Describe(ranks))
	}
	code, out, errOut := ddpm(t, "train", "--resume", runDir, "--steps", "9", "--threads", "1", "--quiet")
	if code != 0 || !strings.Contains(out, "(step 6 of 9)") {
		t.Fatalf("resume as one process: %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(runDir, "ckpt-00000009.safetensors")); err != nil {
		t.Fatal(err)
	}
}

// Killing one rank makes the other fail (not hang) within the timeout, and
// leaves the last checkpoint readable.
func TestDistKilledRankEndsJob(t *testing.T) {
	needDist(t)
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 48)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const timeout = 10 * time.Second
	ranks := startRanks(ctx, t, "train", "--preset", "tiny", "--data", dataDir, "--steps", "100000", "--batch", "4",
		"--checkpoint-every", "2", "--sample-every", "0", "--log-every", "2", "--threads", "1",
		"--dist-timeout", timeout.String(), "--out", runDir, "--quiet")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if c, _ := checkpoint.List(runDir); len(c) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-ranks[0].Done
			<-ranks[1].Done
			t.Fatalf("no checkpoints:\n%s", disttest.Describe(ranks))
		}
		time.Sleep(50 * time.Millisecond)
	}
	killed := time.Now()
	ranks[1].Cmd.Process.Kill()
	<-ranks[1].Done
	select {
	case <-ranks[0].Done:
	case <-time.After(timeout + 30*time.Second):
		t.Fatal("rank 0 still runs after its peer was killed")
	}
	took := time.Since(killed)
	out := ranks[0].Out.String()
	if ranks[0].Err == nil || !strings.Contains(out, "ddpm: ") || !strings.Contains(out, "rank 0 of 2") {
		t.Fatalf("rank 0 exited with %v:\n%s", ranks[0].Err, out)
	}
	t.Logf("rank 0 failed %v after the kill: %s", took.Round(time.Millisecond), lastLine(out, "ddpm: "))
	c, err := checkpoint.Latest(runDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.ReadMeta(c); err != nil {
		t.Fatalf("last checkpoint unreadable: %v", err)
	}
}

func lastLine(s, sub string) string {
	last := ""
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			last = l
		}
	}
	return last
}

// Ranks started with other flags fail together, in one line naming what
// differs, before any weights move (a different model used to abort inside
// the collective library).
func TestDistRanksWithOtherConfigsFail(t *testing.T) {
	needDist(t)
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 48)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	common := []string{"train", "--preset", "tiny", "--data", dataDir, "--steps", "4", "--batch", "4",
		"--sample-every", "0", "--sample-n", "4", "--threads", "1", "--out", runDir, "--quiet"}
	ranks := disttest.Start(ctx, t, 2, "TestDistHelperCLI", func(rank int) []string {
		args := append([]string(nil), common...)
		if rank == 1 {
			args = append(args, "--lr", "1e-3", "--base-channels", "8")
		}
		return []string{"DIST_ARGS=" + strings.Join(args, "\n")}
	})
	for _, r := range ranks {
		<-r.Done
	}
	for i, want := range []string{"rank(s) were started with another configuration", "differs in the model (parameter shapes), optimizer.lr"} {
		if ranks[i].Err == nil || !strings.Contains(ranks[i].Out.String(), want) {
			t.Errorf("rank %d: %v, want an error with %q\n%s", i, ranks[i].Err, want, disttest.Describe(ranks))
		}
	}
}

// Rank 0 alone (no peer ever connects) waits --dist-timeout once, not twice,
// and says in one line what it waited for.
func TestDistRankZeroAloneTimesOut(t *testing.T) {
	needDist(t)
	port := disttest.FreePort(t)
	for k, v := range map[string]string{"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
		"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": strconv.Itoa(port)} {
		t.Setenv(k, v)
	}
	runDir := filepath.Join(t.TempDir(), "run")
	start := time.Now()
	code, out, errOut := ddpm(t, "train", "--preset", "tiny", "--steps", "2", "--threads", "1",
		"--dist-timeout", "1500ms", "--out", runDir, "--quiet")
	took := time.Since(start)
	want := fmt.Sprintf("ddpm: rank 0: no peer joined at 127.0.0.1:%d within 1500ms (world size 2)\n", port)
	if code != 1 || out+errOut != want {
		t.Fatalf("exit %d, output %q, want %q", code, out+errOut, want)
	}
	if took > 2900*time.Millisecond {
		t.Errorf("took %v, want about the 1.5 s timeout once", took)
	}
	if _, err := os.Stat(runDir); err == nil {
		t.Errorf("a failed join created %s", runDir)
	}
}
