package diffusion

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestParseSpacing(t *testing.T) {
	for _, sp := range []Spacing{SpacingLinspace, SpacingLeading, SpacingTrailing, SpacingLogSNR, SpacingKarras} {
		for _, in := range []string{string(sp), " " + strings.ToUpper(string(sp)) + " "} {
			got, err := ParseSpacing(in)
			if err != nil || got != sp {
				t.Errorf("ParseSpacing(%q) = %q, %v, want %q", in, got, err, sp)
			}
		}
	}
	_, err := ParseSpacing("uniform")
	if err == nil || !strings.Contains(err.Error(), "linspace, leading, trailing, logsnr, karras") {
		t.Errorf("ParseSpacing(\"uniform\") error = %v, want one listing the valid spacings", err)
	}
}

func TestTimestepsKnown(t *testing.T) {
	s := mustSchedule(t, DefaultScheduleConfig())
	tests := []struct {
		spacing Spacing
		n       int
		want    []int
	}{
		// Table 2 of Lin et al. 2024 and diffusers' DDIM, T = 1000.
		{SpacingTrailing, 10, []int{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}},
		{SpacingLeading, 10, []int{900, 800, 700, 600, 500, 400, 300, 200, 100, 0}},
		{SpacingLinspace, 10, []int{999, 888, 777, 666, 555, 444, 333, 222, 111, 0}},
		// Non-integer ratios: trailing rounds T - i·T/n, leading floors T/n,
		// linspace rounds 499.5 half to even.
		{SpacingTrailing, 3, []int{999, 666, 332}},
		{SpacingLeading, 3, []int{666, 333, 0}},
		{SpacingLinspace, 3, []int{999, 500, 0}},
		// Ties: 1000 - 62.5·i rounds half to even.
		{SpacingTrailing, 16, []int{999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61}},
		// One step.
		{SpacingTrailing, 1, []int{999}},
		{SpacingLeading, 1, []int{0}},
		{SpacingLinspace, 1, []int{999}},
		{SpacingLogSNR, 1, []int{999}},
		{SpacingKarras, 1, []int{999}},
		// Two steps: both ends.
		{SpacingLinspace, 2, []int{999, 0}},
		{SpacingTrailing, 2, []int{999, 499}},
		{SpacingLeading, 2, []int{500, 0}},
		{SpacingLogSNR, 2, []int{999, 0}},
		{SpacingKarras, 2, []int{999, 0}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.spacing, tt.n), func(t *testing.T) {
			got, err := s.Timesteps(tt.n, tt.spacing)
			if err != nil {
				t.Fatal(err)
			}
			if !equalInts(got, tt.want) {
				t.Errorf("Timesteps(%d, %s) = %v, want %v", tt.n, tt.spacing, got, tt.want)
			}
		})
	}
}

func checkTimesteps(t *testing.T, ts []int, n, T int) {
	t.Helper()
	if len(ts) != n {
		t.Fatalf("got %d timesteps, want %d", len(ts), n)
	}
	for i, v := range ts {
		if v < 0 || v >= T {
			t.Fatalf("timestep %d = %d outside [0, %d): %v", i, v, T, ts)
		}
		if i > 0 && v >= ts[i-1] {
			t.Fatalf("timesteps not strictly decreasing at %d: %v", i, ts)
		}
	}
}

func TestTimestepsStrictlyDecreasing(t *testing.T) {
	s := mustSchedule(t, DefaultScheduleConfig())
	for _, sp := range []Spacing{SpacingLinspace, SpacingLeading, SpacingTrailing} {
		for _, n := range []int{1, 2, 10, 50, 999, 1000} {
			t.Run(fmt.Sprintf("%s/%d", sp, n), func(t *testing.T) {
				ts, err := s.Timesteps(n, sp)
				if err != nil {
					t.Fatal(err)
				}
				checkTimesteps(t, ts, n, 1000)
				switch sp {
				case SpacingLinspace, SpacingTrailing:
					if ts[0] != 999 {
						t.Errorf("first timestep = %d, want T-1 = 999", ts[0])
					}
				case SpacingLeading:
					if want := (n - 1) * (1000 / n); ts[0] != want {
						t.Errorf("first timestep = %d, want (n-1)·⌊T/n⌋ = %d", ts[0], want)
					}
					if ts[n-1] != 0 {
						t.Errorf("last timestep = %d, want 0", ts[n-1])
					}
				}
				if sp == SpacingLinspace && ts[n-1] != 0 && n > 1 {
					t.Errorf("last timestep = %d, want 0", ts[n-1])
				}
			})
		}
	}
}

// Every step count of every schedule length up to a few hundred yields
// distinct timesteps for the fixed spacings.
func TestTimestepsExhaustive(t *testing.T) {
	for _, T := range []int{1, 2, 3, 7, 10, 97, 128, 333, 1000} {
		s := mustSchedule(t, ScheduleConfig{T: T})
		for _, sp := range []Spacing{SpacingLinspace, SpacingLeading, SpacingTrailing} {
			t.Run(fmt.Sprintf("T%d/%s", T, sp), func(t *testing.T) {
				for n := 1; n <= T; n++ {
					ts, err := s.Timesteps(n, sp)
					if err != nil {
						t.Fatalf("Timesteps(%d): %v", n, err)
					}
					checkTimesteps(t, ts, n, T)
				}
			})
		}
	}
}

func TestTimestepsErrors(t *testing.T) {
	s := mustSchedule(t, DefaultScheduleConfig())
	for _, sp := range []Spacing{SpacingLinspace, SpacingLeading, SpacingTrailing, SpacingLogSNR, SpacingKarras} {
		for _, n := range []int{0, -1, 1001} {
			t.Run(fmt.Sprintf("%s/%d", sp, n), func(t *testing.T) {
				_, err := s.Timesteps(n, sp)
				want := fmt.Sprintf("steps %d out of range [1, 1000]", n)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Timesteps(%d) error = %v, want %q", n, err, want)
				}
			})
		}
	}
	t.Run("unknown spacing", func(t *testing.T) {
		_, err := s.Timesteps(10, "uniform")
		if err == nil || !strings.Contains(err.Error(), `unknown timestep spacing "uniform"`) {
			t.Errorf("error = %v", err)
		}
	})
}

// Every step count from 1 to T gives distinct decreasing timesteps with the
// noise-level spacings, on every schedule kind, the cosine one (whose clipped
// last beta drops log SNR from -12.9 to -19.8 in one step) included.
func TestNoiseLevelSpacingsNeverCollide(t *testing.T) {
	for _, k := range scheduleKinds {
		s := mustSchedule(t, kindConfig(k, false))
		for _, sp := range []Spacing{SpacingLogSNR, SpacingKarras} {
			for n := 1; n <= s.T(); n++ {
				ts, err := s.Timesteps(n, sp)
				if err != nil {
					t.Fatalf("%s %s n=%d: %v", k, sp, n, err)
				}
				checkTimesteps(t, ts, n, s.T())
			}
		}
	}
}

// nearestBrute returns the timestep whose log SNR is closest to y, ties to
// the smaller timestep.
func nearestBrute(lam []float64, y float64) int {
	best := 0
	for i := range lam {
		if math.Abs(lam[i]-y) < math.Abs(lam[best]-y) {
			best = i
		}
	}
	return best
}

func TestTimestepsNoiseLevelSpacings(t *testing.T) {
	tests := []struct {
		kind    ScheduleKind
		zeroSNR bool
		n       int
	}{
		{Linear, false, 10},
		{Linear, false, 30},
		{Linear, true, 20},
		{ScaledLinear, false, 20},
		{Sigmoid, false, 25},
		{Cosine, false, 5},
		{Cosine, true, 12},
	}
	for _, tt := range tests {
		s := mustSchedule(t, kindConfig(tt.kind, tt.zeroSNR))
		lam := s.LogSNR()
		T := s.T()
		lo := lam[T-1]
		if math.IsInf(lo, -1) {
			lo = lam[T-2]
		}
		hi := lam[0]
		targets := map[Spacing]func(k int) float64{
			SpacingLogSNR: func(k int) float64 {
				return lo + (hi-lo)*float64(k)/float64(tt.n-1)
			},
			SpacingKarras: func(k int) float64 {
				// σ = sqrt((1-ᾱ)/ᾱ) = exp(-logSNR/2); Karras et al. 2022, eq. 5.
				sMax, sMin := math.Exp(-lo/2), math.Exp(-hi/2)
				r := math.Pow(sMax, 1.0/7) + float64(k)/float64(tt.n-1)*(math.Pow(sMin, 1.0/7)-math.Pow(sMax, 1.0/7))
				sigma := math.Pow(r, 7)
				return -2 * math.Log(sigma)
			},
		}
		for sp, target := range targets {
			t.Run(fmt.Sprintf("%s/%s/%d", name(tt.kind, tt.zeroSNR), sp, tt.n), func(t *testing.T) {
				ts, err := s.Timesteps(tt.n, sp)
				if err != nil {
					t.Fatal(err)
				}
				checkTimesteps(t, ts, tt.n, T)
				if ts[0] != T-1 || ts[tt.n-1] != 0 {
					t.Fatalf("timesteps %v do not run from T-1 to 0", ts)
				}
				for k := 1; k < tt.n-1; k++ {
					y := target(k)
					want := nearestBrute(lam, y)
					if ts[k] != want {
						// Accept an exact tie broken the other way.
						if math.Abs(math.Abs(lam[ts[k]]-y)-math.Abs(lam[want]-y)) > 1e-9 {
							t.Fatalf("step %d: timestep %d (logSNR %v), nearest to target %v is %d (logSNR %v)", k, ts[k], lam[ts[k]], y, want, lam[want])
						}
					}
				}
			})
		}
	}
}
