package autoencoder

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/internal/fixture"
	"github.com/ddpm-go/ddpm/torch"
)

// fixtureModel builds the AutoencoderKL of testdata/diffusers/vae from its
// config.json and loads its weights by name (no renaming: the parameter
// names are diffusers' own). It returns the model and the reference
// inputs and outputs, which belong to s.
func fixtureModel(t *testing.T, s *torch.Scope) (*Model, map[string]*torch.Tensor) {
	t.Helper()
	dir := filepath.Join(fixture.Diffusers(t), "vae")
	b, err := os.ReadFile(filepath.Join(dir, "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	weights, _, err := s.LoadSafetensors(filepath.Join(dir, "vae", "diffusion_pytorch_model.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if err := nn.LoadStateDict(m.Params(), weights); err != nil {
		t.Fatal(err)
	}
	io, _, err := s.LoadSafetensors(filepath.Join(dir, "io.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	return m, io
}

// maxAbsDiff is max |a - b|.
func maxAbsDiff(t *testing.T, s *torch.Scope, a, b *torch.Tensor) float64 {
	t.Helper()
	d, err := s.Max(s.Abs(s.Sub(a, b)), nil, false).Item()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The fixture's config builds diffusers' 167,959 parameters in 124 tensors,
// under exactly the names and shapes of its state_dict, and Encode and
// Decode reproduce diffusers' outputs to 1e-4 in fp32.
func TestMatchesDiffusers(t *testing.T) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	m, io := fixtureModel(t, s)
	if n, k := nn.NumParams(m.Params()), len(m.Params()); n != 167959 || k != 124 {
		t.Errorf("%d parameters in %d tensors, diffusers has 167959 in 124", n, k)
	}
	mean, logVar := m.Encode(s, io["sample"])
	decoded := m.Decode(s, io["latent"])
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want *torch.Tensor
	}{
		{"latent_mean", mean, io["latent_mean"]},
		{"latent_logvar", logVar, io["latent_logvar"]},
		{"decoded", decoded, io["decoded"]},
	} {
		if g, w := c.got.Shape(), c.want.Shape(); !slices.Equal(g, w) {
			t.Fatalf("%s: shape %v, want %v", c.name, g, w)
		}
		d := maxAbsDiff(t, s, c.got, c.want)
		t.Logf("%s: max |ours - diffusers| = %.3g", c.name, d)
		if !(d <= 1e-4) {
			t.Errorf("%s: max |ours - diffusers| = %g, want <= 1e-4", c.name, d)
		}
	}
}

func newTestModel(t *testing.T, cfg Config, seed uint64) *Model {
	t.Helper()
	g, err := torch.NewGenerator(seed, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	m, err := New(cfg, torch.CPU, torch.Float32, g)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// smallConfig is a two-level autoencoder for 1-channel images.
func smallConfig() Config {
	c := DefaultConfig()
	c.InChannels, c.OutChannels, c.LatentChannels = 1, 1, 2
	c.BlockOutChannels = []int{8, 16}
	c.DownBlockTypes = []string{DownEncoderBlock2D, DownEncoderBlock2D}
	c.UpBlockTypes = []string{UpDecoderBlock2D, UpDecoderBlock2D}
	c.NormNumGroups = 4
	c.SampleSize = 8
	return c
}

// The encoder's log-variance is clamped to [-30, 20] exactly, as in
// diffusers: a quant_conv bias pushing it far out lands on the bounds.
func TestLogVarClamped(t *testing.T) {
	m := newTestModel(t, smallConfig(), 1)
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	var bias *torch.Tensor
	for _, p := range m.Params() {
		if p.Name == "quant_conv.bias" {
			bias = p.T
		}
	}
	// Mean channels 0, 1; log-variance channels 2 (pushed up), 3 (down).
	s.CopyInPlace(bias, s.FromFloat32s([]float32{0, 0, 1e4, -1e4}, 4))
	x := s.Randn([]int64{2, 1, 8, 8}, torch.Float32, torch.CPU, nil)
	_, logVar := m.Encode(s, x)
	parts := s.Chunk(logVar, 2, 1)
	hi, err := s.Min(parts[0], nil, false).Item()
	if err != nil {
		t.Fatal(err)
	}
	lo, err := s.Max(parts[1], nil, false).Item()
	if err != nil {
		t.Fatal(err)
	}
	if hi != MaxLogVar || lo != MinLogVar {
		t.Errorf("log-variance not clamped: channel 0 min %g (want %d), channel 1 max %g (want %d)", hi, MaxLogVar, lo, MinLogVar)
	}
}

// Sample is mean + exp(logVar/2) * eps with eps ~ N(0, 1): the
// standardised draws of many latents have mean ~0 and variance ~1, the same
// generator seed gives the same draw, and gradients reach mean and logVar
// as d z/d mean = 1, d z/d logVar = (z - mean)/2.
func TestSampleReparameterises(t *testing.T) {
	m := newTestModel(t, smallConfig(), 1)
	s := torch.NewScope(torch.Grad)
	defer s.Close()
	const n = 20000
	mean := s.Full([]int64{n, 2, 1, 1}, 1.5, torch.Float32, torch.CPU)
	logVar := s.Full([]int64{n, 2, 1, 1}, -1.2, torch.Float32, torch.CPU)
	if err := mean.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	if err := logVar.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	draw := func(seed uint64) *torch.Tensor {
		g, err := torch.NewGenerator(seed, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		return m.Sample(s, mean, logVar, g)
	}
	z := draw(7)
	std := s.DivScalar(s.AddScalar(z, -1.5), 0.5488116360940264) // exp(-0.6)
	mu, err := s.Mean(std, nil, false).Item()
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.VarPop(std, nil, false).Item()
	if err != nil {
		t.Fatal(err)
	}
	// 40,000 draws: the standard errors are 0.005 (mean) and 0.007 (variance).
	if mu < -0.025 || mu > 0.025 || v < 0.965 || v > 1.035 {
		t.Errorf("standardised draws have mean %g and variance %g, want 0 and 1", mu, v)
	}
	if d := maxAbsDiff(t, s, z, draw(7)); d != 0 {
		t.Errorf("same seed, draws differ by %g", d)
	}
	s.Backward(s.Sum(z, nil, false))
	gm, glv := s.Grad(mean), s.Grad(logVar)
	if d := maxAbsDiff(t, s, gm, s.Ones(gm.Shape(), torch.Float32, torch.CPU)); d > 0 {
		t.Errorf("d sum(z)/d mean differs from 1 by %g", d)
	}
	if d := maxAbsDiff(t, s, glv, s.MulScalar(s.Detach(s.AddScalar(z, -1.5)), 0.5)); d > 1e-6 {
		t.Errorf("d sum(z)/d logVar differs from (z - mean)/2 by %g", d)
	}
}

// Encoding and decoding in a loop, with and without autograd, leaves no
// tensor behind; Close frees every parameter.
func TestEncodeDecodeLeaksNothing(t *testing.T) {
	start := torch.LiveTensors()
	m, err := New(smallConfig(), torch.CPU, torch.Float32, nil)
	if err != nil {
		t.Fatal(err)
	}
	afterNew := torch.LiveTensors()
	for i := range 30 {
		mode := torch.Inference
		if i%2 == 1 {
			mode = torch.Grad
		}
		s := torch.NewScope(mode)
		x := s.Randn([]int64{2, 1, 8, 8}, torch.Float32, torch.CPU, nil)
		mean, logVar := m.Encode(s, x)
		y := m.Decode(s, m.Sample(s, mean, logVar, nil))
		if mode == torch.Grad {
			s.Backward(s.MSELoss(y, x, torch.ReduceMean))
			for _, p := range m.Params() {
				s.Grad(p.T)
			}
		}
		err := s.Err()
		s.Close()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if d := torch.LiveTensors() - afterNew; d != 0 {
			t.Fatalf("step %d: %d tensors more than after New", i, d)
		}
	}
	m.Close()
	m.Close()
	if d := torch.LiveTensors() - start; d != 0 {
		t.Errorf("%d tensors alive after Close", d)
	}
}

// Inputs of the wrong shape, size or dtype are one error each, recorded in
// the scope; nothing panics.
func TestBadInputs(t *testing.T) {
	m := newTestModel(t, smallConfig(), 1)
	for _, c := range []struct {
		name  string
		shape []int64
		dt    torch.DType
		enc   bool
		want  string
	}{
		{"3 channels", []int64{1, 3, 8, 8}, torch.Float32, true, "want (N, 1, H, W)"},
		{"odd size", []int64{1, 1, 7, 8}, torch.Float32, true, "multiples of 2"},
		{"3-D", []int64{1, 8, 8}, torch.Float32, true, "want (N, 1, H, W)"},
		{"float64", []int64{1, 1, 8, 8}, torch.Float64, true, "float64"},
		{"latent channels", []int64{1, 1, 4, 4}, torch.Float32, false, "want (N, 2, H, W)"},
	} {
		s := torch.NewScope(torch.Inference)
		x := s.Zeros(c.shape, c.dt, torch.CPU)
		if c.enc {
			m.Encode(s, x)
		} else {
			m.Decode(s, x)
		}
		if err := s.Err(); err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "autoencoder: ") {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
		s.Close()
	}
}

// ScaleLatents is (z - shift) * scale and UnscaleLatents undoes it.
func TestScaleLatents(t *testing.T) {
	c := smallConfig()
	shift := 0.25
	c.ScalingFactor, c.ShiftFactor = 0.5, &shift
	m := newTestModel(t, c, 1)
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	z := s.FromFloat32s([]float32{-1, 0, 0.25, 3}, 1, 1, 2, 2)
	got, err := m.ScaleLatents(s, z).Float32s()
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float32{-0.625, -0.125, 0, 1.375} {
		if got[i] != want {
			t.Errorf("ScaleLatents[%d] = %g, want %g", i, got[i], want)
		}
	}
	if d := maxAbsDiff(t, s, m.UnscaleLatents(s, m.ScaleLatents(s, z)), z); d > 1e-7 {
		t.Errorf("Unscale(Scale(z)) differs from z by %g", d)
	}
}
