package diffusion

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/internal/enum"
)

// ScheduleKind names how the betas of a Schedule are laid out.
type ScheduleKind string

const (
	// Linear spaces the betas evenly from BetaStart to BetaEnd (Ho et al. 2020).
	Linear ScheduleKind = "linear"
	// Cosine derives the betas from ᾱ(t) = f(t)/f(0) with
	// f(t) = cos²(((t/T)+s)/(1+s) · π/2) (Nichol & Dhariwal 2021, eq. 17).
	Cosine ScheduleKind = "cosine"
	// ScaledLinear spaces the square roots of the betas evenly from
	// sqrt(BetaStart) to sqrt(BetaEnd), as Stable Diffusion does.
	ScaledLinear ScheduleKind = "scaled-linear"
	// Sigmoid lays the betas out along a logistic curve between BetaStart
	// and BetaEnd, as GeoDiff does.
	Sigmoid ScheduleKind = "sigmoid"
)

// scheduleKinds lists the valid kinds in the order error messages show them.
var scheduleKinds = []ScheduleKind{Linear, Cosine, ScaledLinear, Sigmoid}

// diffusersBetaSchedule is the beta_schedule name of each kind in a
// diffusers scheduler_config.json; the JSON form of a ScheduleKind uses it.
var diffusersBetaSchedule = map[ScheduleKind]string{
	Linear:       "linear",
	Cosine:       "squaredcos_cap_v2",
	ScaledLinear: "scaled_linear",
	Sigmoid:      "sigmoid",
}

// ParseScheduleKind parses the name of a schedule kind the enum way (case,
// space and '_' versus '-' do not matter); diffusers' beta_schedule names
// ("squaredcos_cap_v2", "scaled_linear") are accepted as well.
func ParseScheduleKind(s string) (ScheduleKind, error) {
	aliases := make(map[string]ScheduleKind, len(diffusersBetaSchedule))
	for k, name := range diffusersBetaSchedule {
		aliases[name] = k
	}
	k, err := enum.Parse("schedule kind", s, scheduleKinds, aliases)
	if err != nil {
		return "", fmt.Errorf("diffusion: %w", err)
	}
	return k, nil
}

// MarshalText writes the kind under its diffusers beta_schedule name.
func (k ScheduleKind) MarshalText() ([]byte, error) {
	name, ok := diffusersBetaSchedule[k]
	if !ok {
		return nil, fmt.Errorf("diffusion: unknown schedule kind %q (valid: %s)", string(k), enum.List(scheduleKinds))
	}
	return []byte(name), nil
}

// UnmarshalText reads any name ParseScheduleKind accepts.
func (k *ScheduleKind) UnmarshalText(b []byte) error {
	v, err := ParseScheduleKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

func (k ScheduleKind) valid() bool { return enum.Valid(k, scheduleKinds) }

// usesBetaRange reports whether the kind reads BetaStart and BetaEnd.
func (k ScheduleKind) usesBetaRange() bool {
	return k == Linear || k == ScaledLinear || k == Sigmoid
}

// MaxScheduleSteps is the largest number of diffusion steps NewSchedule accepts.
const MaxScheduleSteps = 100000

// Defaults used by DefaultScheduleConfig and for zero-valued fields of a
// ScheduleConfig.
const (
	defaultT         = 1000
	defaultBetaStart = 1e-4
	defaultBetaEnd   = 0.02
	defaultCosineS   = 0.008
	defaultMaxBeta   = 0.999
)

// ScheduleConfig describes a noise schedule. A zero-valued field selects its
// default (see DefaultScheduleConfig); no field has a meaningful zero value.
// Fields that the chosen kind does not read are not validated.
type ScheduleConfig struct {
	// Kind selects how the betas are laid out; default Linear.
	Kind ScheduleKind `json:"beta_schedule"`
	// T is the number of diffusion steps, in [1, MaxScheduleSteps]; default 1000.
	T int `json:"num_train_timesteps"`
	// BetaStart and BetaEnd bound the betas of the linear, scaled-linear and
	// sigmoid kinds: 0 < BetaStart <= BetaEnd < 1; defaults 1e-4 and 0.02
	// (Ho et al. 2020). Stable Diffusion's scaled-linear schedule uses
	// 0.00085 and 0.012.
	BetaStart float64 `json:"beta_start"`
	BetaEnd   float64 `json:"beta_end"`
	// CosineS is the offset s of the cosine schedule, > 0; default 0.008.
	CosineS float64 `json:"cosine_s"`
	// MaxBeta clips the betas of the cosine schedule, in (0, 1); default 0.999.
	MaxBeta float64 `json:"max_beta"`
	// ZeroTerminalSNR rescales the schedule so that ᾱ at the last step is
	// exactly 0, i.e. the last step is pure noise (Lin et al. 2024,
	// "Common Diffusion Noise Schedules and Sample Steps are Flawed",
	// Algorithm 1). Nothing else is clamped: the last beta becomes 1, and
	// quantities that divide by ᾱ (SqrtRecipAlphasCumprod,
	// SqrtRecipm1AlphasCumprod) are +Inf there. Predicting the noise ε is
	// ill-posed at the last step, since x_T carries no information about x_0;
	// use v prediction with such a schedule. Requires T >= 2.
	ZeroTerminalSNR bool `json:"rescale_betas_zero_snr"`
}

// UnmarshalJSON reads the snake_case keys above (diffusers'
// scheduler_config names where diffusers has the field) and, for
// checkpoints and run directories written before those names, the Go field
// names (BetaStart, ...).
func (cfg *ScheduleConfig) UnmarshalJSON(b []byte) error {
	type plain ScheduleConfig
	var v plain
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var legacy struct {
		Kind                                 *ScheduleKind
		T                                    *int
		BetaStart, BetaEnd, CosineS, MaxBeta *float64
		ZeroTerminalSNR                      *bool
	}
	if err := json.Unmarshal(b, &legacy); err != nil {
		return err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	for _, f := range []struct {
		key string
		set func()
	}{
		{"Kind", func() { v.Kind = *legacy.Kind }},
		{"T", func() { v.T = *legacy.T }},
		{"BetaStart", func() { v.BetaStart = *legacy.BetaStart }},
		{"BetaEnd", func() { v.BetaEnd = *legacy.BetaEnd }},
		{"CosineS", func() { v.CosineS = *legacy.CosineS }},
		{"MaxBeta", func() { v.MaxBeta = *legacy.MaxBeta }},
		{"ZeroTerminalSNR", func() { v.ZeroTerminalSNR = *legacy.ZeroTerminalSNR }},
	} {
		if _, ok := keys[f.key]; ok {
			f.set()
		}
	}
	*cfg = ScheduleConfig(v)
	return nil
}

// DefaultScheduleConfig returns the linear schedule of Ho et al. 2020:
// T = 1000 and betas from 1e-4 to 0.02, with the cosine parameters set to
// s = 0.008 and MaxBeta = 0.999.
func DefaultScheduleConfig() ScheduleConfig {
	return ScheduleConfig{
		Kind:      Linear,
		T:         defaultT,
		BetaStart: defaultBetaStart,
		BetaEnd:   defaultBetaEnd,
		CosineS:   defaultCosineS,
		MaxBeta:   defaultMaxBeta,
	}
}

// withDefaults returns cfg with each zero-valued field replaced by its default.
func (cfg ScheduleConfig) withDefaults() ScheduleConfig {
	d := DefaultScheduleConfig()
	if cfg.Kind == "" {
		cfg.Kind = d.Kind
	}
	if cfg.T == 0 {
		cfg.T = d.T
	}
	if cfg.BetaStart == 0 {
		cfg.BetaStart = d.BetaStart
	}
	if cfg.BetaEnd == 0 {
		cfg.BetaEnd = d.BetaEnd
	}
	if cfg.CosineS == 0 {
		cfg.CosineS = d.CosineS
	}
	if cfg.MaxBeta == 0 {
		cfg.MaxBeta = d.MaxBeta
	}
	return cfg
}

func (cfg ScheduleConfig) validate() error {
	if !cfg.Kind.valid() {
		return fmt.Errorf("diffusion: unknown schedule kind %q (valid: %s)", cfg.Kind, enum.List(scheduleKinds))
	}
	if cfg.T < 1 || cfg.T > MaxScheduleSteps {
		return fmt.Errorf("diffusion: T = %d is out of range [1, %d]", cfg.T, MaxScheduleSteps)
	}
	if cfg.Kind.usesBetaRange() {
		if !(cfg.BetaStart > 0 && cfg.BetaStart < 1) {
			return fmt.Errorf("diffusion: BetaStart = %g is out of range (0, 1)", cfg.BetaStart)
		}
		if !(cfg.BetaEnd > 0 && cfg.BetaEnd < 1) {
			return fmt.Errorf("diffusion: BetaEnd = %g is out of range (0, 1)", cfg.BetaEnd)
		}
		if cfg.BetaStart > cfg.BetaEnd {
			return fmt.Errorf("diffusion: BetaStart = %g exceeds BetaEnd = %g (need 0 < BetaStart <= BetaEnd < 1)", cfg.BetaStart, cfg.BetaEnd)
		}
	}
	if cfg.Kind == Cosine {
		if !(cfg.CosineS > 0 && !math.IsInf(cfg.CosineS, 1)) {
			return fmt.Errorf("diffusion: CosineS = %g is out of range (0, +Inf)", cfg.CosineS)
		}
		if !(cfg.MaxBeta > 0 && cfg.MaxBeta < 1) {
			return fmt.Errorf("diffusion: MaxBeta = %g is out of range (0, 1)", cfg.MaxBeta)
		}
	}
	if cfg.ZeroTerminalSNR && cfg.T < 2 {
		return fmt.Errorf("diffusion: ZeroTerminalSNR needs T in [2, %d], got T = %d", MaxScheduleSteps, cfg.T)
	}
	return nil
}

// Schedule is the noise schedule of a DDPM: the betas and every per-step
// quantity derived from them, computed once in float64. A Schedule is
// immutable and safe for concurrent use.
//
// Indexing: index i = 0, …, T-1 of every per-step quantity is the paper's
// step t = i+1, so index 0 is the least noisy step and index T-1 the most
// noisy one. This is the training timestep in [0, T) that diffusers and
// improved-diffusion feed to the model. ᾱ_0 = 1 (the clean data) has no
// index; it appears only as AlphasCumprodPrev()[0].
//
// Slice accessors return a fresh copy on every call; At returns every
// quantity of one index without copying.
//
// The quantities follow IEEE semantics where ᾱ_t = 0, which happens at the
// last step with ZeroTerminalSNR or when the cumulative product underflows
// for very long schedules: SqrtRecipAlphasCumprod and
// SqrtRecipm1AlphasCumprod are +Inf there, SNR is 0 and LogSNR is -Inf (or a
// finite, very negative number if ᾱ merely underflowed).
type Schedule struct {
	cfg ScheduleConfig

	betas                     []float64
	alphas                    []float64
	alphasCumprod             []float64
	alphasCumprodPrev         []float64
	sqrtAlphasCumprod         []float64
	sqrtOneMinusAlphasCumprod []float64
	sqrtRecipAlphasCumprod    []float64
	sqrtRecipm1AlphasCumprod  []float64
	posteriorVariance         []float64
	posteriorLogVarClipped    []float64
	posteriorMeanCoef1        []float64
	posteriorMeanCoef2        []float64
	snr                       []float64
	logSNR                    []float64
}

// NewSchedule validates cfg, fills zero-valued fields with their defaults and
// computes the schedule. It fails if a field is out of range or if the
// resulting betas are not usable: every beta must lie in (0, 1], a beta may
// equal 1 only at the last step of a ZeroTerminalSNR schedule, and every beta
// must be large enough to lower ᾱ in float64 (until ᾱ underflows).
func NewSchedule(cfg ScheduleConfig) (*Schedule, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var betas []float64
	switch cfg.Kind {
	case Linear:
		betas = linspace(cfg.BetaStart, cfg.BetaEnd, cfg.T)
	case ScaledLinear:
		betas = linspace(math.Sqrt(cfg.BetaStart), math.Sqrt(cfg.BetaEnd), cfg.T)
		for i, b := range betas {
			betas[i] = b * b
		}
	case Sigmoid:
		betas = linspace(-6, 6, cfg.T)
		for i, x := range betas {
			betas[i] = 1/(1+math.Exp(-x))*(cfg.BetaEnd-cfg.BetaStart) + cfg.BetaStart
		}
	case Cosine:
		betas = cosineBetas(cfg.T, cfg.CosineS, cfg.MaxBeta)
	}
	if err := checkBetas(betas, false); err != nil {
		return nil, err
	}
	if cfg.ZeroTerminalSNR {
		var err error
		if betas, err = rescaleZeroTerminalSNR(betas); err != nil {
			return nil, err
		}
		if err := checkBetas(betas, true); err != nil {
			return nil, err
		}
	}
	return newScheduleFromBetas(cfg, betas), nil
}

// linspace returns n evenly spaced values from start to stop inclusive. The
// first half is stepped forward from start and the second half backward from
// stop, so both endpoints are exact. For n = 1 it returns [start].
func linspace(start, stop float64, n int) []float64 {
	out := make([]float64, n)
	if n == 1 {
		out[0] = start
		return out
	}
	step := (stop - start) / float64(n-1)
	for i := range out {
		if i < n/2 {
			out[i] = start + step*float64(i)
		} else {
			out[i] = stop - step*float64(n-1-i)
		}
	}
	return out
}

// cosineBetas implements the cosine schedule of Nichol & Dhariwal 2021
// (eq. 17): ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T)+s)/(1+s) · π/2), and
// β_t = min(1 - ᾱ(t)/ᾱ(t-1), maxBeta) for t = 1, …, T. f(0) cancels in the
// ratio. Without clipping the cumulative product of 1-β_t telescopes back
// to ᾱ(t); the clip only bites near t = T, where f(T) ≈ 0 would give β ≈ 1.
func cosineBetas(T int, s, maxBeta float64) []float64 {
	f := func(t int) float64 {
		c := math.Cos((float64(t)/float64(T) + s) / (1 + s) * math.Pi / 2)
		return c * c
	}
	betas := make([]float64, T)
	prev := f(0)
	for i := range betas {
		cur := f(i + 1)
		betas[i] = math.Min(1-cur/prev, maxBeta)
		prev = cur
	}
	return betas
}

// rescaleZeroTerminalSNR applies Algorithm 1 of Lin et al. 2024 to betas:
// it shifts sqrt(ᾱ) so that its last entry is 0 and scales it so that its
// first entry is unchanged, then recovers the betas from the ratios of
// consecutive ᾱ. The last beta becomes exactly 1.
func rescaleZeroTerminalSNR(betas []float64) ([]float64, error) {
	T := len(betas)
	sq := make([]float64, T)
	ac := 1.0
	for i, b := range betas {
		ac *= 1 - b
		sq[i] = math.Sqrt(ac)
	}
	first, last := sq[0], sq[T-1]
	scale := first / (first - last)
	abar := make([]float64, T)
	for i, v := range sq {
		v = (v - last) * scale
		abar[i] = v * v
	}
	out := make([]float64, T)
	out[0] = 1 - abar[0]
	for i := 1; i < T; i++ {
		if abar[i-1] == 0 {
			return nil, fmt.Errorf("diffusion: ZeroTerminalSNR rescale is degenerate: alphas_cumprod underflows to 0 at index %d, before the last step; use fewer steps or smaller betas", i-1)
		}
		out[i] = 1 - abar[i]/abar[i-1]
	}
	return out, nil
}

// checkBetas verifies that every beta lies in (0, 1], that only the last one
// may be 1 (and only if allowOneAtEnd), and that each beta lowers ᾱ in
// float64 until ᾱ underflows.
func checkBetas(betas []float64, allowOneAtEnd bool) error {
	T := len(betas)
	ac := 1.0
	for i, b := range betas {
		if !(b > 0 && b <= 1) {
			return fmt.Errorf("diffusion: betas[%d] = %g is out of range (0, 1]", i, b)
		}
		if b == 1 && !(allowOneAtEnd && i == T-1) {
			return fmt.Errorf("diffusion: betas[%d] = 1 is allowed only at the last step of a ZeroTerminalSNR schedule", i)
		}
		next := ac * (1 - b)
		// Below the smallest normal float64 the product loses precision
		// and may stall on its way to 0; that is underflow, not a tiny beta.
		if ac >= 0x1p-1022 && next >= ac {
			return fmt.Errorf("diffusion: betas[%d] = %g is too small to lower alphas_cumprod in float64; use larger betas", i, b)
		}
		ac = next
	}
	return nil
}

// newScheduleFromBetas derives every per-step quantity from valid betas.
func newScheduleFromBetas(cfg ScheduleConfig, betas []float64) *Schedule {
	T := len(betas)
	mk := func() []float64 { return make([]float64, T) }
	s := &Schedule{
		cfg:                       cfg,
		betas:                     betas,
		alphas:                    mk(),
		alphasCumprod:             mk(),
		alphasCumprodPrev:         mk(),
		sqrtAlphasCumprod:         mk(),
		sqrtOneMinusAlphasCumprod: mk(),
		sqrtRecipAlphasCumprod:    mk(),
		sqrtRecipm1AlphasCumprod:  mk(),
		posteriorVariance:         mk(),
		posteriorLogVarClipped:    mk(),
		posteriorMeanCoef1:        mk(),
		posteriorMeanCoef2:        mk(),
		snr:                       mk(),
		logSNR:                    mk(),
	}
	// ᾱ_t is the running product of α_t (Ho et al. 2020, eq. 4). Alongside it
	// log ᾱ_t is accumulated as a sum of log1p(-β), from which 1-ᾱ_t is
	// recovered with expm1: this keeps 1-ᾱ_t accurate to full relative
	// precision at small t, where ᾱ_t ≈ 1 and 1 - ᾱ_t would cancel.
	ac, logAC := 1.0, 0.0
	acPrev, omPrev := 1.0, 0.0 // ᾱ_{t-1} and 1-ᾱ_{t-1}, starting from ᾱ_0 = 1
	for i, b := range betas {
		a := 1 - b
		ac *= a
		logAC += math.Log1p(-b)
		om := -math.Expm1(logAC) // 1 - ᾱ_t
		sqAC, sqOM := math.Sqrt(ac), math.Sqrt(om)

		s.alphas[i] = a
		s.alphasCumprod[i] = ac
		s.alphasCumprodPrev[i] = acPrev
		s.sqrtAlphasCumprod[i] = sqAC
		s.sqrtOneMinusAlphasCumprod[i] = sqOM
		s.sqrtRecipAlphasCumprod[i] = 1 / sqAC
		s.sqrtRecipm1AlphasCumprod[i] = sqOM / sqAC

		// Posterior q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Ho et al. 2020,
		// eq. 6 and 7).
		s.posteriorVariance[i] = b * omPrev / om
		s.posteriorMeanCoef1[i] = b * math.Sqrt(acPrev) / om
		s.posteriorMeanCoef2[i] = omPrev * math.Sqrt(a) / om

		s.snr[i] = ac / om
		s.logSNR[i] = logAC - math.Log(om)

		acPrev, omPrev = ac, om
	}
	// β̃ is 0 at the first step, so its log is clipped there to the value of
	// the second step, as improved-diffusion does. With T = 1 there is no
	// second step; log β_1 (the upper-bound choice σ² = β) is used instead.
	for i, v := range s.posteriorVariance {
		s.posteriorLogVarClipped[i] = math.Log(v)
	}
	if T > 1 {
		s.posteriorLogVarClipped[0] = math.Log(s.posteriorVariance[1])
	} else {
		s.posteriorLogVarClipped[0] = math.Log(betas[0])
	}
	return s
}

func clone(x []float64) []float64 { return append([]float64(nil), x...) }

// T returns the number of diffusion steps.
func (s *Schedule) T() int { return len(s.betas) }

// Config returns the configuration the schedule was built from, with
// zero-valued fields replaced by their defaults.
func (s *Schedule) Config() ScheduleConfig { return s.cfg }

// Kind returns how the betas are laid out.
func (s *Schedule) Kind() ScheduleKind { return s.cfg.Kind }

// Betas returns β_t, the variance of the noise added at each step
// (Ho et al. 2020, eq. 2).
func (s *Schedule) Betas() []float64 { return clone(s.betas) }

// Alphas returns α_t = 1 - β_t.
func (s *Schedule) Alphas() []float64 { return clone(s.alphas) }

// AlphasCumprod returns ᾱ_t = ∏_{s<=t} α_s, so that
// q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1-ᾱ_t) I) (Ho et al. 2020, eq. 4).
func (s *Schedule) AlphasCumprod() []float64 { return clone(s.alphasCumprod) }

// AlphasCumprodPrev returns ᾱ_{t-1}; its first entry is ᾱ_0 = 1.
func (s *Schedule) AlphasCumprodPrev() []float64 { return clone(s.alphasCumprodPrev) }

// SqrtAlphasCumprod returns sqrt(ᾱ_t), the scale of x_0 in x_t (eq. 4).
func (s *Schedule) SqrtAlphasCumprod() []float64 { return clone(s.sqrtAlphasCumprod) }

// SqrtOneMinusAlphasCumprod returns sqrt(1 - ᾱ_t), the scale of the noise in
// x_t (eq. 4).
func (s *Schedule) SqrtOneMinusAlphasCumprod() []float64 {
	return clone(s.sqrtOneMinusAlphasCumprod)
}

// SqrtRecipAlphasCumprod returns 1/sqrt(ᾱ_t), used to recover
// x_0 = x_t/sqrt(ᾱ_t) - sqrt(1/ᾱ_t - 1) ε. It is +Inf where ᾱ_t = 0.
func (s *Schedule) SqrtRecipAlphasCumprod() []float64 { return clone(s.sqrtRecipAlphasCumprod) }

// SqrtRecipm1AlphasCumprod returns sqrt(1/ᾱ_t - 1), computed as
// sqrt(1-ᾱ_t)/sqrt(ᾱ_t). It is +Inf where ᾱ_t = 0.
func (s *Schedule) SqrtRecipm1AlphasCumprod() []float64 {
	return clone(s.sqrtRecipm1AlphasCumprod)
}

// PosteriorVariance returns β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t), the variance of
// q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7). Its first entry is 0.
func (s *Schedule) PosteriorVariance() []float64 { return clone(s.posteriorVariance) }

// PosteriorLogVarianceClipped returns log β̃_t with the first entry, log 0,
// replaced by log β̃ of the second step, as in improved-diffusion. With T = 1
// the only entry is log β_1.
func (s *Schedule) PosteriorLogVarianceClipped() []float64 {
	return clone(s.posteriorLogVarClipped)
}

// PosteriorMeanCoef1 returns β_t sqrt(ᾱ_{t-1})/(1-ᾱ_t), the coefficient of
// x_0 in the posterior mean μ̃_t(x_t, x_0) (Ho et al. 2020, eq. 7).
func (s *Schedule) PosteriorMeanCoef1() []float64 { return clone(s.posteriorMeanCoef1) }

// PosteriorMeanCoef2 returns (1-ᾱ_{t-1}) sqrt(α_t)/(1-ᾱ_t), the coefficient
// of x_t in the posterior mean μ̃_t(x_t, x_0) (Ho et al. 2020, eq. 7).
func (s *Schedule) PosteriorMeanCoef2() []float64 { return clone(s.posteriorMeanCoef2) }

// SNR returns the signal-to-noise ratio ᾱ_t/(1-ᾱ_t); it is 0 where ᾱ_t = 0.
func (s *Schedule) SNR() []float64 { return clone(s.snr) }

// LogSNR returns log ᾱ_t - log(1-ᾱ_t). Both terms are computed from sums of
// log1p(-β), so the result stays accurate where ᾱ_t is close to 1 and stays
// finite where the product ᾱ_t merely underflows to 0. It decreases with t,
// is -Inf only at the last step of a ZeroTerminalSNR schedule, and is never
// +Inf, since ᾱ_t < 1 at every step.
func (s *Schedule) LogSNR() []float64 { return clone(s.logSNR) }

// Coefficients are the per-step quantities of one timestep index, named as
// the slice accessors of Schedule name them (see there for the formulas).
type Coefficients struct {
	Beta, Alpha, AlphaCumprod, AlphaCumprodPrev    float64
	SqrtAlphaCumprod, SqrtOneMinusAlphaCumprod     float64
	SqrtRecipAlphaCumprod, SqrtRecipm1AlphaCumprod float64
	PosteriorVariance, PosteriorLogVarianceClipped float64
	PosteriorMeanCoef1, PosteriorMeanCoef2         float64
	SNR, LogSNR                                    float64
}

// At returns every coefficient of index i without copying the schedule; it
// panics if i is not in [0, T). Samplers and trainers read the schedule
// through it.
func (s *Schedule) At(i int) Coefficients {
	return Coefficients{
		Beta: s.betas[i], Alpha: s.alphas[i], AlphaCumprod: s.alphasCumprod[i], AlphaCumprodPrev: s.alphasCumprodPrev[i],
		SqrtAlphaCumprod: s.sqrtAlphasCumprod[i], SqrtOneMinusAlphaCumprod: s.sqrtOneMinusAlphasCumprod[i],
		SqrtRecipAlphaCumprod: s.sqrtRecipAlphasCumprod[i], SqrtRecipm1AlphaCumprod: s.sqrtRecipm1AlphasCumprod[i],
		PosteriorVariance: s.posteriorVariance[i], PosteriorLogVarianceClipped: s.posteriorLogVarClipped[i],
		PosteriorMeanCoef1: s.posteriorMeanCoef1[i], PosteriorMeanCoef2: s.posteriorMeanCoef2[i],
		SNR: s.snr[i], LogSNR: s.logSNR[i],
	}
}
