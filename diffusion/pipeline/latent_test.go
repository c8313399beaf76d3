package pipeline_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	ckpt "github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/diffusers"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// tinyAutoencoder is a random two-level autoencoder of 1x16x16 images to
// latentChannels x 8 x 8 latents.
func tinyAutoencoder(t *testing.T, latentChannels int) *autoencoder.Model {
	t.Helper()
	cfg := autoencoder.DefaultConfig()
	cfg.InChannels, cfg.OutChannels, cfg.LatentChannels = 1, 1, latentChannels
	cfg.BlockOutChannels, cfg.NormNumGroups, cfg.SampleSize = []int{8, 8}, 4, 16
	cfg.DownBlockTypes = []string{autoencoder.DownEncoderBlock2D, autoencoder.DownEncoderBlock2D}
	cfg.UpBlockTypes = []string{autoencoder.UpDecoderBlock2D, autoencoder.UpDecoderBlock2D}
	gen, _ := torch.NewGenerator(7, torch.CPU)
	defer gen.Close()
	m, err := autoencoder.New(cfg, torch.CPU, torch.Float32, gen)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// latentUNet is the tiny preset at the 2x8x8 latent shape.
func latentUNet(t *testing.T) *unet.UNet {
	t.Helper()
	cfg, _ := unet.Preset("tiny")
	cfg.InChannels, cfg.OutChannels, cfg.ImageSize = 2, 2, 8
	gen, _ := torch.NewGenerator(8, torch.CPU)
	defer gen.Close()
	m, err := unet.New(cfg, torch.CPU, torch.Float32, gen)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var latentInfo = pipeline.Info{Channels: 1, Size: 16, LatentChannels: 2, LatentSize: 8}

// Generate of a latent model returns Decode(x/scale + shift), clamped, of
// the latents x the sampler draws from the same seed, at the image shape.
func TestLatentGenerateDecodes(t *testing.T) {
	live := torch.LiveTensors()
	ae, model := tinyAutoencoder(t, 2), latentUNet(t)
	sched, _ := diffusion.NewSchedule(diffusion.ScheduleConfig{T: 50})
	so := sampler.Options{Sampler: sampler.DDIM, Steps: 3}
	p, err := pipeline.New(model, sched, latentInfo, pipeline.Options{Latent: &pipeline.Latent{Model: ae, ScalingFactor: 0.7, ShiftFactor: 0.1}})
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := p.Generate(context.Background(), 2, pipeline.GenerateOptions{Seed: 3, Sampling: so})
	if err != nil {
		t.Fatal(err)
	}
	// Scaled latents are not bounded to [-1, 1]: the default sampling of a
	// latent pipeline leaves x_0 unclipped (a pixel pipeline clips it).
	if c := p.DefaultSampling().Clip; c != sampler.ClipNone {
		t.Errorf("a latent pipeline's default clipping is %q, want none", c)
	}
	if imgs.N != 2 || imgs.C != 1 || imgs.H != 16 || imgs.W != 16 || len(imgs.Pixels) != 2*256 {
		t.Fatalf("images %dx%dx%dx%d (%d values), want 2x1x16x16", imgs.N, imgs.C, imgs.H, imgs.W, len(imgs.Pixels))
	}

	// The reference: the sampler alone, then the decode by hand.
	gen, _ := torch.NewGenerator(3, torch.CPU)
	defer gen.Close()
	so.Target = diffusion.Epsilon
	x, err := sampler.SampleShape(context.Background(), model, []int64{2, 2, 8, 8}, torch.Float32, sched, gen, so)
	if err != nil {
		t.Fatal(err)
	}
	z, err := x.Float32s()
	x.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range z {
		z[i] = float32(float64(v)/0.7 + 0.1)
	}
	s := torch.NewScope(torch.Inference)
	want, err := ae.Decode(s, s.FromFloat32s(z, 2, 2, 8, 8)).Float32s()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	clamped := 0
	for i, w := range want {
		if w < -1 || w > 1 {
			clamped++
		}
		worst = max(worst, math.Abs(float64(imgs.Pixels[i])-math.Max(-1, math.Min(1, float64(w)))))
	}
	if worst > 1e-5 {
		t.Errorf("Generate differs from Decode(x/0.7+0.1) by %g", worst)
	}
	t.Logf("max difference %g over %d pixels (%d clamped)", worst, len(want), clamped)

	if _, err := pipeline.New(model, sched, latentInfo, pipeline.Options{}); err == nil || !strings.Contains(err.Error(), "no autoencoder") {
		t.Errorf("latent shape without an autoencoder: %v", err)
	}
	bad := latentInfo
	bad.Size = 32
	if _, err := pipeline.New(model, sched, bad, pipeline.Options{Latent: &pipeline.Latent{Model: ae, ScalingFactor: 1}}); err == nil ||
		!strings.Contains(err.Error(), "2 times larger") {
		t.Errorf("image size the autoencoder does not make: %v", err)
	}
	p.Close()
	model.Close()
	ae.Close()
	if n := torch.LiveTensors(); n != live {
		t.Errorf("%d live tensors, want %d", n, live)
	}
}

// noiseLatents are batches of random 2x8x8 "latents".
func noiseLatents() noise { return noise{per: 2 * 8 * 8} }

// latentCheckpoint trains the latent U-Net two steps with package train,
// recording ref, and returns the checkpoint.
func latentCheckpoint(t *testing.T, ref ckpt.Autoencoder) string {
	t.Helper()
	model := latentUNet(t)
	defer model.Close()
	sched, _ := diffusion.NewSchedule(diffusion.ScheduleConfig{T: 50})
	tr, err := train.New(model, sched, train.Config{Steps: 2, BatchSize: 4}, torch.CPU, []int64{2, 8, 8})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Dir, tr.Autoencoder = filepath.Join(t.TempDir(), "run"), &ref
	if err := tr.Run(context.Background(), noiseLatents()); err != nil {
		t.Fatal(err)
	}
	return tr.LastCheckpoint()
}

// A latent checkpoint loads with the autoencoder it records (by its path,
// or relative to the run directory) and samples what New over the same
// model and autoencoder samples, in Generate and in the service; a
// missing, corrupt or misshapen autoencoder is one line each.
func TestLoadLatentCheckpoint(t *testing.T) {
	live := torch.LiveTensors()
	ae := tinyAutoencoder(t, 2)
	defer ae.Close()
	root := t.TempDir()
	aeDir := filepath.Join(root, "vae")
	if err := diffusers.WriteAutoencoder(aeDir, ae.Config(), ae.Params()); err != nil {
		t.Fatal(err)
	}
	fp, err := nn.Fingerprint(ae.Params())
	if err != nil {
		t.Fatal(err)
	}
	ref := ckpt.Autoencoder{Path: aeDir, ImageChannels: 1, ImageSize: 16, LatentChannels: 2, LatentSize: 8,
		ScalingFactor: 0.7, ShiftFactor: 0.1, Fingerprint: fp}
	path := latentCheckpoint(t, ref)
	meta, err := ckpt.ReadMeta(path)
	if err != nil || meta.Autoencoder == nil || *meta.Autoencoder != ref {
		t.Fatalf("recorded %+v, %v; want %+v", meta.Autoencoder, err, ref)
	}
	p, err := pipeline.Load(path, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info := p.Info()
	if info.Channels != 1 || info.Size != 16 || info.LatentChannels != 2 || info.LatentSize != 8 {
		t.Fatalf("info %+v: want 1x16x16 images of 2x8x8 latents", info)
	}
	o := pipeline.GenerateOptions{Seed: 4, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 2}}
	got, err := p.Generate(context.Background(), 2, o)
	if err != nil {
		t.Fatal(err)
	}
	q, err := pipeline.New(p.Model(), p.Schedule(), latentInfo, pipeline.Options{Latent: &pipeline.Latent{Model: ae, ScalingFactor: 0.7, ShiftFactor: 0.1}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := q.Generate(context.Background(), 2, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want.Pixels {
		if got.Pixels[i] != want.Pixels[i] {
			t.Fatalf("pixel %d: Load gives %g, New over the same autoencoder %g", i, got.Pixels[i], want.Pixels[i])
		}
	}
	e, err := serve.New(p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	served, err := e.Generate(context.Background(), serve.Request{N: 2, Seed: 4, Sampling: o.Sampling})
	if err != nil {
		t.Fatal(err)
	}
	// A served preview is the prediction of x_0 decoded into an image, as
	// the pipeline decodes its samples.
	var preview *pipeline.Images
	progress := func(p serve.Progress) {
		if p.Preview != nil {
			preview = p.Preview
		}
	}
	_, err = e.Generate(context.Background(), serve.Request{N: 2, Seed: 4, Sampling: o.Sampling, PreviewEvery: 1, Progress: progress})
	e.Close()
	if err != nil {
		t.Fatal(err)
	}
	var wantPreview []float32
	po := o
	po.Sampling.Callback = func(step, total, tt int, xt, x0 *torch.Tensor) error {
		if step == 0 {
			wantPreview, err = q.Pixels(x0)
		}
		return err
	}
	if _, err := q.Generate(context.Background(), 2, po); err != nil {
		t.Fatal(err)
	}
	if preview == nil || preview.N != 2 || preview.C != 1 || preview.H != 16 || len(preview.Pixels) != len(wantPreview) {
		t.Fatalf("preview %+v: want two decoded 1x16x16 images", preview)
	}
	for i := range wantPreview {
		if d := math.Abs(float64(preview.Pixels[i] - wantPreview[i])); d > 1e-4 {
			t.Fatalf("preview pixel %d differs from the decoded x_0 by %g", i, d)
		}
	}
	if served.C != 1 || served.H != 16 || len(served.Pixels) != len(want.Pixels) {
		t.Fatalf("served %dx%dx%d, want 1x16x16", served.C, served.H, served.W)
	}
	for i := range want.Pixels {
		if d := math.Abs(float64(served.Pixels[i] - want.Pixels[i])); d > 1e-4 {
			t.Fatalf("served pixel %d differs by %g", i, d)
		}
	}

	// Found relative to the run directory when the path as given is gone.
	moved := ref
	moved.Path = filepath.Join(root, "elsewhere")
	if moved.RunPath, err = filepath.Rel(filepath.Dir(path), aeDir); err != nil {
		t.Fatal(err)
	}
	rel := rewrite(t, path, filepath.Join(filepath.Dir(path), "moved.safetensors"), moved)
	if r, err := pipeline.Load(rel, pipeline.Options{}); err != nil {
		t.Errorf("autoencoder relative to the run: %v", err)
	} else {
		r.Close()
	}

	corrupt := filepath.Join(root, "corrupt")
	if err := diffusers.WriteAutoencoder(corrupt, ae.Config(), ae.Params()); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(corrupt, "diffusion_pytorch_model.safetensors"), []byte("not safetensors"), 0o644)
	other := tinyAutoencoder(t, 3)
	otherDir := filepath.Join(root, "other")
	err = diffusers.WriteAutoencoder(otherDir, other.Config(), other.Params())
	other.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(*ckpt.Autoencoder)
		want string
	}{
		{"missing", func(a *ckpt.Autoencoder) { a.Path = filepath.Join(root, "gone") }, "needs its autoencoder (latents 2x8x8 of 1x16x16 images), which is missing: no " + filepath.Join(root, "gone")},
		{"corrupt", func(a *ckpt.Autoencoder) { a.Path = corrupt }, "needs the autoencoder " + corrupt + ", which does not load"},
		{"latent shape", func(a *ckpt.Autoencoder) { a.Path = otherDir }, "expects an autoencoder making latents 2x8x8 of 1x16x16 images, but " + otherDir + " makes latents of 3 channels"},
		{"U-Net shape", func(a *ckpt.Autoencoder) { a.LatentChannels = 3 }, "records latents 3x8x8, but its U-Net has in_channels 2"},
		{"other weights", func(a *ckpt.Autoencoder) { a.Fingerprint = strings.Repeat("0", 64) }, "was trained on the latents of other autoencoder weights than " + aeDir + " holds now"},
	} {
		r := ref
		c.edit(&r)
		_, err := pipeline.Load(rewrite(t, path, filepath.Join(t.TempDir(), "ckpt.safetensors"), r), pipeline.Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line with %q", c.name, err, c.want)
		}
	}
	p.Close()
	if n := torch.LiveTensors(); n != live+int64(len(ae.Params())) {
		t.Errorf("%d live tensors, want %d", n, live+int64(len(ae.Params())))
	}
}

// rewrite copies the checkpoint at src to dst with ref as its autoencoder.
func rewrite(t *testing.T, src, dst string, ref ckpt.Autoencoder) string {
	t.Helper()
	meta, err := ckpt.ReadMeta(src)
	if err != nil {
		t.Fatal(err)
	}
	meta.Autoencoder = &ref
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(src, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if err := ckpt.Write(dst, all, meta); err != nil {
		t.Fatal(err)
	}
	return dst
}
