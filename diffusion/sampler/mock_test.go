package sampler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
	"go.uber.org/mock/gomock"
)

// sampleCall is what one Forward call of a mocked model received.
type sampleCall struct {
	shape  []int64
	t      []int64
	labels *torch.Tensor
	lab    []int64 // labels' values, nil when labels is nil
}

// sampleMockModel returns a mocked model that expects exactly calls Forward
// calls and records them. Each call returns out(s, x, labels), or zeros
// like x when out is nil.
func sampleMockModel(t *testing.T, calls int, out func(s *torch.Scope, x, labels *torch.Tensor) *torch.Tensor) (*MockModel, *[]sampleCall) {
	t.Helper()
	m := NewMockModel(gomock.NewController(t))
	var rec []sampleCall
	m.EXPECT().Forward(gomock.Not(gomock.Nil()), gomock.Not(gomock.Nil()), gomock.Not(gomock.Nil()), gomock.Any()).
		DoAndReturn(func(s *torch.Scope, x, tt, labels *torch.Tensor) *torch.Tensor {
			ts, err := tt.Int64s()
			if err != nil {
				t.Errorf("timesteps: %v", err)
			}
			c := sampleCall{shape: x.Shape(), t: ts, labels: labels}
			if labels != nil {
				if c.lab, err = labels.Int64s(); err != nil {
					t.Errorf("labels: %v", err)
				}
			}
			rec = append(rec, c)
			if out != nil {
				return out(s, x, labels)
			}
			return s.Zeros(x.Shape(), x.DType(), x.Device())
		}).Times(calls)
	return m, &rec
}

// sampleNoise is float64 noise of shape from seed, owned by the test.
func sampleNoise(t *testing.T, seed uint64, shape ...int64) *torch.Tensor {
	t.Helper()
	g, err := torch.NewGenerator(seed, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := s.Randn(shape, torch.Float64, torch.CPU, g)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Close)
	return s.Keep(x)
}

func sampleGenerator(t *testing.T, seed uint64) *torch.Generator {
	t.Helper()
	g, err := torch.NewGenerator(seed, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// Each sampler calls the model once per step, at the timesteps its spacing
// picks, noisiest first, with one timestep for the whole batch. Linspace
// and trailing start at the last trained timestep T-1; leading does not.
func TestSamplerVisitsTimesteps(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	tests := []struct {
		o           Options
		steps       int
		first, last int
	}{
		{Options{Sampler: DDPM}, 1000, 999, 0},
		{Options{Sampler: DDPM, Steps: 100, Spacing: diffusion.SpacingTrailing}, 100, 999, 9},
		{Options{Sampler: DDIM}, 50, 999, 0},
		{Options{Sampler: DDIM, Steps: 50, Spacing: diffusion.SpacingTrailing}, 50, 999, 19},
		{Options{Sampler: DDIM, Steps: 50, Spacing: diffusion.SpacingLeading}, 50, 980, 0},
		{Options{Sampler: DDIM, Steps: 20, Spacing: diffusion.SpacingLinspace}, 20, 999, 0},
		{Options{Sampler: DDIM, Steps: 100, Spacing: diffusion.SpacingLeading}, 100, 990, 0},
		{Options{Sampler: DDIM, Steps: 15, Spacing: diffusion.SpacingKarras}, 15, 999, 0},
		{Options{Sampler: DPMPP2M}, 20, 999, 0},
		{Options{Sampler: DPMPP2M, Steps: 10, Spacing: diffusion.SpacingKarras}, 10, 999, 0},
		{Options{Sampler: DPMPP2M, Steps: 12, Spacing: diffusion.SpacingTrailing}, 12, 999, 82},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s-%d-%s", tc.o.Sampler, tc.o.Steps, tc.o.Spacing), func(t *testing.T) {
			m, calls := sampleMockModel(t, tc.steps, nil)
			x := sampleNoise(t, 1, 3, 1, 2, 2)
			out, err := Sample(context.Background(), m, x, sc, sampleGenerator(t, 2), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			out.Close()
			cfg, _ := tc.o.resolve(sc)
			want, err := sc.Timesteps(tc.steps, cfg.Spacing)
			if err != nil {
				t.Fatal(err)
			}
			if want[0] != tc.first || want[len(want)-1] != tc.last {
				t.Errorf("%s spacing runs %d..%d, want %d..%d", cfg.Spacing, want[0], want[len(want)-1], tc.first, tc.last)
			}
			var got []int
			for i, c := range *calls {
				if !slices.Equal(c.shape, []int64{3, 1, 2, 2}) || len(c.t) != 3 || c.t[0] != c.t[1] || c.t[1] != c.t[2] || c.labels != nil {
					t.Fatalf("call %d got x %v, t %v, labels %v; want x [3 1 2 2], one t for all, no labels", i, c.shape, c.t, c.labels)
				}
				got = append(got, int(c.t[0]))
			}
			if !slices.Equal(got, want) {
				t.Errorf("visited %v, want %v", got, want)
			}
			if n, err := DefaultSteps(tc.o.Sampler, sc.T()); tc.o.Steps == 0 && (err != nil || n != len(got)) {
				t.Errorf("DefaultSteps: %d, %v; the sampler took %d", n, err, len(got))
			}
		})
	}
}

// Guidance runs both branches in one batched call of 2N per step: x twice,
// the labels followed by N null labels; the outputs combine as
// out(∅) + w (out(c) - out(∅)).
func TestSampleGuidanceBatchesBranches(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	const w, null = 3.0, 10
	// The mock predicts ε = 1 for the conditional rows and 0 for the null
	// ones, so the guided ε is w everywhere.
	m, calls := sampleMockModel(t, 4, func(s *torch.Scope, x, labels *torch.Tensor) *torch.Tensor {
		isNull := s.Reshape(s.EqScalar(labels, null), -1, 1, 1, 1)
		return s.Expand(s.Where(isNull, s.Zeros([]int64{1}, x.DType(), x.Device()), s.Ones([]int64{1}, x.DType(), x.Device())), x.Shape()...)
	})
	ls := torch.NewScope(torch.Inference)
	defer ls.Close()
	labels := ls.FromInt64s([]int64{0, 1, 0}, 3)
	x := sampleNoise(t, 1, 3, 1, 2, 2)
	xv := values(t, x)
	var firstX0 []float64
	o := Options{Sampler: DDIM, Steps: 4, Guidance: w, Labels: labels, NullLabel: null,
		Callback: func(step, _, _ int, _, x0 *torch.Tensor) error {
			if step == 0 {
				firstX0 = values(t, x0)
			}
			return nil
		}}
	out, err := Sample(context.Background(), m, x, sc, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	out.Close()
	for i, c := range *calls {
		if !slices.Equal(c.shape, []int64{6, 1, 2, 2}) || !slices.Equal(c.lab, []int64{0, 1, 0, null, null, null}) {
			t.Fatalf("call %d: x %v, labels %v; want x [6 1 2 2] and labels [0 1 0 %d %d %d]", i, c.shape, c.lab, null, null, null)
		}
		if slices.Min(c.t) != slices.Max(c.t) || len(c.t) != 6 {
			t.Fatalf("call %d: timesteps %v", i, c.t)
		}
	}
	// x̂_0 = (x_T - b ε)/a at t = 999 with ε = w.
	a, b := sc.SqrtAlphasCumprod()[999], sc.SqrtOneMinusAlphasCumprod()[999]
	for i := range xv {
		if want := (xv[i] - b*w) / a; math.Abs(firstX0[i]-want) > 1e-9*math.Abs(want) {
			t.Fatalf("x0[%d] = %g, want %g", i, firstX0[i], want)
		}
	}
}

// Guidance 0 (unset) and 1 both mean one plain call per step with the
// caller's labels.
func TestSampleGuidanceOneIsConditional(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	ls := torch.NewScope(torch.Inference)
	defer ls.Close()
	labels := ls.FromInt64s([]int64{4, 2}, 2)
	for _, w := range []float64{0, 1} {
		m, calls := sampleMockModel(t, 5, nil)
		out, err := Sample(context.Background(), m, sampleNoise(t, 1, 2, 1, 1, 1), sc, nil,
			Options{Sampler: DPMPP2M, Steps: 5, Guidance: w, Labels: labels, NullLabel: 9})
		if err != nil {
			t.Fatal(err)
		}
		out.Close()
		for _, c := range *calls {
			if c.shape[0] != 2 || c.labels != labels {
				t.Fatalf("w = %g: batch %d, labels %v; want 2 and the caller's labels", w, c.shape[0], c.lab)
			}
		}
	}
}

// The callback sees every step in order, with the timestep and tensors of
// the sample's shape; its error stops sampling.
func TestSampleCallback(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	m, _ := sampleMockModel(t, 10, nil)
	want, _ := sc.Timesteps(10, diffusion.SpacingTrailing)
	var steps, ts []int
	o := Options{Sampler: DDIM, Steps: 10, Spacing: diffusion.SpacingTrailing,
		Callback: func(step, total, tt int, xt, x0 *torch.Tensor) error {
			if total != 10 || !slices.Equal(xt.Shape(), []int64{2, 3, 4, 4}) || !slices.Equal(x0.Shape(), []int64{2, 3, 4, 4}) {
				t.Errorf("step %d: total %d, x_t %v, x0 %v", step, total, xt, x0)
			}
			steps, ts = append(steps, step), append(ts, tt)
			return nil
		}}
	out, err := Sample(context.Background(), m, sampleNoise(t, 1, 2, 3, 4, 4), sc, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	out.Close()
	if !slices.Equal(steps, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) || !slices.Equal(ts, want) {
		t.Errorf("callback saw steps %v at %v, want 0..9 at %v", steps, ts, want)
	}

	stop := errors.New("enough")
	m, _ = sampleMockModel(t, 3, nil)
	o.Callback = func(step, _, _ int, _, _ *torch.Tensor) error {
		if step == 2 {
			return stop
		}
		return nil
	}
	before := torch.LiveTensors()
	if _, err := Sample(context.Background(), m, sampleNoise(t, 1, 2, 3, 4, 4), sc, nil, o); !errors.Is(err, stop) {
		t.Fatalf("error %v, want the callback's", err)
	}
	if d := torch.LiveTensors() - before; d != 1 { // the noise, freed at cleanup
		t.Errorf("%d tensors left after the callback stopped sampling, want 1", d)
	}
}

// Cancelling the context stops sampling before the next step.
func TestSampleCancel(t *testing.T) {
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, _ := sampleMockModel(t, 3, nil)
	o := Options{Sampler: DDPM, Steps: 100,
		Callback: func(step, _, _ int, _, _ *torch.Tensor) error {
			if step == 2 {
				cancel()
			}
			return nil
		}}
	x := sampleNoise(t, 1, 2, 1, 4, 4)
	before := torch.LiveTensors()
	if _, err := Sample(ctx, m, x, sc, sampleGenerator(t, 1), o); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := torch.LiveTensors() - before; d != 0 {
		t.Errorf("%d tensors leaked by the cancelled run", d)
	}

	// Already cancelled: no model call at all.
	m, _ = sampleMockModel(t, 0, nil)
	if _, err := Sample(ctx, m, x, sc, sampleGenerator(t, 1), Options{Sampler: DDIM}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}
