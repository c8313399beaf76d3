package pipeline_test

import (
	"context"
	"image"
	"math"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// perturbedUNet is the named preset with every weight moved by N(0, 0.05²),
// so that no layer starts at zero and the samples depend on every weight.
func perturbedUNet(t *testing.T, preset string) (*unet.UNet, unet.Config) {
	t.Helper()
	cfg, err := unet.Preset(preset)
	if err != nil {
		t.Fatal(err)
	}
	gen, _ := torch.NewGenerator(5, torch.CPU)
	defer gen.Close()
	model, err := unet.New(cfg, torch.CPU, torch.Float32, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Close)
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	for _, p := range model.Params() {
		s.AddInPlace(p.T, s.MulScalar(s.Randn(p.T.Shape(), torch.Float32, torch.CPU, gen), 0.05))
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return model, model.Config()
}

// gray8 is the 8-bit pixels of every image.
func gray8(im *pipeline.Images) []uint8 {
	var out []uint8
	for i := range im.N {
		out = append(out, im.Image(i).(*image.Gray).Pix...)
	}
	return out
}

// bf16 sampling matches float32 sampling from the same seed: the model's
// forward runs in bfloat16 (its output ~1% off, see unet's
// TestBF16MatchesFloat32), the sampler's update in float32. Over 20 DDIM
// steps of the small preset (8 images, seeds 3 and 4) the samples measured a
// relative L2 difference of 1.4-1.5%, 8-bit pixels equal in 93% and within
// one level in 96% of places. That model's weights are random, so 90% of
// its pixels are clipped to 0 or 255, where both agree; of the others 38-39%
// are equal. The bounds are 5%, 50% and 90%.
func TestBF16SamplingMatchesFloat32(t *testing.T) {
	if !torch.CPUHasBF16() {
		t.Skip("this CPU has no bfloat16 instructions")
	}
	model, cfg := perturbedUNet(t, "small")
	sched, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		t.Fatal(err)
	}
	info := pipeline.Info{Channels: cfg.OutChannels, Size: cfg.ImageSize}
	gen := pipeline.GenerateOptions{Seed: 3, Batch: 8,
		Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 20, Clip: sampler.ClipStatic}}
	var out [2]*pipeline.Images
	for i, p := range []diffusion.Precision{diffusion.Float32, diffusion.BF16} {
		pl, err := pipeline.New(model, sched, info, pipeline.Options{Precision: p})
		if err != nil {
			t.Fatal(err)
		}
		if pl.Precision() != p {
			t.Fatalf("pipeline precision %s, want %s", pl.Precision(), p)
		}
		live := torch.LiveTensors()
		if out[i], err = pl.Generate(context.Background(), 8, gen); err != nil {
			t.Fatal(err)
		}
		if d := torch.LiveTensors() - live; d != 0 {
			t.Errorf("%s: %d tensors left behind", p, d)
		}
	}
	var diff, norm float64
	for i, v := range out[0].Pixels {
		d := float64(out[1].Pixels[i] - v)
		diff += d * d
		norm += float64(v) * float64(v)
	}
	rel := math.Sqrt(diff / norm)
	a, b := gray8(out[0]), gray8(out[1])
	var equal, near, inside, insideEqual int
	for i := range a {
		d := int(a[i]) - int(b[i])
		if d == 0 {
			equal++
		}
		if d >= -1 && d <= 1 {
			near++
		}
		if a[i] != 0 && a[i] != 255 {
			inside++
			if d == 0 {
				insideEqual++
			}
		}
	}
	fEqual, fNear := float64(equal)/float64(len(a)), float64(near)/float64(len(a))
	t.Logf("bf16 vs float32 samples: relative L2 %.4f; 8-bit pixels equal %.3f, within 1 level %.3f; of the %d%% not clipped to 0 or 255, equal %.3f",
		rel, fEqual, fNear, 100*inside/len(a), float64(insideEqual)/float64(max(inside, 1)))
	if !(rel < 0.05) || !(fEqual > 0.5) || !(fNear > 0.9) {
		t.Errorf("bf16 samples stray from float32's: relative L2 %g (bound 0.05), equal %g (0.5), within 1 %g (0.9)", rel, fEqual, fNear)
	}
	if rel == 0 {
		t.Error("bf16 samples equal float32's bit for bit: the model did not run in bfloat16")
	}
}

// A precision the device cannot run is refused by New in one line.
func TestPrecisionRefused(t *testing.T) {
	model, cfg := perturbedUNet(t, "tiny")
	sched, _ := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	info := pipeline.Info{Channels: cfg.OutChannels, Size: cfg.ImageSize}
	for _, p := range []diffusion.Precision{diffusion.FP16, "fp8"} {
		if _, err := pipeline.New(model, sched, info, pipeline.Options{Precision: p}); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("precision %s on the CPU: error %v, want one line", p, err)
		}
	}
}
