package sampler

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

func TestParseSamplerOptions(t *testing.T) {
	for in, want := range map[string]Kind{"ddpm": DDPM, " DDIM ": DDIM, "dpmpp-2m": DPMPP2M, "dpmpp_2m": DPMPP2M, "DPM++2M": DPMPP2M} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseKind("euler"); err == nil || !strings.Contains(err.Error(), "ddpm, ddim, dpmpp-2m") {
		t.Errorf("ParseKind(euler) error %v, want one that lists the samplers", err)
	}
	for in, want := range map[string]Variance{"fixed-small": FixedSmall, "fixed_large": FixedLarge, "small": FixedSmall} {
		if got, err := ParseVariance(in); err != nil || got != want {
			t.Errorf("ParseVariance(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseVariance("learned"); err == nil {
		t.Error("ParseVariance accepted learned")
	}
	for in, want := range map[string]Clip{"none": ClipNone, "clip": ClipStatic, "static": ClipStatic, "Dynamic": ClipDynamic} {
		if got, err := ParseClip(in); err != nil || got != want {
			t.Errorf("ParseClip(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"tanh", ""} {
		if _, err := ParseClip(bad); err == nil {
			t.Errorf("ParseClip accepted %q", bad)
		}
	}
}

// DefaultSteps is bounded by a short schedule's T and names an unknown
// sampler (TestSamplerVisitsTimesteps checks it against the steps taken).
func TestDefaultSteps(t *testing.T) {
	for _, tc := range []struct {
		k       Kind
		T, want int
	}{{DDPM, 30, 30}, {DDIM, 30, 30}, {DDIM, 1000, DefaultDDIMSteps}, {DPMPP2M, 10, 10}, {DPMPP2M, 1000, DefaultDPMSolverSteps}} {
		if got, err := DefaultSteps(tc.k, tc.T); err != nil || got != tc.want {
			t.Errorf("DefaultSteps(%s, %d) = %d, %v; want %d", tc.k, tc.T, got, err, tc.want)
		}
	}
	if _, err := DefaultSteps("euler", 1000); err == nil || !strings.Contains(err.Error(), "euler") {
		t.Errorf("an unknown sampler: %v", err)
	}
}

// Invalid options fail before any model call, with a message that says why.
func TestSampleOptionsValidation(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	ls := torch.NewScope(torch.Inference)
	defer ls.Close()
	labels := ls.FromInt64s([]int64{0, 1}, 2)
	badLabels := ls.FromInt64s([]int64{0, 1, 1}, 3)
	tests := []struct {
		o    Options
		want string
	}{
		{Options{Steps: 1001}, "steps 1001 out of range [1, 1000]"},
		{Options{Sampler: DDIM, Steps: -3}, "steps -3 out of range [1, 1000]"},
		{Options{Sampler: DDIM, Eta: 1.5}, "eta 1.5 out of range [0, 1]"},
		{Options{Sampler: DDIM, Eta: -0.1}, "eta -0.1 out of range [0, 1]"},
		{Options{Sampler: DDIM, Guidance: 3}, "guidance needs class labels (the model is unconditional?)"},
		{Options{Sampler: DDIM, Guidance: -1, Labels: labels}, "guidance weight -1"},
		{Options{Sampler: "euler"}, `unknown sampler "euler"`},
		{Options{Variance: "learned"}, `unknown variance "learned"`},
		{Options{Target: "score"}, `unknown target "score"`},
		{Options{Clip: "tanh"}, `unknown clip mode "tanh"`},
		{Options{Clip: ClipDynamic, DynamicPercentile: 1.5}, "percentile 1.5 out of range"},
		{Options{Sampler: DDIM, Spacing: "cubic"}, `unknown timestep spacing "cubic"`},
		{Options{Sampler: DDIM, Labels: badLabels}, "labels are int64 [3], want int64 [2]"},
		{Options{Sampler: DDPM, Steps: 10}, "needs a generator"},
	}
	x := sampleNoise(t, 1, 2, 1, 2, 2)
	for _, tc := range tests {
		m, _ := sampleMockModel(t, 0, nil)
		out, err := Sample(context.Background(), m, x, sc, nil, tc.o)
		if err == nil {
			out.Close()
			t.Errorf("%+v: no error, want %q", tc.o, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %q, want it to contain %q", tc.o, err, tc.want)
		}
	}
	// A model whose output has the wrong shape is reported as such.
	bad := &sampleFuncModel{f: func(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
		return s.Zeros([]int64{1}, torch.Float64, torch.CPU)
	}}
	if _, err := Sample(context.Background(), bad, x, sc, nil, Options{Sampler: DDIM}); err == nil ||
		!strings.Contains(err.Error(), "model output has shape [1], want [2 1 2 2]") {
		t.Errorf("wrong output shape: error %v", err)
	}
}

// sampleFuncModel is a diffusion.Model made of a function of x.
type sampleFuncModel struct {
	f func(s *torch.Scope, x *torch.Tensor) *torch.Tensor
}

func (m *sampleFuncModel) Forward(s *torch.Scope, x, _, _ *torch.Tensor) *torch.Tensor {
	return m.f(s, x)
}

// Sampling keeps nothing alive between steps: after closing the result,
// the number of live tensors is what it was, for every sampler, with
// guidance and with clipping.
func TestSampleMemoryFlat(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	ls := torch.NewScope(torch.Inference)
	defer ls.Close()
	labels := ls.FromInt64s([]int64{0, 1, 0, 1}, 4)
	x := sampleNoise(t, 1, 4, 1, 3, 3)
	gen := sampleGenerator(t, 5)
	for _, o := range []Options{
		{Sampler: DDPM, Steps: 50},
		{Sampler: DDIM, Steps: 50, Eta: 0.5, Clip: ClipStatic},
		{Sampler: DPMPP2M, Steps: 50, Spacing: diffusion.SpacingLinspace, Clip: ClipDynamic},
		{Sampler: DPMPP2M, Steps: 50, Spacing: diffusion.SpacingTrailing, Guidance: 4, Labels: labels, NullLabel: 2, Target: diffusion.V},
	} {
		oracle := &sampleMixtureOracle{sc: sc, m: 0.5, s: 0.3, target: o.Target}
		if o.Target == "" {
			oracle.target = diffusion.Epsilon
		}
		before := torch.LiveTensors()
		maxLive := before
		o.Callback = func(_, _, _ int, _, _ *torch.Tensor) error {
			maxLive = max(maxLive, torch.LiveTensors())
			return nil
		}
		out, err := Sample(context.Background(), oracle, x, sc, gen, o)
		if err != nil {
			t.Fatal(err)
		}
		out.Close()
		if after := torch.LiveTensors(); after != before {
			t.Errorf("%s: %d live tensors before sampling, %d after closing the result", o.Sampler, before, after)
		}
		if maxLive-before > 100 {
			t.Errorf("%s: up to %d tensors alive during a step", o.Sampler, maxLive-before)
		}
	}
}

// Randomness comes only from the generator: the same seed gives the same
// samples, another seed other samples, and the initial noise is left as it
// was. Deterministic samplers need no generator.
func TestSampleSeed(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	oracle := &sampleGaussianOracle{sc: sc, mu: sampleMu, s: sampleSigma, target: diffusion.Epsilon}
	x := sampleNoise(t, 1, 3, 1, 4, 4)
	x0 := values(t, x)
	run := func(seed uint64, o Options) []float64 {
		var g *torch.Generator
		if seed != 0 {
			g = sampleGenerator(t, seed)
		}
		out, err := Sample(context.Background(), oracle, x, sc, g, o)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		return values(t, out)
	}
	for _, o := range []Options{{Sampler: DDPM, Steps: 30}, {Sampler: DDIM, Steps: 30, Eta: 1}} {
		a, b, c := run(7, o), run(7, o), run(8, o)
		if !slices.Equal(a, b) {
			t.Errorf("%s: same seed, different samples", o.Sampler)
		}
		if slices.Equal(a, c) {
			t.Errorf("%s: different seeds, same samples", o.Sampler)
		}
	}
	for _, o := range []Options{{Sampler: DDIM, Steps: 30}, {Sampler: DPMPP2M}} {
		if a, b := run(0, o), run(0, o); !slices.Equal(a, b) {
			t.Errorf("%s: deterministic sampler differs between runs", o.Sampler)
		}
	}
	if !slices.Equal(values(t, x), x0) {
		t.Error("Sample modified the initial noise")
	}
}

// The update runs in the dtype of x: float32 noise gives float32 samples of
// the right distribution.
func TestSampleFloat32(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	oracle := &sampleGaussianOracle{sc: sc, mu: sampleMu, s: sampleSigma, target: diffusion.V}
	g := sampleGenerator(t, 3)
	out, err := SampleShape(context.Background(), oracle, []int64{1000, 1, 4, 4}, torch.Float32, sc, g,
		Options{Sampler: DPMPP2M, Target: diffusion.V})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if out.DType() != torch.Float32 {
		t.Fatalf("result is %s, want float32", out.DType())
	}
	mean, std := sampleMoments(t, out)
	exact := sampleExact(t, sc, Options{Sampler: DPMPP2M})
	sampleCheckExact(t, mean, std, 16000, exact)
}

// Static clipping keeps every predicted x_0, and so the samples, in
// [-1, 1], even when the data lie outside.
func TestSampleClipStatic(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	for _, kind := range []Kind{DDPM, DDIM, DPMPP2M} {
		oracle := &sampleGaussianOracle{sc: sc, mu: 1.5, s: 0.5, target: diffusion.X0}
		var worst float64
		o := Options{Sampler: kind, Steps: 20, Target: diffusion.X0, Clip: ClipStatic,
			Callback: func(_, _, _ int, _, x0 *torch.Tensor) error {
				for _, v := range values(t, x0) {
					worst = max(worst, math.Abs(v))
				}
				return nil
			}}
		out, err := Sample(context.Background(), oracle, sampleNoise(t, 2, 500, 1, 1, 1), sc, sampleGenerator(t, 1), o)
		if err != nil {
			t.Fatal(err)
		}
		v := values(t, out)
		out.Close()
		if worst > 1 {
			t.Errorf("%s: predicted x0 reached %g", kind, worst)
		}
		if lo, hi := slices.Min(v), slices.Max(v); lo < -1-1e-12 || hi > 1+1e-12 {
			t.Errorf("%s: samples in [%g, %g]", kind, lo, hi)
		}
		if m, _ := sampleMoments(t, sampleTensor(t, v)); m < 0.8 {
			t.Errorf("%s: clipped samples have mean %g; the data's mass is near 1", kind, m)
		}
	}
}

func sampleTensor(t *testing.T, v []float64) *torch.Tensor {
	t.Helper()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := s.FromFloat64s(v, int64(len(v)))
	t.Cleanup(x.Close)
	return s.Keep(x)
}

// Dynamic thresholding (Saharia et al. 2022) scales each sample by its own
// percentile of |x0|, never by less than 1.
func TestSampleDynamicThreshold(t *testing.T) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	// Sample 0 lies in [-1, 1] and stays as it is. Sample 1's elements are
	// 0.5, -1, 2, -4, whose 0.75-quantile of |x| is 2 + 0.25 (4 - 2) = 2.5.
	x0 := s.FromFloat64s([]float64{0.5, -0.25, 1, -1, 0.5, -1, 2, -4}, 2, 1, 2, 2)
	got := values(t, dynamicThreshold(s, x0, 0.75))
	want := []float64{0.5, -0.25, 1, -1, 0.5 / 2.5, -1 / 2.5, 2 / 2.5, -1}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("thresholded %v, want %v", got, want)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if q := quantile([]float64{3, 1, 2}, 0.5); q != 2 {
		t.Errorf("median of 3, 1, 2 = %g", q)
	}
	if q := quantile([]float64{5}, 0.995); q != 5 {
		t.Errorf("quantile of one value = %g", q)
	}
}

// With a zero-terminal-SNR schedule the first step is pure noise; a v or
// x0 model samples fine from it.
func TestSampleZeroTerminalSNR(t *testing.T) {
	cfg := diffusion.DefaultScheduleConfig()
	cfg.ZeroTerminalSNR = true
	sc := mustSchedule(t, cfg)
	for _, kind := range []Kind{DDPM, DDIM, DPMPP2M} {
		oracle := &sampleGaussianOracle{sc: sc, mu: sampleMu, s: sampleSigma, target: diffusion.V}
		out, err := Sample(context.Background(), oracle, sampleNoise(t, 1, 2000, 1, 1, 1), sc, sampleGenerator(t, 1),
			Options{Sampler: kind, Steps: 25, Spacing: diffusion.SpacingTrailing, Target: diffusion.V})
		if err != nil {
			t.Fatal(err)
		}
		mean, std := sampleMoments(t, out)
		out.Close()
		if math.IsNaN(mean) || math.Abs(mean-sampleMu) > 0.05 || math.Abs(std-sampleSigma) > 0.1 {
			t.Errorf("%s: mean %g, std %g", kind, mean, std)
		}
	}
}
