package autoencoder

import (
	"math"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

// KL equals the closed form mean((μ² + σ² - 1 - log σ²)/2) computed in Go
// float64, and its gradients are μ/n and (σ² - 1)/(2n).
func TestKLClosedForm(t *testing.T) {
	s := torch.NewScope(torch.Grad)
	defer s.Close()
	g, _ := torch.NewGenerator(3, torch.CPU)
	defer g.Close()
	shape := []int64{3, 4, 5, 2}
	mean := s.MulScalar(s.Randn(shape, torch.Float64, torch.CPU, g), 2)
	logVar := s.MulScalar(s.Randn(shape, torch.Float64, torch.CPU, g), 3)
	mean, logVar = s.Detach(mean), s.Detach(logVar)
	mean.SetRequiresGrad(true)
	logVar.SetRequiresGrad(true)
	kl := KL(s, mean, logVar)
	s.Backward(kl)
	got, err := kl.Item()
	if err != nil {
		t.Fatal(err)
	}
	mu, _ := mean.Float64s()
	lv, _ := logVar.Float64s()
	gm, _ := s.Grad(mean).Float64s()
	glv, _ := s.Grad(logVar).Float64s()
	n := float64(len(mu))
	want := 0.0
	for i := range mu {
		want += (mu[i]*mu[i] + math.Exp(lv[i]) - 1 - lv[i]) / 2
		if d := math.Abs(gm[i] - mu[i]/n); d > 1e-15 {
			t.Fatalf("d KL / d mean[%d] off by %g", i, d)
		}
		if d := math.Abs(glv[i] - (math.Exp(lv[i])-1)/(2*n)); d > 1e-12*math.Max(1, math.Exp(lv[i])) {
			t.Fatalf("d KL / d logVar[%d] off by %g", i, d)
		}
	}
	want /= n
	if math.Abs(got-want) > 1e-12*want {
		t.Errorf("KL = %.15g, closed form %.15g", got, want)
	}
	// The KL of the prior itself is zero.
	zero, err := KL(s, s.Zeros(shape, torch.Float64, torch.CPU), s.Zeros(shape, torch.Float64, torch.CPU)).Item()
	if err != nil || zero != 0 {
		t.Errorf("KL(N(0,1) || N(0,1)) = %g, %v", zero, err)
	}
}

// The gradient of the whole loss (reconstruction through encoder,
// reparameterised sample and decoder, plus the weighted KL) matches
// central finite differences in float64, for both reconstruction terms,
// at parameters spread over the network.
func TestLossGradientFiniteDifferences(t *testing.T) {
	g, _ := torch.NewGenerator(11, torch.CPU)
	defer g.Close()
	m, err := New(smallConfig(), torch.CPU, torch.Float64, g)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	xs := torch.NewScope(torch.NoGrad)
	defer xs.Close()
	x := xs.Tanh(xs.Randn([]int64{2, 1, 8, 8}, torch.Float64, torch.CPU, g))
	params := map[string]int{}
	for i, p := range m.Params() {
		params[p.Name] = i
	}
	probes := []struct {
		name  string
		index int
	}{
		{"encoder.conv_in.weight", 4},
		{"encoder.down_blocks.0.downsamplers.0.conv.bias", 1},
		{"encoder.mid_block.attentions.0.to_q.weight", 7},
		{"encoder.conv_norm_out.weight", 3},
		{"quant_conv.bias", 3}, // a log-variance channel
		{"post_quant_conv.weight", 2},
		{"decoder.up_blocks.1.resnets.0.conv_shortcut.weight", 5},
		{"decoder.conv_out.bias", 0},
	}
	for _, rec := range []Reconstruction{L1, L2} {
		l := Loss{Reconstruction: rec, KLWeight: 0.3}
		// loss evaluates the loss with the same posterior draw every time.
		loss := func(s *torch.Scope) *torch.Tensor {
			gen, _ := torch.NewGenerator(99, torch.CPU)
			defer gen.Close()
			return m.Loss(s, x, gen, l).Total
		}
		for _, p := range m.Params() {
			if err := p.T.ZeroGrad(); err != nil {
				t.Fatal(err)
			}
		}
		s := torch.NewScope(torch.Grad)
		s.Backward(loss(s))
		grads := map[string][]float64{}
		for _, p := range probes {
			gr, err := s.Grad(m.Params()[params[p.name]].T).Float64s()
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			grads[p.name] = gr
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		value := func() float64 {
			s := torch.NewScope(torch.NoGrad)
			defer s.Close()
			v, err := loss(s).Item()
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		worst := 0.0
		for _, p := range probes {
			param := m.Params()[params[p.name]].T
			set := func(v []float64) {
				s := torch.NewScope(torch.NoGrad)
				defer s.Close()
				s.CopyInPlace(param, s.Reshape(s.FromFloat64s(v, int64(len(v))), param.Shape()...))
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
			}
			orig, _ := param.Float64s()
			const h = 1e-5
			v := append([]float64(nil), orig...)
			v[p.index] = orig[p.index] + h
			set(v)
			up := value()
			v[p.index] = orig[p.index] - h
			set(v)
			down := value()
			set(orig)
			fd, ad := (up-down)/(2*h), grads[p.name][p.index]
			worst = math.Max(worst, math.Abs(fd-ad)/math.Abs(fd))
			if math.Abs(fd-ad) > 1e-6+1e-4*math.Abs(fd) {
				t.Errorf("%s: d loss / d %s[%d] = %.9g by autograd, %.9g by finite differences", rec, p.name, p.index, ad, fd)
			}
		}
		t.Logf("%s: largest relative difference autograd / finite differences %.2g", rec, worst)
	}
}

func TestLossConfig(t *testing.T) {
	for _, c := range []struct {
		l    Loss
		want string
	}{
		{Loss{Reconstruction: "l3"}, `"l3" is not l1 or l2`},
		{Loss{KLWeight: -1}, "kl_weight"},
		{Loss{KLWeight: math.NaN()}, "kl_weight"},
	} {
		if err := c.l.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v", c.l, err)
		}
	}
	if r, err := ParseReconstruction("MSE"); err != nil || r != L2 {
		t.Errorf("ParseReconstruction(MSE) = %q, %v", r, err)
	}
	if _, err := ParseReconstruction("huber"); err == nil || !strings.Contains(err.Error(), "l1, l2") {
		t.Errorf("ParseReconstruction(huber): %v", err)
	}
}
