package optim

import (
	"math"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/internal/pyref"
	"github.com/ddpm-go/ddpm/torch"
)

const adamwReference = `
import json, sys, torch
d = json.load(sys.stdin)
ps = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in d["params"]]
opt = torch.optim.AdamW(ps, lr=d["lr"], betas=(d["beta1"], d["beta2"]), eps=d["eps"], weight_decay=d["wd"])
for step_grads in d["grads"]:
    for p, g in zip(ps, step_grads):
        p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
st = [opt.state[p] for p in ps]
json.dump({"params": [p.detach().tolist() for p in ps],
           "exp_avg": [s["exp_avg"].tolist() for s in st],
           "exp_avg_sq": [s["exp_avg_sq"].tolist() for s in st]}, sys.stdout)
`

// Three AdamW steps equal torch.optim.AdamW's on the same parameters and
// gradients, with the foreach kernels and with the per-tensor loop.
func TestAdamWMatchesPyTorch(t *testing.T) {
	in := map[string]any{
		"params": [][]float64{{0.5, -1, 2}, {0.1, 0.2}},
		"grads": [][][]float64{
			{{0.1, -0.2, 0.3}, {1, -1}},
			{{-0.5, 0.25, 0}, {0.01, 2}},
			{{0.3, 0.3, -0.3}, {-1, 0.5}},
		},
		"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "wd": 0.1,
	}
	var want struct{ Params, ExpAvg, ExpAvgSq [][]float64 }
	var raw map[string][][]float64
	pyref.Run(t, adamwReference, in, &raw)
	want.Params, want.ExpAvg, want.ExpAvgSq = raw["params"], raw["exp_avg"], raw["exp_avg_sq"]

	for _, perTensor := range []bool{false, true} {
		s := torch.NewScope(torch.NoGrad)
		var ps []nn.Param
		for i, v := range in["params"].([][]float64) {
			p := s.Keep(s.FromFloat64s(v, int64(len(v))))
			if err := p.SetRequiresGrad(true); err != nil {
				t.Fatal(err)
			}
			ps = append(ps, nn.Param{Name: string(rune('a' + i)), T: p})
		}
		s.Close()
		opt, err := NewAdamW(ps, AdamWConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1, WarmupSteps: -1, PerTensor: perTensor})
		if err != nil {
			t.Fatal(err)
		}
		for _, grads := range in["grads"].([][][]float64) {
			// loss = Σ p·g gives exactly the gradient g.
			g := torch.NewScope(torch.Grad)
			var terms []*torch.Tensor
			for i, p := range ps {
				terms = append(terms, g.Sum(g.Mul(p.T, g.FromFloat64s(grads[i], int64(len(grads[i])))), nil, false))
			}
			g.Backward(g.Sum(g.Stack(terms, 0), nil, false))
			if err := g.Err(); err != nil {
				t.Fatal(err)
			}
			g.Close()
			if _, err := opt.Step(); err != nil {
				t.Fatal(err)
			}
			if err := opt.ZeroGrad(); err != nil {
				t.Fatal(err)
			}
		}
		for i, p := range ps {
			for name, pair := range map[string]struct {
				got  *torch.Tensor
				want []float64
			}{"param": {p.T, want.Params[i]}, "exp_avg": {opt.expAvg[i], want.ExpAvg[i]}, "exp_avg_sq": {opt.expAvgSq[i], want.ExpAvgSq[i]}} {
				got, err := pair.got.Float64s()
				if err != nil {
					t.Fatal(err)
				}
				for j := range got {
					if math.Abs(got[j]-pair.want[j]) > 1e-6*math.Max(1, math.Abs(pair.want[j])) {
						t.Errorf("perTensor=%v %s %d[%d] = %.12g, torch %.12g", perTensor, name, i, j, got[j], pair.want[j])
					}
				}
			}
		}
		opt.Close()
		nn.CloseParams(ps)
	}
}

func TestAdamWWarmup(t *testing.T) {
	o := &AdamW{cfg: AdamWConfig{LR: 1e-3, WarmupSteps: 10}.WithDefaults()}
	for n, want := range map[int64]float64{1: 1e-4, 5: 5e-4, 10: 1e-3, 100: 1e-3} {
		if got := o.LR(n); math.Abs(got-want) > 1e-15 {
			t.Errorf("LR(%d) = %g, want %g", n, got, want)
		}
	}
	// Decays start at the warm-up's end and reach 0 at DecaySteps (closed
	// form: cosine lr/2 (1 + cos(pi f)), linear lr (1 - f), f the fraction
	// of the decay done).
	cos := &AdamW{cfg: AdamWConfig{LR: 1e-3, WarmupSteps: 10, Decay: CosineLR, DecaySteps: 110}.WithDefaults()}
	lin := &AdamW{cfg: AdamWConfig{LR: 1e-3, WarmupSteps: -1, Decay: LinearLR, DecaySteps: 100}.WithDefaults()}
	short := &AdamW{cfg: AdamWConfig{LR: 1e-3, WarmupSteps: 10, Decay: CosineLR, DecaySteps: 8}.WithDefaults()} // ends in its warm-up
	for _, c := range []struct {
		o    *AdamW
		n    int64
		want float64
	}{{cos, 5, 5e-4}, {cos, 10, 1e-3}, {cos, 35, 1e-3 * 0.5 * (1 + math.Sqrt(0.5))}, {cos, 60, 5e-4}, {cos, 110, 0}, {cos, 200, 0},
		{lin, 1, 0.99e-3}, {lin, 50, 5e-4}, {lin, 100, 0}, {lin, 150, 0}, {short, 8, 8e-4}} {
		if got := c.o.LR(c.n); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("%s LR(%d) = %g, want %g", c.o.cfg.Decay, c.n, got, c.want)
		}
	}
	if d, err := ParseLRDecay("Cosine"); err != nil || d != CosineLR {
		t.Errorf("ParseLRDecay(Cosine) = %q, %v", d, err)
	}
	if _, err := ParseLRDecay("step"); err == nil || !strings.Contains(err.Error(), "constant, cosine, linear") {
		t.Errorf("ParseLRDecay(step) = %v, want the valid names", err)
	}
	for _, bad := range []AdamWConfig{{LR: -1}, {Beta1: 1}, {Beta2: -0.5}, {Eps: -1}, {WeightDecay: -1},
		{Decay: "step"}, {Decay: CosineLR}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// The EMA follows avg_n = d avg_{n-1} + (1-d) θ_n with the warm-up decay
// min(decay, (1+n)/(10+n)).
func TestEMAFormula(t *testing.T) {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	theta := s.Keep(s.FromFloat64s([]float64{1, -2}, 2))
	defer theta.Close()
	ps := []nn.Param{{Name: "w", T: theta}}
	e, err := NewEMA(ps, 0.9, true)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	want := []float64{1, -2}
	for n := 1; n <= 20; n++ {
		s.MulScalarInPlace(theta, 1.1)
		th, _ := theta.Float64s()
		d := math.Min(0.9, float64(1+n)/float64(10+n))
		if got := e.Decay(); math.Abs(got-d) > 1e-15 {
			t.Fatalf("decay of update %d = %g, want %g", n, got, d)
		}
		if err := e.Update(ps); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			want[i] = d*want[i] + (1-d)*th[i]
		}
	}
	got, _ := e.Params()[0].T.Float64s()
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Errorf("avg[%d] = %.15g, want %.15g", i, got[i], want[i])
		}
	}
	if m, _ := e.Params()[0].T.Meta(); m.RequiresGrad {
		t.Error("EMA weights require grad")
	}
	if _, err := NewEMA(ps, 1.5, false); err == nil {
		t.Error("decay 1.5 accepted")
	}
}

// A NewAdamW that fails part-way frees the buffers it made.
func TestNewAdamWFailureLeaksNothing(t *testing.T) {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	good := s.Zeros([]int64{3}, torch.Float32, torch.CPU)
	closed := s.Zeros([]int64{3}, torch.Float32, torch.CPU)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	closed.Close()
	before := torch.LiveTensors()
	if _, err := NewAdamW([]nn.Param{{Name: "a", T: good}, {Name: "b", T: closed}}, AdamWConfig{}); err == nil {
		t.Fatal("NewAdamW accepted a closed tensor")
	}
	if after := torch.LiveTensors(); after != before {
		t.Errorf("%d live tensors after the failure, %d before", after, before)
	}
}
