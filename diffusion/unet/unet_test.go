package unet

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

func newGen(tb testing.TB, seed uint64) *torch.Generator {
	tb.Helper()
	g, err := torch.NewGenerator(seed, torch.CPU)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(g.Close)
	return g
}

func preset(tb testing.TB, name string) Config {
	tb.Helper()
	c, err := Preset(name)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// newModel builds cfg on the CPU in float32; the model is closed when the
// test ends.
func newModel(tb testing.TB, cfg Config, seed uint64) *UNet {
	tb.Helper()
	u, err := New(cfg, torch.CPU, torch.Float32, newGen(tb, seed))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(u.Close)
	return u
}

// perturb adds N(0, std^2) noise to every parameter, so that the zero-init
// layers stop hiding the rest of the network.
func perturb(tb testing.TB, u *UNet, gen *torch.Generator, std float64) {
	tb.Helper()
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	for _, p := range u.Params() {
		s.AddInPlace(p.T, s.MulScalar(s.Randn(p.T.Shape(), p.T.DType(), torch.CPU, gen), std))
	}
	if err := s.Err(); err != nil {
		tb.Fatal(err)
	}
}

// randomInputs draws images in [-1, 1)-ish N(0,1), timesteps in [0, 1000)
// and, for a conditional config, labels in [0, NumClasses] (the null label
// included).
func randomInputs(s *torch.Scope, c Config, n int64, gen *torch.Generator) (x, t, labels *torch.Tensor) {
	x = s.Randn([]int64{n, int64(c.InChannels), int64(c.ImageSize), int64(c.ImageSize)}, torch.Float32, torch.CPU, gen)
	t = s.RandInt(0, 1000, []int64{n}, torch.CPU, gen)
	if c.NumClasses > 0 {
		labels = s.RandInt(0, int64(c.NumClasses)+1, []int64{n}, torch.CPU, gen)
	}
	return x, t, labels
}

func floats(tb testing.TB, x *torch.Tensor) []float32 {
	tb.Helper()
	v, err := x.Float32s()
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// The DDPM paper's CIFAR-10 network has 35,746,307 parameters; the other
// presets' counts are pinned too, since checkpoints depend on them.
func TestParamCounts(t *testing.T) {
	want := map[string]int64{"cifar10": 35_746_307, "small": 1_524_257, "tiny": 176_849}
	for _, name := range PresetNames() {
		t.Run(name, func(t *testing.T) {
			c := preset(t, name)
			if got := c.NumParams(); got != want[name] {
				t.Errorf("Config.NumParams = %d, want %d", got, want[name])
			}
			u := newModel(t, c, 1)
			ps := u.Params()
			if got := nn.NumParams(ps); got != want[name] {
				t.Errorf("built model has %d parameters, want %d", got, want[name])
			}
			names := map[string]bool{}
			for _, p := range ps {
				if names[p.Name] {
					t.Errorf("parameter %s appears twice", p.Name)
				}
				names[p.Name] = true
			}
			u.Close()
		})
	}
	// Class conditioning adds the label table, null label included.
	c := preset(t, "tiny")
	c.NumClasses = 10
	if got, want := c.NumParams(), int64(176_849+11*64); got != want {
		t.Errorf("conditional tiny: %d parameters, want %d", got, want)
	}
	u := newModel(t, c, 1)
	if got := nn.NumParams(u.Params()); got != c.NumParams() {
		t.Errorf("conditional tiny built with %d parameters, Config.NumParams says %d", got, c.NumParams())
	}
}

func TestParamNames(t *testing.T) {
	c := preset(t, "tiny")
	c.NumClasses = 3
	u := newModel(t, c, 1)
	index := map[string]int{}
	shapes := map[string][]int64{}
	ps := u.Params()
	for i, p := range ps {
		index[p.Name] = i
		shapes[p.Name] = p.T.Shape()
	}
	// A selection, in creation (forward) order.
	want := []struct {
		name  string
		shape []int64
	}{
		{"temb.dense.0.weight", []int64{64, 16}},
		{"temb.dense.1.bias", []int64{64}},
		{"label_emb.weight", []int64{4, 64}}, // 3 classes + the null label
		{"conv_in.weight", []int64{16, 1, 3, 3}},
		{"down.0.block.0.norm1.weight", []int64{16}},
		{"down.0.block.0.conv1.weight", []int64{16, 16, 3, 3}},
		{"down.0.block.0.temb_proj.weight", []int64{16, 64}},
		{"down.0.block.0.norm2.bias", []int64{16}},
		{"down.0.block.0.conv2.weight", []int64{16, 16, 3, 3}},
		{"down.0.downsample.conv.weight", []int64{16, 16, 3, 3}},
		{"down.1.block.0.conv1.weight", []int64{32, 16, 3, 3}},
		{"down.1.block.0.nin_shortcut.weight", []int64{32, 16, 1, 1}},
		{"down.1.attn.0.norm.weight", []int64{32}},
		{"down.1.attn.0.q.weight", []int64{32, 32, 1, 1}},
		{"down.1.attn.0.k.bias", []int64{32}},
		{"down.1.attn.0.v.weight", []int64{32, 32, 1, 1}},
		{"down.1.attn.0.proj_out.weight", []int64{32, 32, 1, 1}},
		{"mid.block_1.conv1.weight", []int64{32, 32, 3, 3}},
		{"mid.attn_1.q.weight", []int64{32, 32, 1, 1}},
		{"mid.block_2.conv2.bias", []int64{32}},
		{"up.1.block.0.norm1.weight", []int64{64}}, // 32 + skip 32
		{"up.1.block.0.conv1.weight", []int64{32, 64, 3, 3}},
		{"up.1.block.0.nin_shortcut.weight", []int64{32, 64, 1, 1}},
		{"up.1.attn.0.proj_out.bias", []int64{32}},
		{"up.1.block.1.conv1.weight", []int64{32, 48, 3, 3}}, // 32 + skip 16 (downsample)
		{"up.1.attn.1.v.bias", []int64{32}},
		{"up.1.upsample.conv.weight", []int64{32, 32, 3, 3}},
		{"up.0.block.0.conv1.weight", []int64{16, 48, 3, 3}}, // 32 + skip 16
		{"up.0.block.1.nin_shortcut.weight", []int64{16, 32, 1, 1}},
		{"norm_out.weight", []int64{16}},
		{"conv_out.weight", []int64{1, 16, 3, 3}},
		{"conv_out.bias", []int64{1}},
	}
	prev := -1
	for _, w := range want {
		i, ok := index[w.name]
		if !ok {
			t.Errorf("no parameter %s", w.name)
			continue
		}
		if !slices.Equal(shapes[w.name], w.shape) {
			t.Errorf("%s has shape %v, want %v", w.name, shapes[w.name], w.shape)
		}
		if i <= prev {
			t.Errorf("%s is created before %s", w.name, ps[prev].Name)
		}
		prev = i
	}
	if last := ps[len(ps)-1].Name; last != "conv_out.bias" {
		t.Errorf("last parameter %s, want conv_out.bias", last)
	}
	for _, absent := range []string{"down.1.downsample.conv.weight", "up.0.upsample.conv.weight",
		"down.0.attn.0.q.weight", "down.0.block.0.nin_shortcut.weight", "mid.block_1.nin_shortcut.weight"} {
		if _, ok := index[absent]; ok {
			t.Errorf("unexpected parameter %s", absent)
		}
	}
}

// The zero-initialised layers (each residual block's conv2, each attention
// projection, conv_out) make the fresh network output exactly zero.
func TestFreshModelPredictsZero(t *testing.T) {
	c := preset(t, "tiny")
	u := newModel(t, c, 1)
	zeroed := 0
	for _, p := range u.Params() {
		if strings.Contains(p.Name, "conv2.") || strings.Contains(p.Name, "proj_out.") || strings.HasPrefix(p.Name, "conv_out.") {
			zeroed++
			for _, v := range floats(t, p.T) {
				if v != 0 {
					t.Fatalf("%s is not zero-initialised", p.Name)
				}
			}
		}
	}
	if zeroed == 0 {
		t.Fatal("no zero-initialised parameters found")
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	x, tt, _ := randomInputs(s, c, 2, newGen(t, 2))
	for _, v := range floats(t, u.Forward(s, x, tt, nil)) {
		if v != 0 {
			t.Fatalf("fresh model predicts %g, want 0", v)
		}
	}
}

func TestForwardShapes(t *testing.T) {
	c := preset(t, "tiny")
	c.NumClasses = 5
	u := newModel(t, c, 1)
	gen := newGen(t, 2)
	perturb(t, u, gen, 0.05)
	s := torch.NewScope(torch.Grad)
	defer s.Close()
	cases := []struct {
		name   string
		x      *torch.Tensor
		labels *torch.Tensor
	}{
		{"batch 3 with labels", s.Randn([]int64{3, 1, 16, 16}, torch.Float32, torch.CPU, gen), s.FromInt64s([]int64{0, 4, 5}, 3)},
		{"null labels", s.Randn([]int64{2, 1, 16, 16}, torch.Float32, torch.CPU, gen), nil},
		{"other sizes", s.Randn([]int64{1, 1, 8, 24}, torch.Float32, torch.CPU, gen), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			shape := tc.x.Shape()
			tt := s.RandInt(0, 1000, shape[:1], torch.CPU, gen)
			y := u.Forward(s, tc.x, tt, tc.labels)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if got := y.Shape(); !slices.Equal(got, shape) {
				t.Errorf("output shape %v, want %v", got, shape)
			}
		})
	}
}

// Omitted labels are the null label.
func TestNilLabelsAreTheNullLabel(t *testing.T) {
	c := preset(t, "tiny")
	c.NumClasses = 3
	u := newModel(t, c, 1)
	gen := newGen(t, 2)
	perturb(t, u, gen, 0.05)
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	x, tt, _ := randomInputs(s, c, 2, gen)
	withNil := floats(t, u.Forward(s, x, tt, nil))
	withNull := floats(t, u.Forward(s, x, tt, s.FromInt64s([]int64{3, 3}, 2)))
	withOther := floats(t, u.Forward(s, x, tt, s.FromInt64s([]int64{0, 3}, 2)))
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(withNil, withNull) {
		t.Error("nil labels differ from the null label")
	}
	if slices.Equal(withNil, withOther) {
		t.Error("labels change nothing")
	}
}

func TestForwardErrors(t *testing.T) {
	tiny := preset(t, "tiny")
	u := newModel(t, tiny, 1)
	gen := newGen(t, 2)
	cases := []struct {
		name string
		run  func(s *torch.Scope) *torch.Tensor
		want string
	}{
		{"channels", func(s *torch.Scope) *torch.Tensor {
			return u.Forward(s, s.Zeros([]int64{2, 3, 16, 16}, torch.Float32, torch.CPU), s.Zeros([]int64{2}, torch.Int64, torch.CPU), nil)
		}, "x has shape [2 3 16 16], want (N, 1, H, W)"},
		{"size", func(s *torch.Scope) *torch.Tensor {
			return u.Forward(s, s.Zeros([]int64{2, 1, 15, 16}, torch.Float32, torch.CPU), s.Zeros([]int64{2}, torch.Int64, torch.CPU), nil)
		}, "multiples of 2"},
		{"dtype", func(s *torch.Scope) *torch.Tensor {
			return u.Forward(s, s.Zeros([]int64{2, 1, 16, 16}, torch.Float64, torch.CPU), s.Zeros([]int64{2}, torch.Int64, torch.CPU), nil)
		}, "x is float64, the model's parameters are float32"},
		{"timesteps", func(s *torch.Scope) *torch.Tensor {
			return u.Forward(s, s.Zeros([]int64{2, 1, 16, 16}, torch.Float32, torch.CPU), s.Zeros([]int64{3}, torch.Int64, torch.CPU), nil)
		}, "t has shape [3], want (2)"},
		{"labels to unconditional", func(s *torch.Scope) *torch.Tensor {
			x, tt, _ := randomInputs(s, tiny, 2, gen)
			return u.Forward(s, x, tt, s.Zeros([]int64{2}, torch.Int64, torch.CPU))
		}, "labels given to an unconditional model"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope(torch.NoGrad)
			defer s.Close()
			if y := tc.run(s); y != nil {
				t.Error("got an output")
			}
			if err := s.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// A scope that has already failed stays failed and creates nothing.
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	s.Fail(errBefore)
	x, tt, _ := randomInputs(s, tiny, 2, gen)
	if y := u.Forward(s, x, tt, nil); y != nil || s.Err() != errBefore || s.Len() != 0 {
		t.Errorf("forward on a failed scope: %v, %v, %d tensors", y, s.Err(), s.Len())
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errBefore = testError("earlier failure")

// Dropout is off in evaluation, on in training, and its masks come from the
// generator given to SetTraining.
func TestDropout(t *testing.T) {
	c := preset(t, "tiny")
	c.Dropout = 0.5
	u := newModel(t, c, 1)
	perturb(t, u, newGen(t, 2), 0.05)
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	x, tt, _ := randomInputs(s, c, 2, newGen(t, 3))
	run := func() []float32 { return floats(t, u.Forward(s, x, tt, nil)) }

	if u.Training() {
		t.Error("a new model is in training mode")
	}
	eval1, eval2 := run(), run()
	u.SetTraining(true, newGen(t, 9))
	train1 := run()
	u.SetTraining(true, newGen(t, 9))
	train2 := run()
	train3 := run()
	u.SetTraining(false, nil)
	eval3 := run()
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(eval1, eval2) || !slices.Equal(eval1, eval3) {
		t.Error("evaluation is not deterministic")
	}
	if slices.Equal(train1, eval1) {
		t.Error("training mode applies no dropout")
	}
	if !slices.Equal(train1, train2) {
		t.Error("the same generator seed gave different dropout masks")
	}
	if slices.Equal(train2, train3) {
		t.Error("consecutive training passes drew the same masks")
	}
}

// Backward reaches every parameter.
func TestGradientsReachEveryParam(t *testing.T) {
	c := preset(t, "tiny")
	c.NumClasses = 2
	u := newModel(t, c, 1)
	gen := newGen(t, 2)
	perturb(t, u, gen, 0.05)
	u.SetTraining(true, gen)
	s := torch.NewScope(torch.Grad)
	defer s.Close()
	x, tt, labels := randomInputs(s, c, 4, gen)
	y := u.Forward(s, x, tt, labels)
	s.Backward(s.MSELoss(y, s.Zeros(y.Shape(), torch.Float32, torch.CPU), torch.ReduceMean))
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	for _, p := range u.Params() {
		g := s.Grad(p.T)
		if g == nil {
			t.Errorf("%s has no gradient", p.Name)
			continue
		}
		n, err := s.Norm(g, nil, false).Item()
		if err != nil || !(n > 0) || math.IsInf(n, 0) {
			t.Errorf("%s: gradient norm %g (%v)", p.Name, n, err)
		}
	}
}

// NewForTraining builds the same parameters from the same seed as New, with
// the convolutions NCHW on the CPU where New's are channels-last, and the
// two compute the same outputs and gradients.
func TestNewForTrainingSameModel(t *testing.T) {
	t.Setenv(nn.ChannelsLastEnv, "") // the default, whatever the environment says
	c := preset(t, "tiny")
	inf := newModel(t, c, 3)
	tr, err := NewForTraining(c, torch.CPU, torch.Float32, newGen(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i, p := range inf.Params() {
		q := tr.Params()[i]
		if a, b := floats(t, p.T), floats(t, q.T); p.Name != q.Name || !slices.Equal(a, b) {
			t.Fatalf("parameter %d: %s and %s differ", i, p.Name, q.Name)
		}
		if sh := p.T.Shape(); len(sh) != 4 || sh[1] == 1 || sh[2] == 1 {
			continue // one input channel or a 1x1 kernel: the same either way
		}
		pm, err1 := p.T.Meta()
		qm, err2 := q.T.Meta()
		if err1 != nil || err2 != nil || pm.Contiguous || !qm.Contiguous {
			t.Errorf("%s: NCHW-contiguous for inference %v, for training %v; want false, true (%v %v)", p.Name, pm.Contiguous, qm.Contiguous, err1, err2)
		}
	}
	gen := newGen(t, 4)
	perturbBoth := torch.NewScope(torch.NoGrad)
	for i, p := range inf.Params() {
		d := perturbBoth.MulScalar(perturbBoth.Randn(p.T.Shape(), torch.Float32, torch.CPU, gen), 0.05)
		perturbBoth.AddInPlace(p.T, d)
		perturbBoth.AddInPlace(tr.Params()[i].T, d)
	}
	x, tt, _ := randomInputs(perturbBoth, c, 2, gen)
	if err := perturbBoth.Err(); err != nil {
		t.Fatal(err)
	}
	defer perturbBoth.Close()
	out := func(u *UNet) ([]float32, []float32) {
		s := torch.NewScope(torch.Grad)
		defer s.Close()
		y := u.Forward(s, x, tt, nil)
		s.Backward(s.Sum(s.Mul(y, y), nil, false))
		g := s.Grad(u.Params()[len(u.Params())-4].T) // inside the last block
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return floats(t, y), floats(t, s.Contiguous(g))
	}
	y1, g1 := out(inf)
	y2, g2 := out(tr)
	for name, pair := range map[string][2][]float32{"output": {y1, y2}, "gradient": {g1, g2}} {
		diff, scale := maxAbsDiff(pair[0], pair[1])
		if !(diff <= 1e-4*max(scale, 1)) || scale == 0 {
			t.Errorf("%s: the two layouts differ by up to %g (largest value %g)", name, diff, scale)
		}
	}
}

// A float64 model with the same weights computes the same function.
func TestFloat64MatchesFloat32(t *testing.T) {
	c := preset(t, "tiny")
	u32 := newModel(t, c, 1)
	gen := newGen(t, 2)
	perturb(t, u32, gen, 0.05)
	u64, err := New(c, torch.CPU, torch.Float64, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u64.Close()
	if err := nn.LoadStateDict(u64.Params(), nn.StateDict(u32.Params())); err != nil {
		t.Fatal(err)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	x, tt, _ := randomInputs(s, c, 2, gen)
	y32 := floats(t, u32.Forward(s, x, tt, nil))
	y64, err := u64.Forward(s, s.ToDType(x, torch.Float64), tt, nil).Float64s()
	if err != nil || s.Err() != nil {
		t.Fatal(err, s.Err())
	}
	if r := relErr(y32, y64); r > 1e-5 {
		t.Errorf("float32 and float64 differ by %g (relative)", r)
	}
}

// maxAbsDiff is max |a-b| and max |a|.
func maxAbsDiff(a, b []float32) (diff, scale float64) {
	for i := range a {
		diff = max(diff, math.Abs(float64(a[i])-float64(b[i])))
		scale = max(scale, math.Abs(float64(a[i])))
	}
	return diff, scale
}

// relErr is max |a-b| / max |b|.
func relErr(a []float32, b []float64) float64 {
	var diff, scale float64
	for i := range b {
		diff = max(diff, math.Abs(float64(a[i])-b[i]))
		scale = max(scale, math.Abs(b[i]))
	}
	return diff / scale
}

// One forward of the CIFAR-10 model is about 12.1 GFLOP per 32x32 image.
func TestFLOPs(t *testing.T) {
	c := preset(t, "cifar10")
	f := float64(c.FLOPs())
	if math.Abs(f/12.1e9-1) > 0.05 {
		t.Errorf("cifar10: %.3f GFLOP, want 12.1 within 5%%", f/1e9)
	}
	// Attention matrix products: q k^T and the weighted sum of v, 2 x
	// (HW)^2 x C multiply-adds per attention block, at 16x16 with 256
	// channels in 2 + 3 blocks and at 4x4 with 256 in the middle.
	attn := int64(2 * 2 * (5*256*256*256 + 16*16*256))
	noAttn := c
	noAttn.AttentionResolutions = nil
	// Without them the count is the often-quoted 12.1 GFLOP of layer-hook
	// counters (which do not see matrix products).
	if got := float64(c.FLOPs()-attn) / 1e9; math.Abs(got-12.11) > 0.01 {
		t.Errorf("without the attention products: %.3f GFLOP, want 12.11", got)
	}
	if noAttn.FLOPs() >= c.FLOPs() {
		t.Error("attention costs nothing")
	}
	// Doubling the image size quadruples the cost of everything but the
	// attention products and the time MLP, so more than triples the total.
	big := c
	big.ImageSize = 64
	if ratio := float64(big.FLOPs()) / f; ratio < 3.5 {
		t.Errorf("64x64 costs %.2fx 32x32", ratio)
	}
	u := newModel(t, preset(t, "tiny"), 1)
	if u.FLOPs() != preset(t, "tiny").FLOPs() {
		t.Error("UNet.FLOPs differs from Config.FLOPs")
	}
}

func TestNewErrors(t *testing.T) {
	c := preset(t, "tiny")
	if _, err := New(c, torch.CPU, torch.Int64, nil); err == nil || !strings.Contains(err.Error(), "floating-point") {
		t.Errorf("int64 parameters: %v", err)
	}
	c.NormGroups = 3
	start := torch.LiveTensors()
	if _, err := New(c, torch.CPU, torch.Float32, nil); err == nil {
		t.Error("an invalid config was built")
	}
	if d := torch.LiveTensors() - start; d != 0 {
		t.Errorf("%d tensors left after a failed New", d)
	}
}

func TestConfigAccessors(t *testing.T) {
	c := preset(t, "tiny")
	c.NumHeads, c.TimeEmbedDim = 0, 0
	u := newModel(t, c, 1)
	got := u.Config()
	if got.NumHeads != 1 || got.TimeEmbedDim != 4*c.BaseChannels {
		t.Errorf("Config() = %+v, want defaults applied", got)
	}
	got.ChannelMult[0] = 7
	if u.Config().ChannelMult[0] == 7 {
		t.Error("Config() shares its slices with the model")
	}
	if u.Device() != torch.CPU || u.DType() != torch.Float32 {
		t.Errorf("device %v dtype %v", u.Device(), u.DType())
	}
}
