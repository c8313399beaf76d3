package sampler

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

// The data of the moment tests: x_0 ~ N(0.5, 0.3²), linear schedule, T = 1000.
const (
	sampleMu    = 0.5
	sampleSigma = 0.3
)

var sampleTargets = []diffusion.Target{diffusion.Epsilon, diffusion.X0, diffusion.V}

// sampleOracleRun drives Sample with the Gaussian oracle predicting target
// from float64 noise of the given shape and returns the mean and standard
// deviation of all output elements (iid for this problem) and the number
// of model calls.
func sampleOracleRun(t *testing.T, sc *diffusion.Schedule, target diffusion.Target, o Options, shape []int64, seed uint64) (mean, std float64, calls int) {
	t.Helper()
	gen, err := torch.NewGenerator(seed, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	oracle := &sampleGaussianOracle{sc: sc, mu: sampleMu, s: sampleSigma, target: target}
	o.Target = target
	out, err := SampleShape(context.Background(), oracle, shape, torch.Float64, sc, gen, o)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	mean, std = sampleMoments(t, out)
	return mean, std, oracle.calls
}

// sampleExact is the exact output distribution of the sampler of o (with
// its defaults filled in) on the Gaussian problem.
func sampleExact(t *testing.T, sc *diffusion.Schedule, o Options) sampleGauss {
	t.Helper()
	cfg, err := o.resolve(sc)
	if err != nil {
		t.Fatal(err)
	}
	switch cfg.Sampler {
	case DDPM:
		return sampleExactDDPM(sc, cfg.timesteps, cfg.Variance == FixedLarge, sampleMu, sampleSigma)
	case DDIM:
		return sampleExactDDIM(sc, cfg.timesteps, cfg.Eta, sampleMu, sampleSigma)
	default:
		return sampleExactDPMSolver(sc, cfg.timesteps, sampleMu, sampleSigma)
	}
}

// sampleCheckExact fails unless the empirical mean and std of n iid
// samples agree with the exact Gaussian g within 4.5 standard errors:
// σ/sqrt(n) for the mean and σ/sqrt(2(n-1)) for the std.
func sampleCheckExact(t *testing.T, mean, std float64, n int64, g sampleGauss) {
	t.Helper()
	seMean := g.std() / math.Sqrt(float64(n))
	seStd := g.std() / math.Sqrt(2*float64(n-1))
	t.Logf("mean %.4f, std %.4f; exact %.4f, %.4f; off by %+.1f and %+.1f standard errors",
		mean, std, g.mean, g.std(), (mean-g.mean)/seMean, (std-g.std())/seStd)
	if d := math.Abs(mean - g.mean); d > 4.5*seMean {
		t.Errorf("mean %.5f, exact %.5f: off by %.1f standard errors", mean, g.mean, d/seMean)
	}
	if d := math.Abs(std - g.std()); d > 4.5*seStd {
		t.Errorf("std %.5f, exact %.5f: off by %.1f standard errors", std, g.std(), d/seStd)
	}
}

// With enough steps every sampler driven by the optimal model reproduces
// the data distribution N(0.5, 0.3²). The reference figures (final std)
// come from an independent float64 run; the exact moments of the same
// discrete chain are checked as well.
func TestSampleConvergence(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	shape := []int64{25000, 1, 2, 2} // 100000 iid elements
	n := int64(100000)
	tests := []struct {
		name      string
		o         Options
		target    diffusion.Target
		refStd    float64
		wantCalls int
	}{
		{"ddpm-1000-fixed-small", Options{Sampler: DDPM, Variance: FixedSmall}, diffusion.Epsilon, 0.296, 1000},
		{"ddpm-1000-fixed-large", Options{Sampler: DDPM, Variance: FixedLarge}, diffusion.V, 0.302, 1000},
		{"ddim-1000-eta0", Options{Sampler: DDIM, Steps: 1000}, diffusion.X0, 0.299, 1000},
		{"dpmpp-2m-20-logsnr", Options{Sampler: DPMPP2M, Steps: 20, Spacing: diffusion.SpacingLogSNR}, diffusion.Epsilon, 0.304, 20},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mean, std, calls := sampleOracleRun(t, sc, tc.target, tc.o, shape, uint64(100+i))
			exact := sampleExact(t, sc, tc.o)
			t.Logf("%s model: std %.4f, reference %.3f", tc.target, std, tc.refStd)
			if calls != tc.wantCalls {
				t.Errorf("%d model calls, want %d", calls, tc.wantCalls)
			}
			if math.Abs(std-tc.refStd) > 0.005 {
				t.Errorf("std %.4f, reference %.3f", std, tc.refStd)
			}
			if math.Abs(mean-sampleMu) > 0.005 {
				t.Errorf("mean %.4f, data mean %.3f", mean, sampleMu)
			}
			if math.Abs(exact.std()-tc.refStd) > 0.0015 {
				t.Errorf("exact std %.4f, reference %.3f", exact.std(), tc.refStd)
			}
			sampleCheckExact(t, mean, std, n, exact)
		})
	}
}

// Few-step samplers are biased on the Gaussian problem, but each one is an
// exact, affine-Gaussian chain: the samples must follow the exact moments
// of the same discrete steps, for every spacing and every target.
func TestSampleExactFewSteps(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	shape := []int64{25000, 1, 2, 2}
	n := int64(100000)
	tests := []struct {
		o      Options
		refStd float64 // from the float64 reference run; 0: none
	}{
		{Options{Sampler: DDIM, Steps: 50, Spacing: diffusion.SpacingLinspace}, 0.275},
		{Options{Sampler: DDIM, Steps: 20, Spacing: diffusion.SpacingTrailing, Eta: 1}, 0},
		{Options{Sampler: DDIM, Steps: 25, Spacing: diffusion.SpacingLeading, Eta: 0.5}, 0},
		{Options{Sampler: DDIM, Steps: 10, Spacing: diffusion.SpacingKarras}, 0},
		{Options{Sampler: DDPM, Steps: 50, Spacing: diffusion.SpacingTrailing}, 0},
		{Options{Sampler: DDPM, Steps: 10, Spacing: diffusion.SpacingLeading, Variance: FixedLarge}, 0},
		{Options{Sampler: DPMPP2M, Steps: 20, Spacing: diffusion.SpacingLinspace}, 0.389},
		{Options{Sampler: DPMPP2M, Steps: 10, Spacing: diffusion.SpacingKarras}, 0},
		{Options{Sampler: DPMPP2M, Steps: 15, Spacing: diffusion.SpacingTrailing}, 0},
		{Options{Sampler: DPMPP2M, Steps: 8, Spacing: diffusion.SpacingLeading}, 0},
	}
	seed := uint64(1000)
	for _, tc := range tests {
		exact := sampleExact(t, sc, tc.o)
		if tc.refStd != 0 && math.Abs(exact.std()-tc.refStd) > 0.0015 {
			t.Errorf("%+v: exact std %.4f, reference %.3f", tc.o, exact.std(), tc.refStd)
		}
		for _, target := range sampleTargets {
			name := fmt.Sprintf("%s-%d-%s-eta%g-%s-%s", tc.o.Sampler, tc.o.Steps, tc.o.Spacing, tc.o.Eta, tc.o.Variance, target)
			t.Run(name, func(t *testing.T) {
				seed++
				mean, std, calls := sampleOracleRun(t, sc, target, tc.o, shape, seed)
				if calls != tc.o.Steps {
					t.Errorf("%d model calls, want %d", calls, tc.o.Steps)
				}
				sampleCheckExact(t, mean, std, n, exact)
			})
		}
	}
}

// DPM-Solver++ at its default spacing works for step counts where rounding
// the log-SNR targets to integer timesteps used to collide (cosine: above 8
// steps; linear: 39 and more), and its chain still lands on the data
// distribution N(0.5, 0.3²) of the Gaussian oracle.
func TestDPMSolverDefaultSpacingManySteps(t *testing.T) {
	shape := []int64{25000, 1, 2, 2}
	for _, c := range []struct {
		kind  diffusion.ScheduleKind
		steps int
	}{{diffusion.Cosine, 20}, {diffusion.Cosine, 50}, {diffusion.Linear, 50}, {diffusion.Linear, 200}} {
		t.Run(fmt.Sprintf("%s-%d", c.kind, c.steps), func(t *testing.T) {
			sc := mustSchedule(t, diffusion.ScheduleConfig{Kind: c.kind})
			o := Options{Sampler: DPMPP2M, Steps: c.steps}
			exact := sampleExact(t, sc, o)
			t.Logf("exact chain: mean %.4f, std %.4f (data 0.5, 0.3)", exact.mean, exact.std())
			if math.Abs(exact.std()-0.3) > 0.01 || math.Abs(exact.mean-0.5) > 0.01 {
				t.Errorf("exact chain mean %.4f, std %.4f; data 0.5, 0.3", exact.mean, exact.std())
			}
			mean, std, _ := sampleOracleRun(t, sc, diffusion.Epsilon, o, shape, 77)
			sampleCheckExact(t, mean, std, 100000, exact)
		})
	}
}
