package diffusion

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

// allKinds lists every schedule kind, for table-driven tests.
var allKinds = []ScheduleKind{Linear, Cosine, ScaledLinear, Sigmoid}

func mustSchedule(t *testing.T, cfg ScheduleConfig) *Schedule {
	t.Helper()
	s, err := NewSchedule(cfg)
	if err != nil {
		t.Fatalf("NewSchedule(%+v): %v", cfg, err)
	}
	return s
}

func kindConfig(k ScheduleKind, zeroSNR bool) ScheduleConfig {
	cfg := DefaultScheduleConfig()
	cfg.Kind = k
	cfg.ZeroTerminalSNR = zeroSNR
	if k == ScaledLinear {
		cfg.BetaStart, cfg.BetaEnd = 0.00085, 0.012
	}
	return cfg
}

// relClose reports whether got is within tol of want, relative to |want|
// (or absolutely where |want| < 1).
func relClose(got, want, tol float64) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

func name(k ScheduleKind, zeroSNR bool) string {
	if zeroSNR {
		return string(k) + "/zero-snr"
	}
	return string(k)
}

func TestDefaultScheduleConfig(t *testing.T) {
	want := ScheduleConfig{Kind: Linear, T: 1000, BetaStart: 1e-4, BetaEnd: 0.02, CosineS: 0.008, MaxBeta: 0.999}
	if got := DefaultScheduleConfig(); got != want {
		t.Fatalf("DefaultScheduleConfig() = %+v, want %+v", got, want)
	}
	// Zero-valued fields select the defaults.
	s := mustSchedule(t, ScheduleConfig{})
	if got := s.Config(); got != want {
		t.Fatalf("NewSchedule(ScheduleConfig{}).Config() = %+v, want %+v", got, want)
	}
	s = mustSchedule(t, ScheduleConfig{Kind: Cosine, T: 10})
	if got := s.Config(); got.CosineS != 0.008 || got.MaxBeta != 0.999 || got.T != 10 || got.Kind != Cosine {
		t.Fatalf("Config() = %+v, want cosine defaults with T = 10", got)
	}
	if s.Kind() != Cosine || s.T() != 10 {
		t.Fatalf("Kind(), T() = %q, %d, want cosine, 10", s.Kind(), s.T())
	}
}

func TestParseScheduleKind(t *testing.T) {
	tests := []struct {
		in   string
		want ScheduleKind
	}{
		{"linear", Linear},
		{"cosine", Cosine},
		{"scaled-linear", ScaledLinear},
		{"sigmoid", Sigmoid},
		{" Linear ", Linear},
		{"SCALED_LINEAR", ScaledLinear},
		{"squaredcos_cap_v2", Cosine},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseScheduleKind(tt.in)
			if err != nil || got != tt.want {
				t.Fatalf("ParseScheduleKind(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "quadratic", "linear2"} {
		t.Run("bad/"+bad, func(t *testing.T) {
			_, err := ParseScheduleKind(bad)
			if err == nil {
				t.Fatalf("ParseScheduleKind(%q) succeeded", bad)
			}
			for _, k := range allKinds {
				if !strings.Contains(err.Error(), string(k)) {
					t.Errorf("error %q does not list kind %q", err, k)
				}
			}
		})
	}
}

func TestNewScheduleValidation(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		edit func(*ScheduleConfig)
		want string // substring of the error
	}{
		{"kind", func(c *ScheduleConfig) { c.Kind = "quadratic" }, `unknown schedule kind "quadratic" (valid: linear, cosine, scaled-linear, sigmoid)`},
		{"T negative", func(c *ScheduleConfig) { c.T = -1 }, "T = -1 is out of range [1, 100000]"},
		{"T too large", func(c *ScheduleConfig) { c.T = 100001 }, "T = 100001 is out of range [1, 100000]"},
		{"BetaStart negative", func(c *ScheduleConfig) { c.BetaStart = -1e-4 }, "BetaStart = -0.0001 is out of range (0, 1)"},
		{"BetaStart one", func(c *ScheduleConfig) { c.BetaStart = 1 }, "BetaStart = 1 is out of range (0, 1)"},
		{"BetaStart NaN", func(c *ScheduleConfig) { c.BetaStart = nan }, "BetaStart = NaN is out of range (0, 1)"},
		{"BetaEnd negative", func(c *ScheduleConfig) { c.BetaEnd = -0.5 }, "BetaEnd = -0.5 is out of range (0, 1)"},
		{"BetaEnd one", func(c *ScheduleConfig) { c.BetaEnd = 1 }, "BetaEnd = 1 is out of range (0, 1)"},
		{"BetaStart above BetaEnd", func(c *ScheduleConfig) { c.BetaStart, c.BetaEnd = 0.03, 0.02 }, "BetaStart = 0.03 exceeds BetaEnd = 0.02 (need 0 < BetaStart <= BetaEnd < 1)"},
		{"scaled-linear BetaEnd", func(c *ScheduleConfig) { c.Kind = ScaledLinear; c.BetaEnd = 2 }, "BetaEnd = 2 is out of range (0, 1)"},
		{"sigmoid BetaStart", func(c *ScheduleConfig) { c.Kind = Sigmoid; c.BetaStart = -1 }, "BetaStart = -1 is out of range (0, 1)"},
		{"CosineS negative", func(c *ScheduleConfig) { c.Kind = Cosine; c.CosineS = -0.008 }, "CosineS = -0.008 is out of range (0, +Inf)"},
		{"CosineS Inf", func(c *ScheduleConfig) { c.Kind = Cosine; c.CosineS = math.Inf(1) }, "CosineS = +Inf is out of range (0, +Inf)"},
		{"MaxBeta negative", func(c *ScheduleConfig) { c.Kind = Cosine; c.MaxBeta = -0.5 }, "MaxBeta = -0.5 is out of range (0, 1)"},
		{"MaxBeta one", func(c *ScheduleConfig) { c.Kind = Cosine; c.MaxBeta = 1 }, "MaxBeta = 1 is out of range (0, 1)"},
		{"zero SNR with T 1", func(c *ScheduleConfig) { c.T = 1; c.ZeroTerminalSNR = true }, "ZeroTerminalSNR needs T in [2, 100000], got T = 1"},
		{"beta too small", func(c *ScheduleConfig) { c.BetaStart = 1e-20 }, "betas[0] = 1e-20 is too small"},
		{"zero SNR underflow", func(c *ScheduleConfig) { c.T = 100000; c.ZeroTerminalSNR = true }, "ZeroTerminalSNR rescale is degenerate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultScheduleConfig()
			tt.edit(&cfg)
			s, err := NewSchedule(cfg)
			if err == nil {
				t.Fatalf("NewSchedule(%+v) succeeded", cfg)
			}
			if s != nil {
				t.Errorf("NewSchedule returned a schedule with error %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if !strings.HasPrefix(msg, "diffusion: ") {
				t.Errorf("error %q lacks the package prefix", msg)
			}
		})
	}
}

func TestNewScheduleIgnoresUnusedFields(t *testing.T) {
	// Fields a kind does not read are not validated.
	cfg := DefaultScheduleConfig()
	cfg.MaxBeta, cfg.CosineS = -1, -1
	mustSchedule(t, cfg)
	cfg = DefaultScheduleConfig()
	cfg.Kind = Cosine
	cfg.BetaStart, cfg.BetaEnd = 0.5, 0.1
	mustSchedule(t, cfg)
}

func TestScheduleLinearGolden(t *testing.T) {
	s := mustSchedule(t, DefaultScheduleConfig())
	b, ac := s.Betas(), s.AlphasCumprod()
	if b[0] != 1e-4 || b[999] != 0.02 {
		t.Fatalf("betas[0], betas[999] = %v, %v, want 1e-4, 0.02", b[0], b[999])
	}
	prod := 1.0
	for i := range 1000 {
		beta := 1e-4 + float64(i)*(0.02-1e-4)/999
		if !relClose(b[i], beta, 1e-15) {
			t.Fatalf("betas[%d] = %v, want %v", i, b[i], beta)
		}
		prod *= 1 - beta
		if !relClose(ac[i], prod, 1e-12) || math.Abs(ac[i]-prod) > 1e-9*prod {
			t.Fatalf("alphas_cumprod[%d] = %v, want %v", i, ac[i], prod)
		}
	}
	if math.Abs(ac[999]-4.0358e-5) > 1e-9 {
		t.Errorf("alphas_cumprod[999] = %v, want ≈ 4.0358e-5", ac[999])
	}
}

// The lecture form of the DDPM schedule, α_t = linspace(0.9999, 0.98, 1000),
// is the same schedule as betas = linspace(1e-4, 0.02, 1000).
func TestScheduleLinearAlphasLinspace(t *testing.T) {
	s := mustSchedule(t, DefaultScheduleConfig())
	a := s.Alphas()
	for i := range 1000 {
		want := 0.9999 + float64(i)*(0.98-0.9999)/999
		if math.Abs(a[i]-want) > 1e-12 {
			t.Fatalf("alphas[%d] = %.17g, want %.17g", i, a[i], want)
		}
	}
}

func TestScheduleKindGolden(t *testing.T) {
	const T = 1000
	tests := []struct {
		kind ScheduleKind
		beta func(i int) float64
	}{
		{ScaledLinear, func(i int) float64 {
			r := math.Sqrt(0.00085) + float64(i)/(T-1)*(math.Sqrt(0.012)-math.Sqrt(0.00085))
			return r * r
		}},
		{Sigmoid, func(i int) float64 {
			x := -6 + 12*float64(i)/(T-1)
			return (0.02-1e-4)/(1+math.Exp(-x)) + 1e-4
		}},
		{Cosine, func(i int) float64 {
			g := func(t float64) float64 { return math.Pow(math.Cos((t/T+0.008)/1.008*math.Pi/2), 2) }
			return math.Min(1-g(float64(i+1))/g(float64(i)), 0.999)
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			s := mustSchedule(t, kindConfig(tt.kind, false))
			b, ac := s.Betas(), s.AlphasCumprod()
			prod := 1.0
			for i := range T {
				want := tt.beta(i)
				if math.Abs(b[i]-want) > 1e-15 {
					t.Fatalf("betas[%d] = %.17g, want %.17g", i, b[i], want)
				}
				prod *= 1 - want
				if math.Abs(ac[i]-prod) > 1e-12*prod {
					t.Fatalf("alphas_cumprod[%d] = %.17g, want %.17g", i, ac[i], prod)
				}
			}
		})
	}
}

// Without clipping the cosine schedule's ᾱ telescopes to the closed form
// f(t)/f(0) of Nichol & Dhariwal 2021, eq. 17.
func TestScheduleCosineClosedForm(t *testing.T) {
	for _, T := range []int{1000, 4000, 50} {
		t.Run(strconv.Itoa(T), func(t *testing.T) {
			cfg := DefaultScheduleConfig()
			cfg.Kind, cfg.T = Cosine, T
			s := mustSchedule(t, cfg)
			b, ac := s.Betas(), s.AlphasCumprod()
			f := func(t int) float64 {
				c := math.Cos((float64(t)/float64(T) + 0.008) / 1.008 * math.Pi / 2)
				return c * c
			}
			clipped := 0
			for i := range T {
				if b[i] == 0.999 {
					clipped++
					continue
				}
				if clipped > 0 {
					break
				}
				want := f(i+1) / f(0)
				if math.Abs(ac[i]-want) > 1e-10*want {
					t.Fatalf("alphas_cumprod[%d] = %.17g, want f(t)/f(0) = %.17g", i, ac[i], want)
				}
			}
			if clipped != 1 || b[T-1] != 0.999 {
				t.Errorf("clipped %d betas (last = %v), want only the last, at 0.999", clipped, b[T-1])
			}
		})
	}
}

func TestScheduleMonotone(t *testing.T) {
	for _, k := range allKinds {
		for _, z := range []bool{false, true} {
			t.Run(name(k, z), func(t *testing.T) {
				s := mustSchedule(t, kindConfig(k, z))
				b, ac, lam := s.Betas(), s.AlphasCumprod(), s.LogSNR()
				for i := range b {
					if !(b[i] > 0 && b[i] <= 1) {
						t.Fatalf("betas[%d] = %v not in (0, 1]", i, b[i])
					}
					if i == 0 {
						continue
					}
					if k != Cosine && b[i] < b[i-1] {
						t.Fatalf("betas[%d] = %v < betas[%d] = %v", i, b[i], i-1, b[i-1])
					}
					if !(ac[i] < ac[i-1]) {
						t.Fatalf("alphas_cumprod[%d] = %v not below alphas_cumprod[%d] = %v", i, ac[i], i-1, ac[i-1])
					}
					if !(lam[i] < lam[i-1]) {
						t.Fatalf("logSNR[%d] = %v not below logSNR[%d] = %v", i, lam[i], i-1, lam[i-1])
					}
				}
			})
		}
	}
}

func TestScheduleTerminalAlphaBar(t *testing.T) {
	tests := []struct {
		kind     ScheduleKind
		min, max float64
	}{
		{Linear, 4e-5, 4.1e-5},
		{Cosine, 0, 1e-4},
		{Sigmoid, 0, 1e-4},
		// Stable Diffusion's schedule leaves signal at the last step, the
		// flaw that Lin et al. 2024 fix with zero terminal SNR.
		{ScaledLinear, 4e-3, 5e-3},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			s := mustSchedule(t, kindConfig(tt.kind, false))
			got := s.At(s.T() - 1).AlphaCumprod
			if !(got > tt.min && got < tt.max) {
				t.Errorf("alphas_cumprod[T-1] = %v, want in (%v, %v)", got, tt.min, tt.max)
			}
		})
	}
}

func TestScheduleZeroTerminalSNR(t *testing.T) {
	for _, k := range allKinds {
		t.Run(string(k), func(t *testing.T) {
			plain := mustSchedule(t, kindConfig(k, false))
			s := mustSchedule(t, kindConfig(k, true))
			T := s.T()
			last := T - 1
			if got := s.AlphasCumprod()[last]; got != 0 {
				t.Errorf("alphas_cumprod[T-1] = %v, want exactly 0", got)
			}
			if got, want := s.At(0).AlphaCumprod, plain.At(0).AlphaCumprod; math.Abs(got-want) > 1e-12 {
				t.Errorf("alphas_cumprod[0] = %.17g, want unchanged %.17g", got, want)
			}
			if got := s.At(last).Beta; got != 1 {
				t.Errorf("betas[T-1] = %v, want 1", got)
			}
			// sqrt(ᾱ) is shifted and scaled (Lin et al. 2024, Algorithm 1).
			sq, sqPlain := s.SqrtAlphasCumprod(), plain.SqrtAlphasCumprod()
			a0, aT := sqPlain[0], sqPlain[last]
			for i := range T {
				want := (sqPlain[i] - aT) * a0 / (a0 - aT)
				if math.Abs(sq[i]-want) > 1e-12 {
					t.Fatalf("sqrt_alphas_cumprod[%d] = %.17g, want %.17g", i, sq[i], want)
				}
			}
			checks := []struct {
				name string
				got  float64
				want float64
			}{
				{"SNR", s.SNR()[last], 0},
				{"LogSNR", s.LogSNR()[last], math.Inf(-1)},
				{"SqrtOneMinusAlphasCumprod", s.SqrtOneMinusAlphasCumprod()[last], 1},
				{"SqrtRecipAlphasCumprod", s.SqrtRecipAlphasCumprod()[last], math.Inf(1)},
				{"SqrtRecipm1AlphasCumprod", s.SqrtRecipm1AlphasCumprod()[last], math.Inf(1)},
				{"PosteriorMeanCoef2", s.PosteriorMeanCoef2()[last], 0},
				{"PosteriorMeanCoef1", s.PosteriorMeanCoef1()[last], math.Sqrt(s.At(last - 1).AlphaCumprod)},
				{"PosteriorVariance", s.PosteriorVariance()[last], 1 - s.At(last-1).AlphaCumprod},
			}
			for _, c := range checks {
				if !(c.got == c.want || math.Abs(c.got-c.want) <= 1e-15) {
					t.Errorf("%s[T-1] = %v, want %v", c.name, c.got, c.want)
				}
			}
			for i, v := range s.LogSNR()[:last] {
				if math.IsInf(v, 0) || math.IsNaN(v) {
					t.Fatalf("logSNR[%d] = %v, want finite before the last step", i, v)
				}
			}
		})
	}
}

// Every per-step quantity is checked against the formulas of Ho et al. 2020,
// eq. 4, 6 and 7, evaluated from ᾱ in the test.
func TestScheduleDerived(t *testing.T) {
	for _, k := range allKinds {
		for _, z := range []bool{false, true} {
			t.Run(name(k, z), func(t *testing.T) {
				s := mustSchedule(t, kindConfig(k, z))
				T := s.T()
				b, a, ac, acp := s.Betas(), s.Alphas(), s.AlphasCumprod(), s.AlphasCumprodPrev()
				sq, sqm, sqr, sqr1 := s.SqrtAlphasCumprod(), s.SqrtOneMinusAlphasCumprod(), s.SqrtRecipAlphasCumprod(), s.SqrtRecipm1AlphasCumprod()
				pv, plv, c1, c2 := s.PosteriorVariance(), s.PosteriorLogVarianceClipped(), s.PosteriorMeanCoef1(), s.PosteriorMeanCoef2()
				snr, lam := s.SNR(), s.LogSNR()
				if acp[0] != 1 || pv[0] != 0 {
					t.Fatalf("alphas_cumprod_prev[0], posterior_variance[0] = %v, %v, want 1, 0", acp[0], pv[0])
				}
				if math.Abs(c1[0]-1) > 1e-12 || c2[0] != 0 {
					t.Fatalf("posterior coefficients at t=1 = %v, %v, want 1, 0 (μ̃ = x_0)", c1[0], c2[0])
				}
				if plv[0] != math.Log(pv[1]) {
					t.Fatalf("posterior_log_variance_clipped[0] = %v, want log β̃ at t=2 = %v", plv[0], math.Log(pv[1]))
				}
				last := T - 1
				if z {
					last = T - 2 // the zero-SNR step is checked in TestScheduleZeroTerminalSNR
				}
				const tol = 1e-9
				for i := 0; i <= last; i++ {
					if a[i] != 1-b[i] {
						t.Fatalf("alphas[%d] = %v, want 1-β = %v", i, a[i], 1-b[i])
					}
					if i > 0 && acp[i] != ac[i-1] {
						t.Fatalf("alphas_cumprod_prev[%d] = %v, want %v", i, acp[i], ac[i-1])
					}
					om, omPrev := 1-ac[i], 1-acp[i]
					want := []struct {
						name      string
						got, want float64
					}{
						{"sqrt_alphas_cumprod", sq[i], math.Sqrt(ac[i])},
						{"sqrt_one_minus_alphas_cumprod", sqm[i], math.Sqrt(om)},
						{"sqrt_recip_alphas_cumprod", sqr[i], math.Sqrt(1 / ac[i])},
						{"sqrt_recipm1_alphas_cumprod", sqr1[i], math.Sqrt(1/ac[i] - 1)},
						{"posterior_variance", pv[i], b[i] * omPrev / om},
						{"posterior_mean_coef1", c1[i], b[i] * math.Sqrt(acp[i]) / om},
						{"posterior_mean_coef2", c2[i], omPrev * math.Sqrt(a[i]) / om},
						{"snr", snr[i], ac[i] / om},
						{"log_snr", lam[i], math.Log(ac[i] / om)},
					}
					for _, w := range want {
						if !(math.Abs(w.got-w.want) <= tol*math.Abs(w.want)+1e-12) {
							t.Fatalf("%s[%d] = %.17g, want %.17g", w.name, i, w.got, w.want)
						}
					}
					if i > 0 {
						// β̃_t = 1/(α_t/β_t + 1/(1-ᾱ_{t-1})), the precision-sum form of eq. 7.
						bishop := 1 / (a[i]/b[i] + 1/omPrev)
						if math.Abs(pv[i]-bishop) > tol*bishop {
							t.Fatalf("posterior_variance[%d] = %.17g, want %.17g", i, pv[i], bishop)
						}
						if plv[i] != math.Log(pv[i]) {
							t.Fatalf("posterior_log_variance_clipped[%d] = %v, want %v", i, plv[i], math.Log(pv[i]))
						}
					}
					// A noiseless x_t = sqrt(ᾱ_t) x_0 has posterior mean
					// sqrt(ᾱ_{t-1}) x_0: coef1 + coef2 sqrt(ᾱ_t) = sqrt(ᾱ_{t-1}).
					if got, want := c1[i]+c2[i]*sq[i], math.Sqrt(acp[i]); math.Abs(got-want) > 1e-12 {
						t.Fatalf("coef1 + coef2·sqrt(ᾱ) at %d = %.17g, want sqrt(ᾱ_prev) = %.17g", i, got, want)
					}
					// x_t = sqrt(ᾱ) x_0 + sqrt(1-ᾱ) ε is inverted by
					// x_0 = x_t/sqrt(ᾱ) - sqrt(1/ᾱ - 1) ε.
					x0, eps := 0.7, -1.3
					xt := sq[i]*x0 + sqm[i]*eps
					if got := sqr[i]*xt - sqr1[i]*eps; math.Abs(got-x0) > 1e-9*math.Max(1, sqr[i]) {
						t.Fatalf("recovered x_0 at %d = %.17g, want %v", i, got, x0)
					}
					// And plugging the true x_0 into the posterior mean gives
					// a point between x_0 and x_t in the expected proportion.
					mu := c1[i]*x0 + c2[i]*xt
					wantMu := math.Sqrt(acp[i])*x0 + math.Sqrt(1-acp[i]-pv[i])*eps
					if math.Abs(mu-wantMu) > 1e-9 {
						t.Fatalf("posterior mean at %d = %.17g, want %.17g", i, mu, wantMu)
					}
				}
			})
		}
	}
}

// A single-step schedule works for every kind; its clipped log variance
// falls back to log β.
func TestScheduleSingleStep(t *testing.T) {
	for _, k := range allKinds {
		t.Run(string(k), func(t *testing.T) {
			cfg := kindConfig(k, false)
			cfg.T = 1
			s := mustSchedule(t, cfg)
			if s.T() != 1 || len(s.Betas()) != 1 {
				t.Fatalf("T() = %d, len(Betas()) = %d, want 1", s.T(), len(s.Betas()))
			}
			if got, want := s.PosteriorLogVarianceClipped()[0], math.Log(s.At(0).Beta); got != want {
				t.Errorf("posterior_log_variance_clipped[0] = %v, want log β = %v", got, want)
			}
		})
	}
}

// A very long schedule lets the product ᾱ underflow; that is kept, and the
// log SNR, computed from sums of logs, stays finite.
func TestScheduleUnderflow(t *testing.T) {
	s := mustSchedule(t, ScheduleConfig{T: MaxScheduleSteps})
	ac, lam := s.AlphasCumprod(), s.LogSNR()
	last := s.T() - 1
	if ac[last] > 1e-300 {
		t.Fatalf("alphas_cumprod[T-1] = %v, expected underflow", ac[last])
	}
	if math.IsInf(lam[last], 0) || math.IsNaN(lam[last]) || lam[last] > -700 {
		t.Fatalf("logSNR[T-1] = %v, want finite and very negative", lam[last])
	}
	for i := 1; i <= last; i++ {
		if !(lam[i] < lam[i-1]) {
			t.Fatalf("logSNR[%d] = %v not below logSNR[%d] = %v", i, lam[i], i-1, lam[i-1])
		}
	}
}

func TestScheduleAccessorsReturnCopies(t *testing.T) {
	accessors := []struct {
		name string
		get  func(*Schedule) []float64
	}{
		{"Betas", (*Schedule).Betas},
		{"Alphas", (*Schedule).Alphas},
		{"AlphasCumprod", (*Schedule).AlphasCumprod},
		{"AlphasCumprodPrev", (*Schedule).AlphasCumprodPrev},
		{"SqrtAlphasCumprod", (*Schedule).SqrtAlphasCumprod},
		{"SqrtOneMinusAlphasCumprod", (*Schedule).SqrtOneMinusAlphasCumprod},
		{"SqrtRecipAlphasCumprod", (*Schedule).SqrtRecipAlphasCumprod},
		{"SqrtRecipm1AlphasCumprod", (*Schedule).SqrtRecipm1AlphasCumprod},
		{"PosteriorVariance", (*Schedule).PosteriorVariance},
		{"PosteriorLogVarianceClipped", (*Schedule).PosteriorLogVarianceClipped},
		{"PosteriorMeanCoef1", (*Schedule).PosteriorMeanCoef1},
		{"PosteriorMeanCoef2", (*Schedule).PosteriorMeanCoef2},
		{"SNR", (*Schedule).SNR},
		{"LogSNR", (*Schedule).LogSNR},
	}
	s := mustSchedule(t, ScheduleConfig{T: 100})
	for _, acc := range accessors {
		t.Run(acc.name, func(t *testing.T) {
			first := acc.get(s)
			if len(first) != 100 {
				t.Fatalf("len = %d, want T = 100", len(first))
			}
			want := append([]float64(nil), first...)
			for i := range first {
				first[i] = -42
			}
			again := acc.get(s)
			for i := range again {
				if again[i] != want[i] && !(math.IsNaN(again[i]) && math.IsNaN(want[i])) {
					t.Fatalf("after mutating a returned slice, [%d] = %v, want %v", i, again[i], want[i])
				}
			}
		})
	}
	t.Run("per-index", func(t *testing.T) {
		b, a, ac, acp := s.Betas(), s.Alphas(), s.AlphasCumprod(), s.AlphasCumprodPrev()
		for i := range 100 {
			if s.At(i).Beta != b[i] || s.At(i).Alpha != a[i] || s.At(i).AlphaCumprod != ac[i] || s.At(i).AlphaCumprodPrev != acp[i] {
				t.Fatalf("per-index accessors disagree with slices at %d", i)
			}
		}
	})
}

// pythonReference is a reference computed the PyTorch and diffusers way in
// float64: betas and ᾱ for every kind (and for the linear kind rescaled to
// zero terminal SNR), and the numpy timestep spacings of diffusers for every
// n in [1, T].
const pythonReference = `
import json, math, sys
import numpy as np
import torch

T = int(sys.argv[1])
f64 = torch.float64

def lin(a, b):
    return torch.linspace(a, b, T, dtype=f64)

def entry(betas):
    ac = torch.cumprod(1.0 - betas, dim=0)
    return {"betas": betas.tolist(), "alphas_cumprod": ac.tolist()}

def alpha_bar(t):
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

def zero_terminal_snr(betas):
    s = torch.cumprod(1.0 - betas, dim=0).sqrt()
    s0, sT = s[0].clone(), s[-1].clone()
    s = (s - sT) * (s0 / (s0 - sT))
    ab = s ** 2
    return 1.0 - torch.cat([ab[0:1], ab[1:] / ab[:-1]])

schedules = {
    "linear": entry(lin(1e-4, 0.02)),
    "scaled-linear": entry(lin(0.00085 ** 0.5, 0.012 ** 0.5) ** 2),
    "sigmoid": entry(torch.sigmoid(lin(-6, 6)) * (0.02 - 1e-4) + 1e-4),
    "cosine": entry(torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)], dtype=f64)),
    "linear-zero-snr": entry(zero_terminal_snr(lin(1e-4, 0.02))),
}
timesteps = {"linspace": [], "leading": [], "trailing": []}
for n in range(1, T + 1):
    timesteps["linspace"].append(np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64).tolist())
    timesteps["leading"].append((np.arange(0, n) * (T // n)).round()[::-1].copy().astype(np.int64).tolist())
    timesteps["trailing"].append((np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1).tolist())
json.dump({"schedules": schedules, "timesteps": timesteps}, sys.stdout)
`

func TestSchedulePythonReference(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the Python reference in short mode")
	}
	const T = 1000
	var ref struct {
		Schedules map[string]struct {
			Betas         []float64 `json:"betas"`
			AlphasCumprod []float64 `json:"alphas_cumprod"`
		} `json:"schedules"`
		Timesteps map[Spacing][][]int `json:"timesteps"`
	}
	pyref.Run(t, pythonReference, nil, &ref, strconv.Itoa(T))
	configs := map[string]ScheduleConfig{
		"linear":          kindConfig(Linear, false),
		"scaled-linear":   kindConfig(ScaledLinear, false),
		"sigmoid":         kindConfig(Sigmoid, false),
		"cosine":          kindConfig(Cosine, false),
		"linear-zero-snr": kindConfig(Linear, true),
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			want, ok := ref.Schedules[name]
			if !ok || len(want.Betas) != T || len(want.AlphasCumprod) != T {
				t.Fatalf("reference lacks %s", name)
			}
			s := mustSchedule(t, cfg)
			b, ac := s.Betas(), s.AlphasCumprod()
			for i := range T {
				if math.Abs(b[i]-want.Betas[i]) > 1e-12 {
					t.Fatalf("betas[%d] = %.17g, torch %.17g", i, b[i], want.Betas[i])
				}
				if !relClose(ac[i], want.AlphasCumprod[i], 1e-12) {
					t.Fatalf("alphas_cumprod[%d] = %.17g, torch %.17g", i, ac[i], want.AlphasCumprod[i])
				}
			}
		})
	}

	s := mustSchedule(t, DefaultScheduleConfig())
	for _, sp := range []Spacing{SpacingLinspace, SpacingLeading, SpacingTrailing} {
		t.Run("timesteps/"+string(sp), func(t *testing.T) {
			all := ref.Timesteps[sp]
			if len(all) != T {
				t.Fatalf("reference has %d step counts, want %d", len(all), T)
			}
			for n := 1; n <= T; n++ {
				want := all[n-1]
				if sp == SpacingLinspace && n == 1 {
					continue // numpy gives [0]; Timesteps starts at T-1 instead.
				}
				if sp == SpacingTrailing && len(want) == n+1 && want[n] == -1 {
					// numpy's arange with a float step overshoots by one
					// element for some n; that element is -1.
					want = want[:n]
				}
				got, err := s.Timesteps(n, sp)
				if err != nil {
					t.Fatalf("Timesteps(%d): %v", n, err)
				}
				if !equalInts(got, want) {
					t.Fatalf("Timesteps(%d) = %v, diffusers %v", n, got, want)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The JSON form uses diffusers' scheduler_config names, and reads back the
// Go field names older files used.
func TestScheduleConfigJSON(t *testing.T) {
	cfg := ScheduleConfig{Kind: Cosine, T: 500, BetaStart: 1e-4, BetaEnd: 0.02, CosineS: 0.008, MaxBeta: 0.999, ZeroTerminalSNR: true}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"beta_schedule":"squaredcos_cap_v2"`, `"num_train_timesteps":500`, `"beta_start":0.0001`, `"rescale_betas_zero_snr":true`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	var back ScheduleConfig
	if err := json.Unmarshal(b, &back); err != nil || back != cfg {
		t.Errorf("round trip %+v (%v), want %+v", back, err, cfg)
	}
	var legacy ScheduleConfig
	if err := json.Unmarshal([]byte(`{"Kind":"cosine","T":500,"BetaStart":0.0001,"BetaEnd":0.02,"CosineS":0.008,"MaxBeta":0.999,"ZeroTerminalSNR":true}`), &legacy); err != nil || legacy != cfg {
		t.Errorf("legacy %+v (%v), want %+v", legacy, err, cfg)
	}
	if err := json.Unmarshal([]byte(`{"beta_schedule":"quadratic"}`), &legacy); err == nil {
		t.Error("an unknown beta_schedule was accepted")
	}
}
