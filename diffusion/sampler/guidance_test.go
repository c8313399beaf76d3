package sampler

import (
	"context"
	"math"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

// On a two-class mixture (classes N(∓m, s²)) with the exact conditional and
// unconditional models, plain conditional sampling (w = 1) draws each
// class, the null label draws the mixture, and guidance w > 1 pushes the
// samples of each class further from the other class, more so as w grows.
func TestSampleGuidanceMixture(t *testing.T) {
	const m, s, n = 0.4, 0.4, 20000
	sc := mustSchedule(t, diffusion.DefaultScheduleConfig())
	ls := torch.NewScope(torch.Inference)
	defer ls.Close()
	lab := make([]int64, n)
	null := make([]int64, n)
	for i := range lab {
		lab[i] = int64(i % 2) // even samples class 0 (-m), odd class 1 (+m)
		null[i] = sampleMixtureNull
	}
	labels, nullLabels := ls.FromInt64s(lab, n), ls.FromInt64s(null, n)
	x := sampleNoise(t, 11, n, 1, 1, 1)

	// classMoments samples with weight w and returns the mean and std of
	// the class-0 and class-1 samples.
	classMoments := func(w float64, labels *torch.Tensor, target diffusion.Target) (mean, std [2]float64) {
		t.Helper()
		oracle := &sampleMixtureOracle{sc: sc, m: m, s: s, target: target}
		out, err := Sample(context.Background(), oracle, x, sc, nil, Options{
			Sampler: DPMPP2M, Steps: 20, Target: target,
			Guidance: w, Labels: labels, NullLabel: sampleMixtureNull,
		})
		if err != nil {
			t.Fatal(err)
		}
		v := values(t, out)
		out.Close()
		var sum, sq, cnt [2]float64
		for i, e := range v {
			sum[i%2] += e
			sq[i%2] += e * e
			cnt[i%2]++
		}
		for c := range 2 {
			mean[c] = sum[c] / cnt[c]
			std[c] = math.Sqrt(sq[c]/cnt[c] - mean[c]*mean[c])
		}
		return mean, std
	}
	se := s / math.Sqrt(n/2) // standard error of a class mean

	mean, std := classMoments(1, labels, diffusion.Epsilon)
	t.Logf("w = 1: class means %.4f %.4f, stds %.4f %.4f", mean[0], mean[1], std[0], std[1])
	for c, want := range []float64{-m, m} {
		if math.Abs(mean[c]-want) > 6*se || math.Abs(std[c]-s) > 0.02 {
			t.Errorf("w = 1, class %d: mean %.4f, std %.4f; want about %.2f and %.2f", c, mean[c], std[c], want, s)
		}
	}
	mean, std = classMoments(1, nullLabels, diffusion.Epsilon)
	all := (mean[0] + mean[1]) / 2
	spread := math.Sqrt((std[0]*std[0]+std[1]*std[1])/2 + (mean[0]-all)*(mean[0]-all)/2 + (mean[1]-all)*(mean[1]-all)/2)
	t.Logf("null label: mean %.4f, std %.4f", all, spread)
	if math.Abs(all) > 6*se || math.Abs(spread-math.Hypot(m, s)) > 0.02 {
		t.Errorf("null label: mean %.4f, std %.4f; want the mixture's 0 and %.4f", all, spread, math.Hypot(m, s))
	}

	// Guidance combines the models' raw outputs; since every target is
	// affine in the output, all three targets give the same guided samples.
	prev := [2]float64{-m, m}
	for _, w := range []float64{2, 4, 8} {
		var first [2]float64
		for i, target := range sampleTargets {
			mean, std = classMoments(w, labels, target)
			t.Logf("w = %g (%s): class means %.4f %.4f, stds %.4f %.4f", w, target, mean[0], mean[1], std[0], std[1])
			if !(mean[0] < prev[0]-5*se && mean[1] > prev[1]+5*se) {
				t.Errorf("w = %g (%s): class means %.4f %.4f did not move away from %.4f %.4f", w, target, mean[0], mean[1], prev[0], prev[1])
			}
			if i == 0 {
				first = mean
			} else if math.Abs(mean[0]-first[0]) > 1e-9 || math.Abs(mean[1]-first[1]) > 1e-9 {
				t.Errorf("w = %g: %s model gives class means %.6f %.6f, epsilon model %.6f %.6f", w, target, mean[0], mean[1], first[0], first[1])
			}
		}
		prev = mean
	}
}
