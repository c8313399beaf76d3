package diffusers

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/internal/fixture"
	"github.com/ddpm-go/ddpm/torch"
)

// schedulerFixture is one folder of schedulers/: its config and the
// tensors of steps.safetensors.
type schedulerFixture struct {
	cfg     SchedulerConfig
	tensors map[string]*torch.Tensor
}

func loadSchedulerFixture(t *testing.T, s *torch.Scope, name string) schedulerFixture {
	t.Helper()
	dir := filepath.Join(fixture.Diffusers(t), "schedulers", name)
	cfg, err := ReadSchedulerConfig(filepath.Join(dir, "scheduler_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	ts, _, err := s.LoadSafetensors(filepath.Join(dir, "steps.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	return schedulerFixture{cfg: cfg, tensors: ts}
}

func (f schedulerFixture) get(t *testing.T, name string) *torch.Tensor {
	t.Helper()
	x, ok := f.tensors[name]
	if !ok {
		t.Fatalf("steps.safetensors has no %q", name)
	}
	return x
}

func (f schedulerFixture) float64s(t *testing.T, name string) []float64 {
	t.Helper()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	v, err := s.ToDType(f.get(t, name), torch.Float64).Float64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (f schedulerFixture) ints(t *testing.T, name string) []int {
	t.Helper()
	v, err := f.get(t, name).Int64s()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// maxRelDiff is max |got - want| / max(|want|, floor) over the elements.
func maxRelDiff(got, want []float64, floor float64) float64 {
	m := 0.0
	for i := range want {
		m = math.Max(m, math.Abs(got[i]-want[i])/math.Max(math.Abs(want[i]), floor))
	}
	return m
}

// maxScaledDiff is max |got - want| / max |want|: the error relative to
// the tensor's magnitude.
func maxScaledDiff(got, want []float64) float64 {
	scale, m := 0.0, 0.0
	for i := range want {
		scale = math.Max(scale, math.Abs(want[i]))
		m = math.Max(m, math.Abs(got[i]-want[i]))
	}
	return m / scale
}

func float64sOf(t *testing.T, x *torch.Tensor) []float64 {
	t.Helper()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	v, err := s.ToDType(x, torch.Float64).Float64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var schedulerFixtureNames = []string{"ddpm_1", "ddpm_2", "ddim_1", "ddim_2"}

// The project's float64 schedule, built from each fixture's config, equals
// the betas and alphas_cumprod diffusers computes in float32 to float32
// accuracy.
func TestSchedulerScheduleMatchesDiffusers(t *testing.T) {
	for _, name := range schedulerFixtureNames {
		t.Run(name, func(t *testing.T) {
			s := torch.NewScope(torch.Inference)
			defer s.Close()
			f := loadSchedulerFixture(t, s, name)
			cfg, err := f.cfg.Schedule()
			if err != nil {
				t.Fatal(err)
			}
			sc, err := diffusion.NewSchedule(cfg)
			if err != nil {
				t.Fatal(err)
			}
			betas := sc.Betas()
			dBetas := maxRelDiff(betas, f.float64s(t, "betas"), 0)
			if dBetas > 1e-6 {
				t.Errorf("betas differ by %.3g (relative), want <= 1e-6", dBetas)
			}
			// diffusers stores β in float32 and forms α = 1 - β from it,
			// so α carries a relative error of up to 2^-24 β/(1-β): about
			// 1.3e-5 at the cosine schedule's capped β = 0.999. ᾱ_t
			// accumulates those on top of 1e-6.
			got, want := sc.AlphasCumprod(), f.float64s(t, "alphas_cumprod")
			dAC, worst, excess, tol := 0.0, 0, 0.0, 1e-6
			for i := range want {
				tol += 0x1p-24 * betas[i] / (1 - betas[i])
				d := math.Abs(got[i]-want[i]) / want[i]
				if d > dAC {
					dAC, worst = d, i
				}
				excess = math.Max(excess, d/tol)
			}
			t.Logf("max relative difference: betas %.3g, alphas_cumprod %.3g (at t = %d)", dBetas, dAC, worst)
			if excess > 1 {
				t.Errorf("alphas_cumprod differs by up to %.3g times its float32 tolerance", excess)
			}
		})
	}
}

// After set_timesteps(10), diffusers' DDIM visits the project's timesteps
// of the mapped spacing; the DDPM fixtures, which run every training step,
// visit the project's default DDPM timesteps.
func TestSchedulerTimestepsMatchDiffusers(t *testing.T) {
	for _, name := range schedulerFixtureNames {
		t.Run(name, func(t *testing.T) {
			s := torch.NewScope(torch.Inference)
			defer s.Close()
			f := loadSchedulerFixture(t, s, name)
			cfg, _ := f.cfg.Schedule()
			sc, _ := diffusion.NewSchedule(cfg)
			sp, err := f.cfg.spacing()
			if err != nil {
				t.Fatal(err)
			}
			want := f.ints(t, "timesteps")
			got, err := sc.Timesteps(len(want), sp)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s spacing: timesteps %v, diffusers %v", sp, got, want)
			}
		})
	}
}

// stepOptions are the fixture's sampler options, as its config maps them.
func stepOptions(t *testing.T, c SchedulerConfig, steps int) sampler.Options {
	t.Helper()
	o, err := c.SamplerOptions()
	if err != nil {
		t.Fatal(err)
	}
	o.Steps = steps
	return o
}

// Each stored step of diffusers' scheduler.step, from x_t and the model
// output, is the project's Stepper.Step: pred_original_sample and
// prev_sample agree to ~1e-6 of the tensors' magnitude (float32 data;
// diffusers computes its coefficients in float32, the project in float64).
// DDPM steps use the stored noise; its mean and variance are checked too.
func TestSchedulerStepsMatchDiffusers(t *testing.T) {
	const tol = 1e-5
	for _, name := range schedulerFixtureNames {
		t.Run(name, func(t *testing.T) {
			s := torch.NewScope(torch.Inference)
			defer s.Close()
			f := loadSchedulerFixture(t, s, name)
			cfg, _ := f.cfg.Schedule()
			sc, err := diffusion.NewSchedule(cfg)
			if err != nil {
				t.Fatal(err)
			}
			o := stepOptions(t, f.cfg, len(f.ints(t, "timesteps")))
			st, err := sampler.NewStepper(sc, nil, o)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ts := st.Timesteps()
			ddpm := o.Sampler == sampler.DDPM
			for _, tt := range f.ints(t, "chosen_timesteps") {
				i := indexOf(ts, tt)
				if i < 0 {
					t.Fatalf("timestep %d is not visited (%v)", tt, ts)
				}
				key := func(k string) string { return fmt.Sprintf("%s_%d", k, tt) }
				x, out := f.get(t, key("x_t")), f.get(t, key("model_output"))
				var noise *torch.Tensor
				if ddpm {
					noise = f.get(t, key("noise"))
				}
				next, x0, err := st.Step(s, i, x, out, noise)
				if err != nil {
					t.Fatal(err)
				}
				gotNext, gotX0 := float64sOf(t, next), float64sOf(t, x0)
				wantNext, wantX0 := f.float64s(t, key("prev_sample")), f.float64s(t, key("pred_original_sample"))

				dX0, dNext := maxScaledDiff(gotX0, wantX0), maxScaledDiff(gotNext, wantNext)
				t.Logf("t=%d: pred_original_sample %.3g, prev_sample %.3g (max difference / max magnitude)", tt, dX0, dNext)
				tolNext := tol
				if ddpm {
					tolNext = ddpmTolerance(sc, ts, i)
				}
				if dX0 > tol || dNext > tolNext {
					t.Errorf("t=%d: pred_original_sample differs by %.3g, prev_sample by %.3g of their magnitude, want <= %g", tt, dX0, dNext, tol)
				}
				if ddpm {
					checkDDPMMoments(t, s, sc, st, f, i, tt, x, out)
				}
			}
		})
	}
}

// checkDDPMMoments checks diffusers' mean_{t} and variance_{t}: the step
// with zero noise is the mean, and the noise's coefficient squared is the
// variance.
func checkDDPMMoments(t *testing.T, s *torch.Scope, sc *diffusion.Schedule, st *sampler.Stepper, f schedulerFixture, i, tt int, x, out *torch.Tensor) {
	t.Helper()
	zero := s.Zeros(x.Shape(), x.DType(), x.Device())
	mean, _, err := st.Step(s, i, x, out, zero)
	if err != nil {
		t.Fatal(err)
	}
	dMean := maxScaledDiff(float64sOf(t, mean), f.float64s(t, fmt.Sprintf("mean_%d", tt)))
	wantVar := f.float64s(t, fmt.Sprintf("variance_%d", tt))[0]
	if i == len(st.Timesteps())-1 {
		t.Logf("t=%d: mean %.3g (last step: no noise)", tt, dMean)
		if dMean > 1e-5 {
			t.Errorf("t=%d: mean differs by %.3g of its magnitude", tt, dMean)
		}
		return
	}
	ones := s.Add(zero, s.Full([]int64{1}, 1, x.DType(), x.Device()))
	withOne, _, err := st.Step(s, i, x, out, ones)
	if err != nil {
		t.Fatal(err)
	}
	sigma := float64sOf(t, s.Sub(withOne, mean))[0]
	dVar := math.Abs(sigma*sigma-wantVar) / wantVar
	t.Logf("t=%d: mean %.3g, variance %.3g (relative)", tt, dMean, dVar)
	if tol := ddpmTolerance(sc, st.Timesteps(), i); dMean > tol || dVar > tol {
		t.Errorf("t=%d: mean differs by %.3g of its magnitude, variance by %.3g relative", tt, dMean, dVar)
	}
}

// ddpmTolerance is the relative error allowed on diffusers' DDPM mean,
// variance and prev_sample at step i: 1e-5 plus the float32 cancellation
// of diffusers' β_t = 1 - ᾱ_t/ᾱ_prev, an absolute error of up to about
// 2^-24 that is large relative to a small β (about 2e-4 at t = 1 of the
// cosine schedule; the project forms β in float64).
func ddpmTolerance(sc *diffusion.Schedule, ts []int, i int) float64 {
	abarPrev := 1.0
	if i+1 < len(ts) {
		abarPrev = sc.At(ts[i+1]).AlphaCumprod
	}
	beta := 1 - sc.At(ts[i]).AlphaCumprod/abarPrev
	return 1e-5 + 4*0x1p-24/beta
}

func indexOf(ts []int, t int) int {
	for i, v := range ts {
		if v == t {
			return i
		}
	}
	return -1
}

// The model folders' scheduler configs map onto DDPM with fixed-large
// variance, clipping and epsilon prediction, and are written back byte for
// byte; so are the scheduler fixtures.
func TestSchedulerConfigFixtures(t *testing.T) {
	root := fixture.Diffusers(t)
	for _, p := range []string{"unet-ddpm/scheduler/scheduler_config.json", "unet-classcond/scheduler/scheduler_config.json", "ddpm-cifar10-32/scheduler/scheduler_config.json"} {
		c, err := ReadSchedulerConfig(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		o, err := c.SamplerOptions()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		want := sampler.Options{Sampler: sampler.DDPM, Spacing: diffusion.SpacingLeading, Variance: sampler.FixedLarge, Clip: sampler.ClipStatic, Target: diffusion.Epsilon}
		if fmt.Sprint(o) != fmt.Sprint(want) {
			t.Errorf("%s: options %+v, want %+v", p, o, want)
		}
		if err := c.CheckSteps(1000); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	for _, p := range []string{"unet-ddpm/scheduler/scheduler_config.json", "schedulers/ddpm_1/scheduler_config.json", "schedulers/ddpm_2/scheduler_config.json", "schedulers/ddim_1/scheduler_config.json", "schedulers/ddim_2/scheduler_config.json"} {
		raw, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseSchedulerConfig(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := EncodeSchedulerConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, raw) {
			t.Errorf("%s written back differs:\n%s\nwant:\n%s", p, got, raw)
		}
	}
}

// SchedulerConfigFor writes a config that maps back onto the same schedule
// and options, and its file reads back equal.
func TestSchedulerConfigForRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		sc     diffusion.ScheduleConfig
		target diffusion.Target
		o      sampler.Options
	}{
		{diffusion.ScheduleConfig{}, diffusion.Epsilon, sampler.Options{Variance: sampler.FixedLarge, Clip: sampler.ClipStatic}},
		{diffusion.ScheduleConfig{Kind: diffusion.Cosine, T: 400}, diffusion.V, sampler.Options{Spacing: diffusion.SpacingTrailing}},
		{diffusion.ScheduleConfig{Kind: diffusion.ScaledLinear, BetaStart: 0.00085, BetaEnd: 0.012, ZeroTerminalSNR: true}, diffusion.X0, sampler.Options{Clip: sampler.ClipDynamic, DynamicPercentile: 0.9}},
	} {
		c, err := SchedulerConfigFor(tc.sc, tc.target, tc.o)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "scheduler_config.json")
		if err := WriteSchedulerConfig(path, c); err != nil {
			t.Fatal(err)
		}
		back, err := ReadSchedulerConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, c) {
			t.Errorf("read back %+v, wrote %+v", back, c)
		}
		sc, err := back.Schedule()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := diffusion.NewSchedule(tc.sc)
		got, _ := diffusion.NewSchedule(sc)
		if fmt.Sprint(got.Betas()) != fmt.Sprint(want.Betas()) {
			t.Errorf("%+v: schedule changed in the round trip", tc.sc)
		}
		o, err := back.SamplerOptions()
		if err != nil {
			t.Fatal(err)
		}
		if o.Target != tc.target || o.Variance != orDefault(tc.o.Variance, sampler.FixedSmall) || o.Clip != orDefault(tc.o.Clip, sampler.ClipNone) ||
			o.Spacing != orDefault(tc.o.Spacing, diffusion.SpacingLinspace) || (o.Clip == sampler.ClipDynamic && o.DynamicPercentile != tc.o.DynamicPercentile) {
			t.Errorf("options %+v, want %+v with target %s", o, tc.o, tc.target)
		}
		b, _ := os.ReadFile(path)
		for _, key := range []string{`"_class_name": "DDPMScheduler"`, `"_diffusers_version": "0.40.0.dev0"`, `"trained_betas": null`, `"clip_sample_range": 1.0`} {
			if !bytes.Contains(b, []byte(key)) {
				t.Errorf("written config lacks %s:\n%s", key, b)
			}
		}
	}
	if _, err := SchedulerConfigFor(diffusion.ScheduleConfig{Kind: diffusion.Cosine, CosineS: 0.01}, diffusion.Epsilon, sampler.Options{}); err == nil {
		t.Error("a cosine schedule with s = 0.01 was accepted")
	}
	if _, err := SchedulerConfigFor(diffusion.ScheduleConfig{}, diffusion.Epsilon, sampler.Options{Spacing: diffusion.SpacingKarras}); err == nil {
		t.Error("karras spacing was accepted")
	}
}

func orDefault[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

// Inputs the project cannot reproduce fail with one line naming the field
// and value.
func TestSchedulerConfigUnsupported(t *testing.T) {
	ddpm := `"_class_name": "DDPMScheduler"`
	for _, tc := range []struct {
		name, json, want string
		// stage: where the error appears: "read", "schedule" or "options".
		stage string
	}{
		{"unknown class", `{"_class_name": "EulerDiscreteScheduler"}`, `unknown scheduler _class_name "EulerDiscreteScheduler"`, "read"},
		{"no class", `{"num_train_timesteps": 1000}`, "no _class_name", "read"},
		{"malformed", `{"_class_name": "DDPMScheduler",`, "not a JSON object", "read"},
		{"unknown field", `{` + ddpm + `, "set_alpha_to_one": true}`, `DDPMScheduler has no config field "set_alpha_to_one"`, "read"},
		{"wrong type", `{` + ddpm + `, "num_train_timesteps": "many"}`, "DDPMScheduler config", "read"},
		{"zero timesteps", `{` + ddpm + `, "num_train_timesteps": 0}`, "num_train_timesteps = 0 is not supported", "schedule"},
		{"zero beta", `{` + ddpm + `, "beta_start": 0.0}`, "beta_start, beta_end = 0, 0.02 is not supported", "schedule"},
		{"trained_betas", `{` + ddpm + `, "trained_betas": [0.1, 0.2]}`, "trained_betas = a list of 2 betas is not supported", "schedule"},
		{"beta_schedule", `{` + ddpm + `, "beta_schedule": "exp"}`, `beta_schedule = "exp" is not supported`, "schedule"},
		{"sigmoid ddim", `{"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"}`, `beta_schedule = "sigmoid" is not supported`, "schedule"},
		{"prediction_type", `{` + ddpm + `, "prediction_type": "flow"}`, `prediction_type = "flow" is not supported`, "options"},
		{"learned variance", `{` + ddpm + `, "variance_type": "learned_range"}`, `variance_type = "learned_range" is not supported`, "options"},
		{"clip_sample_range", `{` + ddpm + `, "clip_sample_range": 2.0}`, "clip_sample_range = 2.0 is not supported", "options"},
		{"sample_max_value", `{` + ddpm + `, "thresholding": true, "sample_max_value": 1.5}`, "sample_max_value = 1.5 is not supported", "options"},
		{"steps_offset", `{` + ddpm + `, "steps_offset": 1}`, "steps_offset = 1 is not supported", "options"},
		{"timestep_spacing", `{` + ddpm + `, "timestep_spacing": "karras"}`, `timestep_spacing = "karras" is not supported`, "options"},
		{"ddim linspace", `{"_class_name": "DDIMScheduler", "clip_sample": false, "timestep_spacing": "linspace"}`, `timestep_spacing = "linspace" is not supported`, "options"},
		{"dpm default spacing", `{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity}`, `timestep_spacing = "linspace" is not supported`, "options"},
		{"dpm order", `{"_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "trailing", "solver_order": 3}`, "solver_order = 3 is not supported", "options"},
		{"dpm karras", `{"_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "trailing", "use_karras_sigmas": true}`, "use_karras_sigmas = true is not supported", "options"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseSchedulerConfig([]byte(tc.json))
			if tc.stage != "read" {
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if tc.stage == "schedule" {
					_, err = c.Schedule()
				} else {
					if _, serr := c.Schedule(); serr != nil {
						t.Fatalf("schedule: %v", serr)
					}
					_, err = c.SamplerOptions()
				}
			}
			checkSchedulerError(t, err, tc.want)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := ReadSchedulerConfig(filepath.Join(t.TempDir(), "scheduler_config.json"))
		checkSchedulerError(t, err, "no such file")
	})
	t.Run("malformed file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "scheduler_config.json")
		if err := os.WriteFile(path, []byte("{nope"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadSchedulerConfig(path)
		checkSchedulerError(t, err, "not a JSON object")
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
	})
}

func checkSchedulerError(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "diffusers: ") || !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
		t.Fatalf("error %q: want one line starting with \"diffusers: \" and containing %q", msg, want)
	}
}

// A DPM-Solver++ config with trailing spacing maps onto DPMPP2M at any
// step count (lower_order_final changes no step of solver_order 2 with
// final_sigmas_type "zero"); the DDIM and DDPM step checks catch the step
// counts where diffusers' next timestep differs.
func TestSchedulerCheckSteps(t *testing.T) {
	dpm, err := ParseSchedulerConfig([]byte(`{"_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "trailing", "lambda_min_clipped": -Infinity, "variance_type": null}`))
	if err != nil {
		t.Fatal(err)
	}
	o, err := dpm.SamplerOptions()
	if err != nil {
		t.Fatal(err)
	}
	if o.Sampler != sampler.DPMPP2M || o.Spacing != diffusion.SpacingTrailing {
		t.Errorf("options %+v", o)
	}
	if err := dpm.CheckSteps(20); err != nil {
		t.Error(err)
	}
	if err := dpm.CheckSteps(10); err != nil {
		t.Error(err)
	}
	b, err := EncodeSchedulerConfig(dpm)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"lambda_min_clipped": -Infinity,`)) {
		t.Errorf("-Infinity not written as Python does:\n%s", b)
	}

	ddim, _ := ParseSchedulerConfig([]byte(`{"_class_name": "DDIMScheduler", "clip_sample": false, "timestep_spacing": "trailing"}`))
	if err := ddim.CheckSteps(10); err != nil {
		t.Error(err)
	}
	checkSchedulerError(t, ddim.CheckSteps(3), "goes from timestep 666 to 333")

	ddpm, _ := ParseSchedulerConfig([]byte(`{"_class_name": "DDPMScheduler", "timestep_spacing": "trailing"}`))
	if err := ddpm.CheckSteps(1000); err != nil {
		t.Error(err)
	}
	checkSchedulerError(t, ddpm.CheckSteps(10), "ends at timestep 99")
}
