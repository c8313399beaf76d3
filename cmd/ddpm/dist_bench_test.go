package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/internal/disttest"
)

// BenchmarkDataParallelScaling trains the default small preset on
// Fashion-MNIST with one intra-op thread per process, first as one process
// with batch 2B, then as two ranks (started like torchrun's) with batch B
// each, the same global batch. It reports the training throughput of both
// from rank 0's metrics log (global images/s, the median of the logged
// windows after the first, which holds the warm-up), the speed-up, and the
// share of rank 0's training time spent waiting for the gradient all-reduce
// after backward (the part that overlapped backward is not counted).
func BenchmarkDataParallelScaling(b *testing.B) {
	needDist(b)
	if _, err := os.Stat(data.FashionMNISTDir); err != nil {
		b.Skipf("needs Debian's Fashion-MNIST: %v", err)
	}
	const perRank, steps, logEvery = 16, 50, 10
	args := func(out string, batch int) []string {
		return []string{"train", "--preset", "small", "--steps", strconv.Itoa(steps), "--batch", strconv.Itoa(batch),
			"--threads", "1", "--checkpoint-every", strconv.Itoa(steps), "--sample-every", "0", "--sample-n", "1",
			"--log-every", strconv.Itoa(logEvery), "--out", out}
	}
	one := filepath.Join(b.TempDir(), "one")
	if code, out, errOut := ddpm(b, args(one, 2*perRank)...); code != 0 {
		b.Fatalf("one process: exit %d\n%s%s", code, out, errOut)
	}
	two := filepath.Join(b.TempDir(), "two")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ranks := startRanks(ctx, b, args(two, perRank)...)
	disttest.Wait(b, ranks)
	if b.Failed() {
		return
	}
	oneRate, twoRate := trainRate(b, one), trainRate(b, two)
	b.Logf("rank 0: %s", lastLine(ranks[0].Out.String(), "all-reduce"))
	b.Logf("global batch %d: 1 process %.1f images/s, 2 processes %.1f images/s, speed-up %.2f",
		2*perRank, oneRate, twoRate, twoRate/oneRate)
	b.ReportMetric(oneRate, "1proc_images/s")
	b.ReportMetric(twoRate, "2proc_images/s")
	b.ReportMetric(twoRate/oneRate, "speedup")
	if share, ok := commShare(ranks[0].Out.String()); ok {
		b.ReportMetric(share, "allreduce_%")
	}
}

// trainRate is the median images/s of a run's metrics log without its
// first record.
func trainRate(b *testing.B, run string) float64 {
	b.Helper()
	records, err := readMetrics(filepath.Join(run, metricsFile))
	if err != nil {
		b.Fatal(err)
	}
	var rates []float64
	for _, m := range records {
		if m.ImagesPerSec > 0 {
			rates = append(rates, m.ImagesPerSec)
		}
	}
	if len(rates) < 2 {
		b.Fatalf("%s: %d throughput records, want at least 2", run, len(rates))
	}
	rates = rates[1:]
	slices.Sort(rates)
	return rates[len(rates)/2]
}

// commShare reads the all-reduce percentage from rank 0's report, e.g.
// "... waiting for the gradient all-reduce (5.8%); ...".
func commShare(out string) (float64, bool) {
	const key = "all-reduce ("
	_, rest, ok := strings.Cut(lastLine(out, key), key)
	if !ok {
		return 0, false
	}
	share, _, ok := strings.Cut(rest, "%)")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(share, 64)
	return v, err == nil
}
