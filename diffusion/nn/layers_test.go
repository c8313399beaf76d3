package nn

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

func newGen(t *testing.T, seed uint64) *torch.Generator {
	t.Helper()
	g, err := torch.NewGenerator(seed, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// values copies a float32 tensor to the host.
func values(t *testing.T, x *torch.Tensor) []float32 {
	t.Helper()
	v, err := x.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func meanVar(v []float32) (mean, variance float64) {
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	for _, x := range v {
		d := float64(x) - mean
		variance += d * d
	}
	return mean, variance / float64(len(v))
}

func TestLayerOutputShapes(t *testing.T) {
	b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 1), Inference)
	lin := b.Sub("lin").Linear(3, 5)
	conv := b.Sub("conv").Conv2d(3, 8, 3, Padding(1))
	down := b.Sub("down").Conv2d(3, 4, 3, Stride(2), Padding(1))
	nin := b.Sub("nin").Conv2d(3, 6, 1, NoBias())
	norm := b.Sub("norm").GroupNorm(2, 8)
	emb := b.Sub("emb").Embedding(10, 7)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	defer CloseParams(b.Params())

	s := torch.NewScope(torch.Grad)
	defer s.Close()
	g := newGen(t, 2)
	x := s.Randn([]int64{2, 3, 9, 9}, torch.Float32, torch.CPU, g)
	cases := []struct {
		name string
		got  *torch.Tensor
		want []int64
	}{
		{"linear", lin.Forward(s, s.Randn([]int64{4, 2, 3}, torch.Float32, torch.CPU, g)), []int64{4, 2, 5}},
		{"conv3x3", conv.Forward(s, x), []int64{2, 8, 9, 9}},
		{"conv stride 2", down.Forward(s, x), []int64{2, 4, 5, 5}},
		{"conv1x1 no bias", nin.Forward(s, x), []int64{2, 6, 9, 9}},
		{"groupnorm", norm.Forward(s, conv.Forward(s, x)), []int64{2, 8, 9, 9}},
		{"embedding 1-d", emb.Forward(s, s.FromInt64s([]int64{0, 9, 3}, 3)), []int64{3, 7}},
		{"embedding 2-d", emb.Forward(s, s.FromInt64s([]int64{0, 9, 3, 1}, 2, 2)), []int64{2, 2, 7}},
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.got.Shape(); !slices.Equal(got, c.want) {
				t.Errorf("shape %v, want %v", got, c.want)
			}
		})
	}
	if got := down.OutSize(9); got != 5 {
		t.Errorf("OutSize(9) = %d, want 5", got)
	}
	if nin.Bias != nil || len(nin.Params()) != 1 {
		t.Errorf("NoBias conv has bias %v and %d params", nin.Bias, len(nin.Params()))
	}
}

func TestParamNamesAndOrder(t *testing.T) {
	b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 1), Inference)
	b.Sub("temb").Sub("dense").Sub("0").Linear(4, 8)
	down := b.Sub("down").Sub("0")
	down.Sub("conv").Conv2d(2, 4, 3)
	down.Sub("norm").GroupNorm(2, 4)
	b.Sub("head").Conv2d(4, 1, 1, NoBias())
	b.Sub("label_emb").Embedding(3, 8)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	ps := b.Params()
	defer CloseParams(ps)

	want := []struct {
		name  string
		shape []int64
	}{
		{"temb.dense.0.weight", []int64{8, 4}},
		{"temb.dense.0.bias", []int64{8}},
		{"down.0.conv.weight", []int64{4, 2, 3, 3}},
		{"down.0.conv.bias", []int64{4}},
		{"down.0.norm.weight", []int64{4}},
		{"down.0.norm.bias", []int64{4}},
		{"head.weight", []int64{1, 4, 1, 1}},
		{"label_emb.weight", []int64{3, 8}},
	}
	if len(ps) != len(want) {
		t.Fatalf("%d params, want %d", len(ps), len(want))
	}
	for i, w := range want {
		if ps[i].Name != w.name || !slices.Equal(ps[i].T.Shape(), w.shape) {
			t.Errorf("param %d = %s %v, want %s %v", i, ps[i].Name, ps[i].T.Shape(), w.name, w.shape)
		}
		m, err := ps[i].T.Meta()
		if err != nil {
			t.Fatal(err)
		}
		if !m.RequiresGrad || !m.IsLeaf || m.DType != torch.Float32 {
			t.Errorf("%s: requires grad %v, leaf %v, dtype %s; want a float32 leaf that requires grad",
				ps[i].Name, m.RequiresGrad, m.IsLeaf, m.DType)
		}
	}
	if got, want := NumParams(ps), int64(32+8+72+4+4+4+4+24); got != want {
		t.Errorf("NumParams = %d, want %d", got, want)
	}
	if got := b.Sub("a").Sub("b").Name("weight"); got != "a.b.weight" {
		t.Errorf("Name = %q", got)
	}
}

// Linear and Conv2d draw weight and bias from U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)), PyTorch's defaults; GroupNorm starts as the identity;
// Embedding rows are N(0, 1).
func TestDefaultInitialisation(t *testing.T) {
	b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 7), Inference)
	lin := b.Sub("lin").Linear(256, 512)
	conv := b.Sub("conv").Conv2d(32, 64, 3)
	norm := b.Sub("norm").GroupNorm(8, 64)
	emb := b.Sub("emb").Embedding(100, 300)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	defer CloseParams(b.Params())

	uniform := []struct {
		name  string
		x     *torch.Tensor
		fanIn int64
	}{
		{"linear weight", lin.Weight, 256},
		{"linear bias", lin.Bias, 256},
		{"conv weight", conv.Weight, 32 * 9},
		{"conv bias", conv.Bias, 32 * 9},
	}
	for _, u := range uniform {
		t.Run(u.name, func(t *testing.T) {
			v := values(t, u.x)
			bound := 1 / math.Sqrt(float64(u.fanIn))
			lo, hi := slices.Min(v), slices.Max(v)
			if float64(lo) < -bound || float64(hi) > bound {
				t.Errorf("values in [%g, %g], outside ±%g", lo, hi, bound)
			}
			// The extremes come close to the bound (many draws).
			if len(v) > 1000 && (float64(hi) < 0.99*bound || float64(lo) > -0.99*bound) {
				t.Errorf("values in [%g, %g] do not span ±%g", lo, hi, bound)
			}
			mean, variance := meanVar(v)
			n := float64(len(v))
			wantVar := bound * bound / 3
			if math.Abs(mean) > 5*math.Sqrt(wantVar/n) {
				t.Errorf("mean %g, want 0 (n = %d)", mean, len(v))
			}
			if len(v) > 1000 && math.Abs(variance/wantVar-1) > 0.05 {
				t.Errorf("variance %g, want %g", variance, wantVar)
			}
		})
	}
	t.Run("groupnorm", func(t *testing.T) {
		for _, x := range values(t, norm.Weight) {
			if x != 1 {
				t.Fatalf("weight %g, want 1", x)
			}
		}
		for _, x := range values(t, norm.Bias) {
			if x != 0 {
				t.Fatalf("bias %g, want 0", x)
			}
		}
		if norm.Eps != 1e-5 {
			t.Errorf("eps %g, want PyTorch's 1e-5", norm.Eps)
		}
	})
	t.Run("embedding", func(t *testing.T) {
		mean, variance := meanVar(values(t, emb.Weight))
		if math.Abs(mean) > 0.02 || math.Abs(variance-1) > 0.03 {
			t.Errorf("mean %g variance %g, want N(0, 1)", mean, variance)
		}
	})
}

func TestZeroInit(t *testing.T) {
	b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 1), Inference)
	layers := []Module{
		b.Sub("lin").Linear(8, 4, ZeroInit()),
		b.Sub("conv").Conv2d(8, 4, 3, ZeroInit()),
		b.Sub("emb").Embedding(3, 4, ZeroInit()),
	}
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	defer CloseParams(b.Params())
	for _, l := range layers {
		for _, p := range l.Params() {
			for _, x := range values(t, p.T) {
				if x != 0 {
					t.Fatalf("%s has %g, want zeros", p.Name, x)
				}
			}
		}
	}
}

func TestBuilderDeterministic(t *testing.T) {
	build := func(seed uint64) []float32 {
		b := NewBuilder(torch.CPU, torch.Float32, newGen(t, seed), Inference)
		l := b.Linear(16, 16)
		if err := b.Err(); err != nil {
			t.Fatal(err)
		}
		defer CloseParams(b.Params())
		return append(values(t, l.Weight), values(t, l.Bias)...)
	}
	if !slices.Equal(build(3), build(3)) {
		t.Error("the same seed gave different weights")
	}
	if slices.Equal(build(3), build(4)) {
		t.Error("different seeds gave the same weights")
	}
}

func TestBuilderFloat64(t *testing.T) {
	b := NewBuilder(torch.CPU, torch.Float64, newGen(t, 1), Inference)
	l := b.Conv2d(2, 3, 3, Padding(1))
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	defer CloseParams(b.Params())
	for _, p := range l.Params() {
		if dt := p.T.DType(); dt != torch.Float64 {
			t.Errorf("%s is %s, want float64", p.Name, dt)
		}
	}
	s := torch.NewScope(torch.Grad)
	defer s.Close()
	y := l.Forward(s, s.Ones([]int64{1, 2, 4, 4}, torch.Float64, torch.CPU))
	if err := s.Err(); err != nil || !slices.Equal(y.Shape(), []int64{1, 3, 4, 4}) {
		t.Errorf("forward: %v, shape %v", err, y.Shape())
	}
}

// Linear computes x W^T + b, checked element by element on the host.
func TestLinearForwardValues(t *testing.T) {
	b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 5), Inference)
	l := b.Linear(3, 2)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	defer CloseParams(b.Params())
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	xs := []float32{1, -2, 0.5, 3, 0, -1}
	y := values(t, l.Forward(s, s.FromFloat32s(xs, 2, 3)))
	w, bias := values(t, l.Weight), values(t, l.Bias)
	for i := range 2 {
		for o := range 2 {
			want := float64(bias[o])
			for k := range 3 {
				want += float64(xs[i*3+k]) * float64(w[o*3+k])
			}
			if got := float64(y[i*2+o]); math.Abs(got-want) > 1e-6 {
				t.Errorf("y[%d][%d] = %g, want %g", i, o, got, want)
			}
		}
	}
}

// Embedding returns the table rows of the indices.
func TestEmbeddingLooksUpRows(t *testing.T) {
	b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 5), Inference)
	e := b.Embedding(4, 3)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	defer CloseParams(b.Params())
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	table := values(t, e.Weight)
	got := values(t, e.Forward(s, s.FromInt64s([]int64{2, 0, 2}, 3)))
	want := slices.Concat(table[6:9], table[0:3], table[6:9])
	if !slices.Equal(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}
}

func TestBuilderErrors(t *testing.T) {
	cases := []struct {
		name  string
		build func(b *Builder)
		want  string
	}{
		{"duplicate", func(b *Builder) { b.Sub("a").Linear(2, 2); b.Sub("a").Linear(2, 2) }, `"a.weight" created twice`},
		{"groups", func(b *Builder) { b.Sub("n").GroupNorm(3, 8) }, "multiple of groups"},
		{"linear size", func(b *Builder) { b.Linear(0, 3) }, "positive sizes"},
		{"conv stride", func(b *Builder) { b.Conv2d(1, 1, 3, Stride(0)) }, "bad size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := torch.LiveTensors()
			b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 1), Inference)
			c.build(b)
			// Sticky: later layers create nothing.
			if l := b.Sub("later").Linear(2, 2); l.Weight != nil {
				t.Error("a layer was created after an error")
			}
			CloseParams(b.Params())
			err := b.Err()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
			if d := torch.LiveTensors() - start; d != 0 {
				t.Errorf("%d tensors left alive", d)
			}
		})
	}
}

func ExampleBuilder() {
	b := NewBuilder(torch.CPU, torch.Float32, nil, Inference)
	b.Sub("down").Sub("0").Conv2d(3, 8, 3, Padding(1))
	b.Sub("out").Conv2d(8, 3, 3, Padding(1), ZeroInit())
	if err := b.Err(); err != nil {
		panic(err)
	}
	ps := b.Params()
	defer CloseParams(ps)
	for _, p := range ps {
		fmt.Println(p.Name, p.T.Shape())
	}
	fmt.Println(NumParams(ps))
	// Output:
	// down.0.weight [8 3 3 3]
	// down.0.bias [8]
	// out.weight [3 8 3 3]
	// out.bias [3]
	// 443
}

// On the CPU a Conv2d keeps its weight channels-last and hands on
// channels-last maps, even from one input channel (where libtorch alone
// returns NCHW), with the values of a plain NCHW convolution.
func TestConv2dChannelsLastOnCPU(t *testing.T) {
	t.Setenv(ChannelsLastEnv, "") // the default, whatever the environment says
	b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 1), Inference)
	first := b.Sub("first").Conv2d(1, 4, 3, Padding(1))
	second := b.Sub("second").Conv2d(4, 6, 3, Padding(1))
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	defer CloseParams(b.Params())
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	x := s.Randn([]int64{2, 1, 5, 5}, torch.Float32, torch.CPU, newGen(t, 2))
	h := first.Forward(s, x)
	y := second.Forward(s, h)
	nchw := func(c *Conv2d, in *torch.Tensor) *torch.Tensor {
		return s.Conv2d(s.Contiguous(in), s.Contiguous(c.Weight), c.Bias, torch.Conv2dOptions{Padding: [2]int64{1, 1}})
	}
	want := nchw(second, nchw(first, x))
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]*torch.Tensor{"second.weight": second.Weight, "first output": h, "second output": y} {
		m, err := tt.Meta()
		if err != nil {
			t.Fatal(err)
		}
		if m.Contiguous {
			t.Errorf("%s %v is NCHW-contiguous, want channels-last", name, m.Shape)
		}
	}
	got, ref := values(t, y), values(t, want)
	for i := range ref {
		if d := math.Abs(float64(got[i] - ref[i])); d > 1e-5 {
			t.Fatalf("element %d: %g, NCHW convolution gives %g", i, got[i], ref[i])
		}
	}
}

// On the CPU a Builder's Use picks its convolutions' layout (channels-last
// for Inference, NCHW for Training) and ChannelsLastEnv overrides it; a
// value other than 0 or 1 is the Builder's error.
func TestConv2dLayoutByUse(t *testing.T) {
	for _, c := range []struct {
		env          string
		use          Use
		channelsLast bool
	}{
		{"", Inference, true}, {"", Training, false},
		{"1", Inference, true}, {"1", Training, true},
		{"0", Inference, false}, {"0", Training, false},
	} {
		t.Setenv(ChannelsLastEnv, c.env)
		b := NewBuilder(torch.CPU, torch.Float32, newGen(t, 1), c.use)
		conv := b.Conv2d(4, 6, 3, Padding(1))
		if err := b.Err(); err != nil {
			t.Fatal(err)
		}
		s := torch.NewScope(torch.NoGrad)
		y := conv.Forward(s, s.Randn([]int64{2, 4, 5, 5}, torch.Float32, torch.CPU, newGen(t, 2)))
		for name, tt := range map[string]*torch.Tensor{"weight": conv.Weight, "output": y} {
			m, err := tt.Meta()
			if err != nil {
				t.Fatal(err)
			}
			if m.Contiguous == c.channelsLast {
				t.Errorf("%s=%q, use %d: %s NCHW-contiguous %v, want channels-last %v", ChannelsLastEnv, c.env, c.use, name, m.Contiguous, c.channelsLast)
			}
		}
		s.Close()
		CloseParams(b.Params())
	}

	t.Setenv(ChannelsLastEnv, "yes")
	b := NewBuilder(torch.CPU, torch.Float32, nil, Inference)
	b.Conv2d(1, 1, 1)
	if err := b.Err(); err == nil || !strings.Contains(err.Error(), ChannelsLastEnv) {
		t.Errorf("%s=yes: error %v, want one naming the variable", ChannelsLastEnv, err)
	}
}
