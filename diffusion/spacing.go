package diffusion

import (
	"fmt"
	"math"
	"sort"

	"github.com/ddpm-go/ddpm/internal/enum"
)

// Spacing names how a sampler of n steps picks its timesteps among the T
// training timesteps of a Schedule. The first three follow diffusers; see
// Table 2 of Lin et al. 2024 for how they differ.
type Spacing string

const (
	// SpacingLinspace rounds n evenly spaced points from T-1 down to 0
	// (half to even, as numpy does). The first step is T-1.
	SpacingLinspace Spacing = "linspace"
	// SpacingLeading takes multiples of the integer ratio k = ⌊T/n⌋:
	// (n-1)k, …, k, 0, with no offset. The first step is (n-1)k, which is
	// T - T/n when n divides T: it does NOT start at T-1, so the sampler
	// never sees the noisiest training step (the flaw pointed out by Lin et
	// al. 2024). DDIM with 10 steps and T = 1000 starts at 900.
	SpacingLeading Spacing = "leading"
	// SpacingTrailing steps down from T by the real ratio r = T/n:
	// round(T - i·r) - 1 for i = 0, …, n-1. The first step is T-1.
	SpacingTrailing Spacing = "trailing"
	// SpacingLogSNR picks the timesteps whose log SNR is closest to n points
	// evenly spaced in log SNR between the steps T-1 and 0.
	SpacingLogSNR Spacing = "logsnr"
	// SpacingKarras picks the timesteps whose noise level
	// σ = sqrt((1-ᾱ)/ᾱ) is closest, in log σ, to the n levels of Karras et
	// al. 2022 (eq. 5, ρ = 7) between σ at T-1 and σ at 0.
	SpacingKarras Spacing = "karras"
)

// karrasRho is the ρ of Karras et al. 2022, eq. 5.
const karrasRho = 7

var spacings = []Spacing{SpacingLinspace, SpacingLeading, SpacingTrailing, SpacingLogSNR, SpacingKarras}

// ParseSpacing parses the name of a timestep spacing the enum way.
func ParseSpacing(s string) (Spacing, error) {
	v, err := enum.Parse("timestep spacing", s, spacings, nil)
	if err != nil {
		return "", fmt.Errorf("diffusion: %w", err)
	}
	return v, nil
}

// Timesteps returns n strictly decreasing training timesteps in [0, T) for a
// sampler of n steps, noisiest first. Indices follow the convention of
// Schedule: timestep i is the paper's t = i+1.
//
// n must lie in [1, T]. Linspace, leading and trailing always yield n
// distinct timesteps then; for n = 1, linspace returns [T-1] (numpy's
// linspace would give [0]) and leading returns [0]. Trailing always returns
// exactly n timesteps, even where numpy's arange with a float step would
// produce one more.
//
// Logsnr and karras map target noise levels to the nearest training
// timestep; the first step is always T-1 and the last always 0. Where the
// schedule's noise level changes fast (near t = 0, and at t = T-1 of the
// cosine schedule, whose last beta is clipped), several targets round to
// the same timestep; each such target then takes the nearest free timestep
// below the previous step (separate), so every n in [1, T] gives n distinct
// timesteps as close to the targets as the integer training timesteps
// allow. (Fractional timesteps, as diffusers uses for these spacings,
// would feed the model noise levels it was never trained at.)
// With a ZeroTerminalSNR schedule, whose log SNR at T-1 is -Inf, the targets
// after the first are spread from the log SNR at T-2 instead.
func (s *Schedule) Timesteps(n int, spacing Spacing) ([]int, error) {
	T := s.T()
	if n < 1 || n > T {
		return nil, fmt.Errorf("diffusion: steps %d out of range [1, %d]", n, T)
	}
	var ts []int
	switch spacing {
	case SpacingLinspace:
		ts = linspaceTimesteps(T, n)
	case SpacingLeading:
		ts = leadingTimesteps(T, n)
	case SpacingTrailing:
		ts = trailingTimesteps(T, n)
	case SpacingLogSNR:
		ts = separate(s.logSNRTimesteps(n))
	case SpacingKarras:
		ts = separate(s.karrasTimesteps(n))
	default:
		return nil, fmt.Errorf("diffusion: unknown timestep spacing %q (valid: %s)", spacing, enum.List(spacings))
	}
	for i, t := range ts {
		if t < 0 || t >= T {
			return nil, fmt.Errorf("diffusion: %s spacing with %d steps gives timestep %d outside [0, %d)", spacing, n, t, T)
		}
		if i > 0 && t >= ts[i-1] {
			return nil, fmt.Errorf("diffusion: %s spacing with %d steps maps two steps to timestep %d; use fewer steps or %s spacing", spacing, n, ts[i-1], SpacingLinspace)
		}
	}
	return ts, nil
}

// separate makes nearest-timestep picks strictly decreasing: step k keeps
// its pick if it is below step k-1's, else takes step k-1's minus one, and
// never goes below n-1-k, so that the remaining steps still fit above 0.
// The first pick (T-1) and the last (0) are unchanged.
func separate(ts []int) []int {
	n := len(ts)
	for k := 1; k < n; k++ {
		ts[k] = max(min(ts[k], ts[k-1]-1), n-1-k)
	}
	return ts
}

// linspaceTimesteps rounds numpy's linspace(0, T-1, n), computed as i·step
// with the last point set to T-1, and reverses it.
func linspaceTimesteps(T, n int) []int {
	ts := make([]int, n)
	if n == 1 {
		ts[0] = T - 1
		return ts
	}
	step := float64(T-1) / float64(n-1)
	for i := 0; i < n-1; i++ {
		ts[n-1-i] = int(math.RoundToEven(float64(i) * step))
	}
	ts[0] = T - 1
	return ts
}

// leadingTimesteps returns k·(n-1), …, k, 0 for k = ⌊T/n⌋.
func leadingTimesteps(T, n int) []int {
	k := T / n
	ts := make([]int, n)
	for i := range ts {
		ts[i] = (n - 1 - i) * k
	}
	return ts
}

// trailingTimesteps returns round(T - i·r) - 1 for r = T/n and i = 0, …, n-1.
// The points are formed as numpy's arange(T, 0, -r) forms them, T + i·d with
// d = (T - r) - T, and rounded half to even, so that ties round alike.
func trailingTimesteps(T, n int) []int {
	start := float64(T)
	r := start / float64(n)
	d := (start - r) - start
	ts := make([]int, n)
	for i := range ts {
		v := start + float64(float64(i)*d)
		ts[i] = int(math.RoundToEven(v)) - 1
	}
	return ts
}

// logSNRTimesteps maps n targets evenly spaced in log SNR to the nearest
// training timesteps.
func (s *Schedule) logSNRTimesteps(n int) []int {
	T := s.T()
	ts := make([]int, n)
	ts[0] = T - 1
	if n == 1 {
		return ts
	}
	lo, hi := s.terminalLogSNR(), s.logSNR[0]
	for k := 1; k < n; k++ {
		y := hi
		if k < n-1 {
			y = lo + (hi-lo)*float64(k)/float64(n-1)
		}
		ts[k] = s.nearestByLogSNR(y)
	}
	return ts
}

// karrasTimesteps maps the noise levels of Karras et al. 2022, eq. 5,
//
//	σ_k = (σ_max^(1/ρ) + k/(n-1) · (σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ,
//
// to the nearest training timesteps in log σ. Since log σ = -logSNR/2, the
// roots σ^(1/ρ) are computed as exp(-logSNR/(2ρ)).
func (s *Schedule) karrasTimesteps(n int) []int {
	T := s.T()
	ts := make([]int, n)
	ts[0] = T - 1
	if n == 1 {
		return ts
	}
	maxRoot := math.Exp(-s.terminalLogSNR() / (2 * karrasRho))
	minRoot := math.Exp(-s.logSNR[0] / (2 * karrasRho))
	for k := 1; k < n; k++ {
		y := s.logSNR[0]
		if k < n-1 {
			root := maxRoot + float64(k)/float64(n-1)*(minRoot-maxRoot)
			// logSNR = -2 log σ = -2ρ log σ^(1/ρ)
			y = -2 * karrasRho * math.Log(root)
		}
		ts[k] = s.nearestByLogSNR(y)
	}
	return ts
}

// terminalLogSNR is the log SNR at T-1, or at T-2 if the former is -Inf
// (zero terminal SNR). It is only called with T >= 2.
func (s *Schedule) terminalLogSNR() float64 {
	T := s.T()
	if v := s.logSNR[T-1]; !math.IsInf(v, -1) {
		return v
	}
	return s.logSNR[T-2]
}

// nearestByLogSNR returns the timestep whose log SNR is closest to y. The
// log SNR decreases with the timestep; ties go to the smaller timestep.
func (s *Schedule) nearestByLogSNR(y float64) int {
	lam := s.logSNR
	// First index whose log SNR is at or below y.
	i := sort.Search(len(lam), func(i int) bool { return lam[i] <= y })
	switch {
	case i == 0:
		return 0
	case i == len(lam):
		return len(lam) - 1
	case lam[i-1]-y <= y-lam[i]:
		return i - 1
	default:
		return i
	}
}
