package main

import (
	"context"
	"flag"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/internal/disttest"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

// A rank whose LOCAL_RANK is past the machine's GPUs fails at once in one
// line, before joining; one within them gets its GPU. The GPU count is
// faked, so this runs without a GPU.
func TestLocalRankBeyondGPUs(t *testing.T) {
	defer func(f func() int) { cudaDevices = f }(cudaDevices)
	cudaDevices = func() int { return 2 }
	join := func(localRank int) (torch.Device, error) {
		t.Helper()
		for k, v := range map[string]string{"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": strconv.Itoa(localRank),
			"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": strconv.Itoa(disttest.FreePort(t))} {
			t.Setenv(k, v)
		}
		fs := flag.NewFlagSet("train", flag.ContinueOnError)
		fs.Duration("dist-timeout", 5*time.Second, "")
		fs.String("device", "cuda", "")
		dev := torch.CUDA(0)
		var out strings.Builder
		pg, err := joinProcessGroup(cli.NewContext(cli.NewApp(), fs, nil), &dev, &out)
		if pg != nil {
			pg.Close()
		}
		return dev, err
	}

	dev, err := join(2)
	want := "LOCAL_RANK 2 asks for cuda:2, but this machine has 2 CUDA device(s): start at most 2 ranks on it, or give --device cuda:N"
	if err == nil || err.Error() != want {
		t.Fatalf("LOCAL_RANK 2 of 2 GPUs: %v, want %q", err, want)
	}
	if dev != torch.CUDA(0) {
		t.Errorf("the refused rank's device became %s", dev)
	}
	if !torch.DistAvailable() {
		t.Skip("this build has no distributed support: a rank within the GPUs cannot join")
	}
	if dev, err = join(1); err != nil || dev != torch.CUDA(1) {
		t.Errorf("LOCAL_RANK 1 of 2 GPUs: device %s, %v; want cuda:1", dev, err)
	}
}

// Ranks given other data or --flip fail together, in one line naming what
// differs, before training on shards that overlap.
func TestDistRanksWithOtherDataOrFlipFail(t *testing.T) {
	needDist(t)
	dataDir, otherDir, runDir := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 48)
	writeIDX(t, otherDir, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ranks := disttest.Start(ctx, t, 2, "TestDistHelperCLI", func(rank int) []string {
		args := []string{"train", "--preset", "tiny", "--data", dataDir, "--steps", "4", "--batch", "4",
			"--sample-every", "0", "--sample-n", "4", "--threads", "1", "--out", runDir, "--quiet"}
		if rank == 1 {
			args = append(args, "--flip", "--data", otherDir)
		}
		return []string{"DIST_ARGS=" + strings.Join(args, "\n")}
	})
	for _, r := range ranks {
		<-r.Done
	}
	for i, want := range []string{"ddpm: train: 1 rank(s) were started with another configuration than rank 0",
		"ddpm: train: rank 1 was started with another configuration than rank 0 (differs in data.contents, data.flip, data.images)"} {
		if ranks[i].Err == nil || !strings.Contains(ranks[i].Out.String(), want) {
			t.Errorf("rank %d: %v, want an error with %q\n%s", i, ranks[i].Err, want, disttest.Describe(ranks))
		}
	}
	if c, _ := checkpoint.List(runDir); len(c) != 0 {
		t.Errorf("rank 0 trained and wrote %v", c)
	}
}
