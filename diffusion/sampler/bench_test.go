package sampler

import (
	"context"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

// BenchmarkSampleDDIM measures the sampler's own overhead: 50 DDIM steps on
// a batch of 16 3x32x32 float32 images, driven by the closed-form Gaussian
// oracle in place of a network.
func BenchmarkSampleDDIM(b *testing.B) {
	sc, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		b.Fatal(err)
	}
	g, err := torch.NewGenerator(1, torch.CPU)
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	oracle := &sampleGaussianOracle{sc: sc, mu: sampleMu, s: sampleSigma, target: diffusion.Epsilon}
	o := Options{Sampler: DDIM, Steps: 50}
	b.ReportAllocs()
	for b.Loop() {
		out, err := SampleShape(context.Background(), oracle, []int64{16, 3, 32, 32}, torch.Float32, sc, g, o)
		if err != nil {
			b.Fatal(err)
		}
		out.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*o.Steps), "us/step")
}
