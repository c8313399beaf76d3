package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/diffusion/serve/api"
	"github.com/ddpm-go/ddpm/torch"
)

// BenchmarkGOMAXPROCS loads a loopback server of the small preset (random
// weights) as loadtest does, 16 clients each sending its next request
// (DDIM, 20 steps, one image) when the last is answered, served by two
// workers of one thread each: with the engine adding a processor per
// worker (the default) and with GOMAXPROCS left alone
// (serve.Options.KeepGOMAXPROCS), in rounds of 10 s taking turns. It
// reports the median images/s of each and their ratio (above 1: the
// processors the engine adds pay).
func BenchmarkGOMAXPROCS(b *testing.B) {
	before := torch.NumThreads()
	defer torch.SetNumThreads(before)
	if err := torch.SetNumThreads(1); err != nil {
		b.Fatal(err)
	}
	p, closeModel, err := presetPipeline("small", pipeline.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer closeModel()
	const clients = 16
	n := 1
	req := api.GenerationRequest{N: &n, Sampler: "ddim", Steps: 20}
	round := func(keep bool) float64 {
		_, url, stop, err := serveLoopback(p, serve.Options{Workers: 2, KeepGOMAXPROCS: keep, QueueSize: 4 * clients})
		if err != nil {
			b.Fatal(err)
		}
		defer stop()
		l, err := loadAt(context.Background(), url, "", req, clients, 10*time.Second)
		if err != nil || l.Errors > 0 {
			b.Fatalf("%v; %d of %d requests failed, first: %s", err, l.Errors, l.Requests, l.FirstError)
		}
		return l.ImagesPerS
	}
	var added, kept []float64
	for range max(b.N, 3) {
		added = append(added, round(false))
		kept = append(kept, round(true))
	}
	med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	a, k := med(added), med(kept)
	b.Logf("images/s with a processor per worker added %.2f, GOMAXPROCS left alone %.2f (medians of %d rounds)", a, k, len(added))
	b.ReportMetric(1e9/a, "ns/op") // an image's share of the default's time
	b.ReportMetric(a, "added_images/s")
	b.ReportMetric(k, "kept_images/s")
	b.ReportMetric(a/k, "added/kept")
}
