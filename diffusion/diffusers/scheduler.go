package diffusers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
)

// The scheduler classes of diffusers this package maps.
const (
	DDPMScheduler      = "DDPMScheduler"
	DDIMScheduler      = "DDIMScheduler"
	DPMSolverScheduler = "DPMSolverMultistepScheduler"
)

// schedulerVersion is the _diffusers_version the writer records: the
// version whose scheduler classes the mapping below was checked against.
const schedulerVersion = "0.40.0.dev0"

// SchedulerConfig is the scheduler_config.json of a diffusers DDPMScheduler,
// DDIMScheduler or DPMSolverMultistepScheduler, under diffusers' names.
// Each class has its own subset of the fields (schedulerFields); the others
// are ignored for that class and not written. ReadSchedulerConfig fills the
// fields a file leaves out with diffusers' defaults of its class.
//
// Fields of the float type schedFloat hold Python's -Infinity, Infinity and
// NaN, which Python's json writes as bare words.
type SchedulerConfig struct {
	ClassName                string     `json:"_class_name"`
	DiffusersVersion         string     `json:"_diffusers_version"`
	NumTrainTimesteps        int        `json:"num_train_timesteps"`
	BetaStart                schedFloat `json:"beta_start"`
	BetaEnd                  schedFloat `json:"beta_end"`
	BetaSchedule             string     `json:"beta_schedule"`
	TrainedBetas             []float64  `json:"trained_betas"`
	VarianceType             *string    `json:"variance_type"`
	ClipSample               bool       `json:"clip_sample"`
	ClipSampleRange          schedFloat `json:"clip_sample_range"`
	PredictionType           string     `json:"prediction_type"`
	Thresholding             bool       `json:"thresholding"`
	DynamicThresholdingRatio schedFloat `json:"dynamic_thresholding_ratio"`
	SampleMaxValue           schedFloat `json:"sample_max_value"`
	TimestepSpacing          string     `json:"timestep_spacing"`
	StepsOffset              int        `json:"steps_offset"`
	RescaleBetasZeroSNR      bool       `json:"rescale_betas_zero_snr"`

	// DDIMScheduler only.
	SetAlphaToOne bool `json:"set_alpha_to_one"`

	// DPMSolverMultistepScheduler only.
	SolverOrder          int        `json:"solver_order"`
	AlgorithmType        string     `json:"algorithm_type"`
	SolverType           string     `json:"solver_type"`
	LowerOrderFinal      bool       `json:"lower_order_final"`
	EulerAtFinal         bool       `json:"euler_at_final"`
	UseKarrasSigmas      bool       `json:"use_karras_sigmas"`
	UseExponentialSigmas bool       `json:"use_exponential_sigmas"`
	UseBetaSigmas        bool       `json:"use_beta_sigmas"`
	UseLuLambdas         bool       `json:"use_lu_lambdas"`
	UseFlowSigmas        bool       `json:"use_flow_sigmas"`
	FlowShift            schedFloat `json:"flow_shift"`
	FinalSigmasType      string     `json:"final_sigmas_type"`
	LambdaMinClipped     schedFloat `json:"lambda_min_clipped"`
	UseDynamicShifting   bool       `json:"use_dynamic_shifting"`
	TimeShiftType        string     `json:"time_shift_type"`
}

// commonSchedulerFields are the config fields every mapped class has.
var commonSchedulerFields = []string{
	"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
	"prediction_type", "thresholding", "dynamic_thresholding_ratio", "sample_max_value",
	"timestep_spacing", "steps_offset", "rescale_betas_zero_snr",
}

// schedulerFields lists the config fields of each class in diffusers
// 0.40.0.dev0 (the arguments of its constructor).
var schedulerFields = map[string][]string{
	DDPMScheduler: append(slices.Clone(commonSchedulerFields),
		"variance_type", "clip_sample", "clip_sample_range"),
	DDIMScheduler: append(slices.Clone(commonSchedulerFields),
		"clip_sample", "clip_sample_range", "set_alpha_to_one"),
	DPMSolverScheduler: append(slices.Clone(commonSchedulerFields),
		"solver_order", "algorithm_type", "solver_type", "lower_order_final", "euler_at_final",
		"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
		"use_flow_sigmas", "flow_shift", "final_sigmas_type", "lambda_min_clipped",
		"variance_type", "use_dynamic_shifting", "time_shift_type"),
}

func schedulerClasses() []string {
	return []string{DDPMScheduler, DDIMScheduler, DPMSolverScheduler}
}

// DefaultSchedulerConfig returns diffusers' defaults of a scheduler class
// (the defaults of its constructor), or an error for a class this package
// does not map.
func DefaultSchedulerConfig(class string) (SchedulerConfig, error) {
	if _, ok := schedulerFields[class]; !ok {
		return SchedulerConfig{}, fmt.Errorf("diffusers: unknown scheduler _class_name %q (supported: %s)", class, strings.Join(schedulerClasses(), ", "))
	}
	c := SchedulerConfig{
		ClassName:                class,
		DiffusersVersion:         schedulerVersion,
		NumTrainTimesteps:        1000,
		BetaStart:                0.0001,
		BetaEnd:                  0.02,
		BetaSchedule:             "linear",
		ClipSample:               true,
		ClipSampleRange:          1,
		PredictionType:           "epsilon",
		DynamicThresholdingRatio: 0.995,
		SampleMaxValue:           1,
		TimestepSpacing:          "leading",
	}
	switch class {
	case DDPMScheduler:
		v := "fixed_small"
		c.VarianceType = &v
	case DDIMScheduler:
		c.SetAlphaToOne = true
	case DPMSolverScheduler:
		c.ClipSample = false
		c.TimestepSpacing = "linspace"
		c.SolverOrder = 2
		c.AlgorithmType = "dpmsolver++"
		c.SolverType = "midpoint"
		c.LowerOrderFinal = true
		c.FlowShift = 1
		c.FinalSigmasType = "zero"
		c.LambdaMinClipped = schedFloat(math.Inf(-1))
		c.TimeShiftType = "exponential"
	}
	return c, nil
}

// ReadSchedulerConfig reads a scheduler_config.json. Fields the file leaves
// out take diffusers' defaults of its _class_name; a field that class does
// not have is an error (diffusers would ignore it, and this package does not
// guess what it meant). Keys starting with '_' other than _class_name and
// _diffusers_version are ignored.
func ReadSchedulerConfig(path string) (SchedulerConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: %w", err)
	}
	c, err := ParseSchedulerConfig(b)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

// ParseSchedulerConfig parses the bytes of a scheduler_config.json as
// ReadSchedulerConfig does.
func ParseSchedulerConfig(b []byte) (SchedulerConfig, error) {
	b = quotePythonFloats(b)
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config is not a JSON object: %w", err)
	}
	var class string
	raw, ok := keys["_class_name"]
	if !ok {
		return SchedulerConfig{}, errors.New("diffusers: scheduler config has no _class_name")
	}
	if err := json.Unmarshal(raw, &class); err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: _class_name: %w", err)
	}
	c, err := DefaultSchedulerConfig(class)
	if err != nil {
		return SchedulerConfig{}, err
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !strings.HasPrefix(k, "_") && !slices.Contains(schedulerFields[class], k) {
			return SchedulerConfig{}, fmt.Errorf("diffusers: %s has no config field %q", class, k)
		}
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: %s config: %w", class, err)
	}
	return c, nil
}

// As is the config diffusers' from_config makes of c for another scheduler
// class: the fields both classes have keep c's values (its file's, or its
// class's defaults), the others take the new class's defaults, and the
// fields the new class lacks are dropped.
func (c SchedulerConfig) As(class string) (SchedulerConfig, error) {
	fields, ok := schedulerFields[class]
	if !ok {
		return SchedulerConfig{}, fmt.Errorf("diffusers: unknown scheduler _class_name %q (supported: %s)", class, strings.Join(schedulerClasses(), ", "))
	}
	b, err := json.Marshal(c)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: %s config: %w", c.ClassName, err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: %s config: %w", c.ClassName, err)
	}
	name, _ := json.Marshal(class)
	out := map[string]json.RawMessage{"_class_name": name}
	for _, k := range fields {
		if v, ok := all[k]; ok && slices.Contains(schedulerFields[c.ClassName], k) {
			out[k] = v
		}
	}
	if b, err = json.Marshal(out); err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: %s config: %w", class, err)
	}
	return ParseSchedulerConfig(b)
}

// Schedule is the project's noise schedule for the config. It fails for the
// schedule fields the project cannot reproduce: trained_betas, a
// beta_schedule diffusers' class does not offer or the project lacks, and
// zero terminal SNR for DPM-Solver (diffusers then also replaces the last
// alphas_cumprod by 2^-24).
func (c SchedulerConfig) Schedule() (diffusion.ScheduleConfig, error) {
	if _, ok := schedulerFields[c.ClassName]; !ok {
		return diffusion.ScheduleConfig{}, fmt.Errorf("diffusers: unknown scheduler _class_name %q (supported: %s)", c.ClassName, strings.Join(schedulerClasses(), ", "))
	}
	if c.TrainedBetas != nil {
		return diffusion.ScheduleConfig{}, c.unsupported("trained_betas", fmt.Sprintf("a list of %d betas", len(c.TrainedBetas)), "the project builds its betas from beta_schedule only")
	}
	valid := []string{"linear", "scaled_linear", "squaredcos_cap_v2"}
	if c.ClassName == DDPMScheduler {
		valid = append(valid, "sigmoid") // only DDPMScheduler offers it
	}
	if !slices.Contains(valid, c.BetaSchedule) {
		return diffusion.ScheduleConfig{}, c.unsupported("beta_schedule", strconv.Quote(c.BetaSchedule), "supported: "+strings.Join(valid, ", "))
	}
	kind, err := diffusion.ParseScheduleKind(c.BetaSchedule)
	if err != nil {
		return diffusion.ScheduleConfig{}, fmt.Errorf("diffusers: %s: beta_schedule: %w", c.ClassName, err)
	}
	if c.RescaleBetasZeroSNR && c.ClassName == DPMSolverScheduler {
		return diffusion.ScheduleConfig{}, c.unsupported("rescale_betas_zero_snr", "true", "diffusers' DPM-Solver then sets the last alphas_cumprod to 2^-24 instead of 0")
	}
	// The project's schedule config reads 0 as "the default": a 0 here
	// would silently become 1000 timesteps or a beta of 1e-4 or 0.02.
	if c.NumTrainTimesteps < 1 {
		return diffusion.ScheduleConfig{}, c.unsupported("num_train_timesteps", strconv.Itoa(c.NumTrainTimesteps), "at least 1 timestep is")
	}
	if c.BetaSchedule != "squaredcos_cap_v2" && !(c.BetaStart > 0 && c.BetaEnd > 0) {
		return diffusion.ScheduleConfig{}, c.unsupported("beta_start, beta_end", fmt.Sprint(c.BetaStart, ", ", c.BetaEnd), "betas above 0 are")
	}
	// squaredcos_cap_v2 is the cosine schedule with s = 0.008 and betas
	// capped at 0.999, the project's defaults; diffusers ignores
	// beta_start and beta_end there, and so does the project.
	cfg := diffusion.ScheduleConfig{
		Kind:            kind,
		T:               c.NumTrainTimesteps,
		BetaStart:       float64(c.BetaStart),
		BetaEnd:         float64(c.BetaEnd),
		ZeroTerminalSNR: c.RescaleBetasZeroSNR,
	}
	if _, err := diffusion.NewSchedule(cfg); err != nil {
		return diffusion.ScheduleConfig{}, fmt.Errorf("diffusers: %s: %w", c.ClassName, err)
	}
	return cfg, nil
}

// Target is what the model predicts, from prediction_type.
func (c SchedulerConfig) Target() (diffusion.Target, error) {
	switch c.PredictionType {
	case "epsilon":
		return diffusion.Epsilon, nil
	case "sample":
		return diffusion.X0, nil
	case "v_prediction":
		return diffusion.V, nil
	}
	return "", c.unsupported("prediction_type", strconv.Quote(c.PredictionType), "supported: epsilon, sample, v_prediction")
}

// SamplerOptions are the sampler options that sample as diffusers' pipeline
// with this scheduler does: the sampler from _class_name (DDPM, DDIM with
// η = 0 as DDIMPipeline's default, DPM-Solver++(2M)), its variance, its
// clipping, its timestep spacing and the target. Steps is left 0: the
// project's defaults (T for DDPM, 50 for DDIM) are the pipelines' defaults
// for T = 1000; call CheckSteps with any other count.
//
// Every field is checked, and anything the project's samplers would do
// differently is an error naming the field and its value (see the
// comments below for why each one is rejected).
func (c SchedulerConfig) SamplerOptions() (sampler.Options, error) {
	if _, err := c.Schedule(); err != nil {
		return sampler.Options{}, err
	}
	target, err := c.Target()
	if err != nil {
		return sampler.Options{}, err
	}
	o := sampler.Options{Target: target}
	if c.StepsOffset != 0 {
		return sampler.Options{}, c.unsupported("steps_offset", strconv.Itoa(c.StepsOffset), "the project's spacings have no offset")
	}
	if o.Spacing, err = c.spacing(); err != nil {
		return sampler.Options{}, err
	}
	if o.Clip, o.DynamicPercentile, err = c.clip(); err != nil {
		return sampler.Options{}, err
	}
	switch c.ClassName {
	case DDPMScheduler:
		o.Sampler = sampler.DDPM
		v := "<null>"
		if c.VarianceType != nil {
			v = *c.VarianceType
		}
		switch v {
		case "fixed_small", "fixed_small_log":
			// fixed_small_log takes the standard deviation as
			// exp(log(var)/2): sqrt(var) to rounding.
			o.Variance = sampler.FixedSmall
		case "fixed_large":
			o.Variance = sampler.FixedLarge
		default:
			// learned and learned_range read a variance from the model's
			// extra output channels, which the project's models do not
			// have; fixed_large_log takes the square root of a log
			// (NaN) in diffusers 0.40.
			return sampler.Options{}, c.unsupported("variance_type", strconv.Quote(v), "supported: fixed_small, fixed_small_log, fixed_large")
		}
	case DDIMScheduler:
		o.Sampler = sampler.DDIM
		// set_alpha_to_one = false: the last step goes to alphas_cumprod[0]
		// instead of 1.
		o.FinalAlphaCumprodAtZero = !c.SetAlphaToOne
		// diffusers' DDIM clips pred_original_sample but keeps the model's
		// own noise prediction in the direction term (DDIMPipeline passes
		// use_clipped_model_output=False by default).
		o.KeepModelEps = o.Clip != sampler.ClipNone
	case DPMSolverScheduler:
		o.Sampler = sampler.DPMPP2M
		if err := c.checkDPMSolver(); err != nil {
			return sampler.Options{}, err
		}
	}
	return o, nil
}

// spacing maps timestep_spacing for the class.
func (c SchedulerConfig) spacing() (diffusion.Spacing, error) {
	var sp diffusion.Spacing
	switch c.TimestepSpacing {
	case "linspace":
		sp = diffusion.SpacingLinspace
	case "leading":
		sp = diffusion.SpacingLeading
	case "trailing":
		sp = diffusion.SpacingTrailing
	default:
		return "", c.unsupported("timestep_spacing", strconv.Quote(c.TimestepSpacing), "supported: linspace, leading, trailing")
	}
	switch {
	case c.ClassName == DDIMScheduler && sp == diffusion.SpacingLinspace:
		// diffusers' DDIM steps from t to t - T/n whatever the spacing,
		// which skips or repeats the rounded linspace points; the
		// project's DDIM steps to the next visited timestep.
		return "", c.unsupported("timestep_spacing", `"linspace"`, "diffusers' DDIM steps to t - T/n, not to the next linspace point")
	case c.ClassName == DPMSolverScheduler && sp != diffusion.SpacingTrailing:
		// diffusers' solver visits n of n+1 linspace or leading points
		// (the last, 0, is dropped), which no project spacing gives.
		return "", c.unsupported("timestep_spacing", strconv.Quote(c.TimestepSpacing), "diffusers' DPM-Solver then visits n of n+1 points; only trailing matches the project")
	}
	return sp, nil
}

// clip maps clip_sample and thresholding. diffusers' thresholding bounds
// the percentile s to [1, sample_max_value], so with the default
// sample_max_value = 1 it is exactly clamping to [-1, 1] (ClipStatic);
// the project's dynamic thresholding has no upper bound, which a
// sample_max_value of at least the float32 maximum reproduces.
func (c SchedulerConfig) clip() (sampler.Clip, float64, error) {
	if c.Thresholding {
		ratio := float64(c.DynamicThresholdingRatio)
		if !(ratio > 0 && ratio <= 1) {
			return "", 0, c.unsupported("dynamic_thresholding_ratio", formatFloat(ratio), "must be in (0, 1]")
		}
		switch smv := float64(c.SampleMaxValue); {
		case smv == 1:
			return sampler.ClipStatic, 0, nil
		case smv >= math.MaxFloat32:
			return sampler.ClipDynamic, ratio, nil
		default:
			return "", 0, c.unsupported("sample_max_value", formatFloat(smv), "with thresholding, the project bounds the threshold by 1 (sample_max_value 1) or not at all (sample_max_value >= 3.4028235e+38)")
		}
	}
	if c.ClipSample && c.ClassName != DPMSolverScheduler {
		if c.ClipSampleRange != 1 {
			return "", 0, c.unsupported("clip_sample_range", formatFloat(float64(c.ClipSampleRange)), "the project clips x_0 to [-1, 1] only")
		}
		return sampler.ClipStatic, 0, nil
	}
	return sampler.ClipNone, 0, nil
}

// checkDPMSolver rejects the DPM-Solver settings other than the
// DPM-Solver++(2M) the project runs: data prediction, second order,
// midpoint form, schedule-derived sigmas, a final step to sigma = 0.
func (c SchedulerConfig) checkDPMSolver() error {
	bad := func(field string, v any, why string) error {
		var val string
		switch v := v.(type) {
		case string:
			val = strconv.Quote(v)
		case float64:
			val = formatFloat(v)
		default:
			val = fmt.Sprint(v)
		}
		return c.unsupported(field, val, why)
	}
	switch {
	case c.SolverOrder != 2:
		return bad("solver_order", c.SolverOrder, "the project's DPM-Solver++ is second order")
	case c.AlgorithmType != "dpmsolver++":
		return bad("algorithm_type", c.AlgorithmType, `only "dpmsolver++" (data prediction)`)
	case c.SolverType != "midpoint":
		return bad("solver_type", c.SolverType, `only "midpoint"`)
	case c.EulerAtFinal:
		return bad("euler_at_final", true, "")
	case c.UseKarrasSigmas:
		return bad("use_karras_sigmas", true, "diffusers then interpolates timesteps between training steps")
	case c.UseExponentialSigmas:
		return bad("use_exponential_sigmas", true, "")
	case c.UseBetaSigmas:
		return bad("use_beta_sigmas", true, "")
	case c.UseLuLambdas:
		return bad("use_lu_lambdas", true, "")
	case c.UseFlowSigmas:
		return bad("use_flow_sigmas", true, "")
	case c.UseDynamicShifting:
		return bad("use_dynamic_shifting", true, "")
	case c.FinalSigmasType != "zero":
		return bad("final_sigmas_type", c.FinalSigmasType, `the project's last step lands on sigma = 0 ("zero")`)
	case !math.IsInf(float64(c.LambdaMinClipped), -1):
		return bad("lambda_min_clipped", float64(c.LambdaMinClipped), "the project does not clip lambda (-Infinity)")
	case c.VarianceType != nil:
		return bad("variance_type", *c.VarianceType, "only null: the project's models predict no variance")
	}
	return nil
}

// CheckSteps reports whether sampling with n steps (SamplerOptions with
// Steps = n) follows diffusers' scheduler after set_timesteps(n) step for
// step. Where the visited timesteps are the same, the update rules can
// still differ for some n:
//
//   - DDPM: diffusers adds noise on every step whose timestep is above 0,
//     the project never on the last one, so the last timestep must be 0
//     (trailing spacing with n < T ends above 0).
//   - DDIM: diffusers steps from t to t - T/n (integer division) and ends
//     on alpha = 1 only when that is negative; the project steps to the
//     next visited timestep and ends on alpha = 1.
//
// DPM-Solver++(2M) needs no check: diffusers' lower_order_final (n < 15)
// makes the last step first order, which final_sigmas_type "zero" (the
// only one the project takes) makes it anyway, and its second-order
// second-to-last step is the project's.
func (c SchedulerConfig) CheckSteps(n int) error {
	o, err := c.SamplerOptions()
	if err != nil {
		return err
	}
	cfg, _ := c.Schedule()
	sc, err := diffusion.NewSchedule(cfg)
	if err != nil {
		return fmt.Errorf("diffusers: %s: %w", c.ClassName, err)
	}
	ts, err := sc.Timesteps(n, o.Spacing)
	if err != nil {
		return fmt.Errorf("diffusers: %s: %w", c.ClassName, err)
	}
	T := sc.T()
	switch c.ClassName {
	case DDPMScheduler:
		if last := ts[len(ts)-1]; last != 0 {
			return fmt.Errorf("diffusers: %s with timestep_spacing %q and %d steps ends at timestep %d, where diffusers still adds noise and the project does not", c.ClassName, c.TimestepSpacing, n, last)
		}
	case DDIMScheduler:
		for i, t := range ts {
			next := -1
			if i+1 < len(ts) {
				next = ts[i+1]
			}
			if prev := t - T/n; prev != next && !(next == -1 && prev < 0) {
				return fmt.Errorf("diffusers: %s with timestep_spacing %q and %d steps goes from timestep %d to %d, the project to %d", c.ClassName, c.TimestepSpacing, n, t, prev, next)
			}
		}
	}
	return nil
}

// unsupported is the error for a field value the project cannot reproduce.
func (c SchedulerConfig) unsupported(field, value, why string) error {
	msg := fmt.Sprintf("diffusers: %s: %s = %s is not supported", c.ClassName, field, value)
	if why != "" {
		msg += ": " + why
	}
	return errors.New(msg)
}

// SchedulerConfigFor is the DDPMScheduler config under which diffusers
// samples as the project does with the schedule sc, a model predicting
// target, and DDPM options o (o.Sampler must be DDPM or empty; only
// Variance, Clip, DynamicPercentile and Spacing are read). It fails for
// what diffusers cannot express: a cosine schedule with other than s = 0.008
// and max beta 0.999, logsnr or karras spacing.
func SchedulerConfigFor(sc diffusion.ScheduleConfig, target diffusion.Target, o sampler.Options) (SchedulerConfig, error) {
	s, err := diffusion.NewSchedule(sc)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: %w", err)
	}
	sc = s.Config() // defaults filled in
	c, _ := DefaultSchedulerConfig(DDPMScheduler)
	name, err := sc.Kind.MarshalText()
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: %w", err)
	}
	if sc.Kind == diffusion.Cosine && (sc.CosineS != 0.008 || sc.MaxBeta != 0.999) {
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: cosine schedule with s = %g and max beta %g: diffusers' squaredcos_cap_v2 fixes s = 0.008 and max beta 0.999", sc.CosineS, sc.MaxBeta)
	}
	c.BetaSchedule = string(name)
	c.NumTrainTimesteps = sc.T
	c.BetaStart, c.BetaEnd = schedFloat(sc.BetaStart), schedFloat(sc.BetaEnd)
	c.RescaleBetasZeroSNR = sc.ZeroTerminalSNR
	if target == "" {
		target = diffusion.Epsilon
	}
	if !target.Valid() {
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: unknown target %q", target)
	}
	c.PredictionType = target.DiffusersName()

	if o.Sampler != "" && o.Sampler != sampler.DDPM {
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: sampler %q: a DDPMScheduler config describes the DDPM sampler", o.Sampler)
	}
	switch o.Variance {
	case "", sampler.FixedSmall:
		*c.VarianceType = "fixed_small"
	case sampler.FixedLarge:
		*c.VarianceType = "fixed_large"
	default:
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: unknown variance %q", o.Variance)
	}
	switch o.Clip {
	case "", sampler.ClipNone:
		c.ClipSample = false
	case sampler.ClipStatic:
		c.ClipSample = true
	case sampler.ClipDynamic:
		c.ClipSample = false
		c.Thresholding = true
		c.DynamicThresholdingRatio = schedFloat(o.DynamicPercentile)
		if o.DynamicPercentile == 0 {
			c.DynamicThresholdingRatio = sampler.DefaultDynamicPercentile
		}
		c.SampleMaxValue = math.MaxFloat32 // no upper bound on the threshold
	default:
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: unknown clip mode %q", o.Clip)
	}
	switch o.Spacing {
	case "", diffusion.SpacingLinspace: // the project's DDPM default
		c.TimestepSpacing = "linspace"
	case diffusion.SpacingLeading, diffusion.SpacingTrailing:
		c.TimestepSpacing = string(o.Spacing)
	default:
		return SchedulerConfig{}, fmt.Errorf("diffusers: scheduler config: timestep spacing %q has no diffusers timestep_spacing", o.Spacing)
	}
	return c, nil
}

// MarshalJSON writes the fields of the config's class, sorted by name, as
// diffusers' to_json_string does (numbers as Python prints them, so that
// a config read from diffusers is written back byte for byte).
func (c SchedulerConfig) MarshalJSON() ([]byte, error) {
	fields, ok := schedulerFields[c.ClassName]
	if !ok {
		return nil, fmt.Errorf("diffusers: unknown scheduler _class_name %q (supported: %s)", c.ClassName, strings.Join(schedulerClasses(), ", "))
	}
	type plain SchedulerConfig // without this method
	b, err := json.Marshal(plain(c))
	if err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{
		"_class_name":        all["_class_name"],
		"_diffusers_version": json.RawMessage(strconv.Quote(schedulerVersion)),
	}
	for _, f := range fields {
		out[f] = all[f]
	}
	return json.Marshal(out)
}

// WriteSchedulerConfig writes c to path as diffusers writes a
// scheduler_config.json: every field of its class plus _class_name and
// _diffusers_version, sorted, indented by two spaces.
func WriteSchedulerConfig(path string, c SchedulerConfig) error {
	b, err := EncodeSchedulerConfig(c)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("diffusers: scheduler config: %w", err)
	}
	return nil
}

// EncodeSchedulerConfig is the bytes WriteSchedulerConfig writes.
func EncodeSchedulerConfig(c SchedulerConfig) ([]byte, error) {
	compact, err := c.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, compact, "", "  "); err != nil {
		return nil, fmt.Errorf("diffusers: scheduler config: %w", err)
	}
	buf.WriteByte('\n')
	return unquotePythonFloats(buf.Bytes()), nil
}

// schedFloat is a float64 that reads and writes JSON numbers as Python's
// json module does: integral values as "1.0", the non-finite values as
// the words -Infinity, Infinity and NaN (carried through encoding/json as
// the strings pyInf and so on; see quotePythonFloats).
type schedFloat float64

// Sentinels standing in for Python's non-finite JSON words inside
// encoding/json.
const (
	pyNegInf = "\x00-Infinity"
	pyPosInf = "\x00Infinity"
	pyNaN    = "\x00NaN"
)

func (f schedFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsInf(v, -1):
		return json.Marshal(pyNegInf)
	case math.IsInf(v, 1):
		return json.Marshal(pyPosInf)
	case math.IsNaN(v):
		return json.Marshal(pyNaN)
	}
	return []byte(formatFloat(v)), nil
}

func (f *schedFloat) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		switch s {
		case pyNegInf:
			*f = schedFloat(math.Inf(-1))
		case pyPosInf:
			*f = schedFloat(math.Inf(1))
		case pyNaN:
			*f = schedFloat(math.NaN())
		default:
			return fmt.Errorf("want a number, got the string %q", s)
		}
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = schedFloat(v)
	return nil
}

// formatFloat prints a finite v as Python's repr does: the shortest
// digits that read back as v, in exponent form below 1e-4 and from 1e16
// on, with ".0" on integral values otherwise.
func formatFloat(v float64) string {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	if a := math.Abs(v); a != 0 && (a < 1e-4 || a >= 1e16) {
		return strconv.FormatFloat(v, 'e', -1, 64) // 1e-05, 1.5e+16
	}
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// quotePythonFloats replaces the bare words -Infinity, Infinity and NaN
// outside JSON strings by the sentinel strings schedFloat reads.
func quotePythonFloats(b []byte) []byte {
	var out bytes.Buffer
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		ch := b[i]
		if inString {
			out.WriteByte(ch)
			switch {
			case escaped:
				escaped = false
			case ch == '\\':
				escaped = true
			case ch == '"':
				inString = false
			}
			continue
		}
		if ch == '"' {
			inString = true
			out.WriteByte(ch)
			continue
		}
		matched := false
		for _, w := range []struct{ word, sentinel string }{{"-Infinity", pyNegInf}, {"Infinity", pyPosInf}, {"NaN", pyNaN}} {
			if bytes.HasPrefix(b[i:], []byte(w.word)) {
				q, _ := json.Marshal(w.sentinel)
				out.Write(q)
				i += len(w.word) - 1
				matched = true
				break
			}
		}
		if !matched {
			out.WriteByte(ch)
		}
	}
	return out.Bytes()
}

// unquotePythonFloats is the inverse of quotePythonFloats on encoded JSON.
func unquotePythonFloats(b []byte) []byte {
	for _, w := range []struct{ word, sentinel string }{{"-Infinity", pyNegInf}, {"Infinity", pyPosInf}, {"NaN", pyNaN}} {
		q, _ := json.Marshal(w.sentinel)
		b = bytes.ReplaceAll(b, q, []byte(w.word))
	}
	return b
}
