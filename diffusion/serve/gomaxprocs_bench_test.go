package serve_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// BenchmarkGOMAXPROCS serves the small preset (random weights) over
// loopback HTTP to 16 clients, each sending its next request (DDIM, 20
// steps, one image) when the last is answered, from two workers of one
// thread each: with the engine adding a processor per worker (the default)
// and with GOMAXPROCS left alone (Options.KeepGOMAXPROCS), in rounds of
// 10 s taking turns. It reports the median images/s of each and their
// ratio (above 1: the processors the engine adds pay).
func BenchmarkGOMAXPROCS(b *testing.B) {
	before := torch.NumThreads()
	defer torch.SetNumThreads(before)
	if err := torch.SetNumThreads(1); err != nil {
		b.Fatal(err)
	}
	cfg, err := unet.Preset("small")
	if err != nil {
		b.Fatal(err)
	}
	u, err := unet.New(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	sched, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		b.Fatal(err)
	}
	p, err := pipeline.New(u, sched, pipeline.Info{Channels: cfg.InChannels, Size: cfg.ImageSize}, pipeline.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	round := func(keep bool) float64 {
		e, err := serve.New(p, serve.Options{Workers: 2, KeepGOMAXPROCS: keep})
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		h, err := serve.NewHandler([]serve.Model{{Name: "m", Engine: e}}, serve.HandlerOptions{})
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(h)
		defer srv.Close()
		const clients = 16
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
		defer client.CloseIdleConnections()
		var mu sync.Mutex
		images := 0
		start := time.Now()
		end := start.Add(10 * time.Second)
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Now().Before(end); i++ {
					body := fmt.Sprintf(`{"n": 1, "sampler": "ddim", "steps": 20, "seed": %d}`, c*1_000_000+i)
					resp, err := client.Post(srv.URL+"/v1/images/generations", "application/json", strings.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					mu.Lock()
					images++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return float64(images) / time.Since(start).Seconds()
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
