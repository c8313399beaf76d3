package torch

import (
	"math"
	"math/rand/v2"
	"testing"
)

// gradCase is a differentiable function of some float64 inputs.
type gradCase struct {
	name   string
	shapes [][]int64
	f      func(s *Scope, xs []*Tensor) *Tensor
}

// checkGradients compares the autograd gradient of sum(f(xs) * r), for a
// fixed random r, with central finite differences, element by element.
func checkGradients(t *testing.T, c gradCase) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, uint64(len(c.name))))
	vals := make([][]float64, len(c.shapes))
	for i, sh := range c.shapes {
		vals[i] = make([]float64, numel(sh))
		for j := range vals[i] {
			vals[i][j] = rng.NormFloat64()
		}
	}
	var weights []float64
	var outShape []int64
	// loss evaluates sum(f * r) in mode; with Grad it also returns gradients.
	loss := func(mode Mode) (float64, [][]float64) {
		s := NewScope(mode)
		defer s.Close()
		xs := make([]*Tensor, len(vals))
		for i := range vals {
			xs[i] = s.FromFloat64s(vals[i], c.shapes[i]...)
			if mode == Grad {
				if err := xs[i].SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
			}
		}
		out := c.f(s, xs)
		if err := s.Err(); err != nil {
			t.Fatalf("forward: %v", err)
		}
		if weights == nil {
			outShape = out.Shape()
			weights = make([]float64, numel(outShape))
			for j := range weights {
				weights[j] = rng.NormFloat64()
			}
		}
		l := s.Sum(s.Mul(out, s.FromFloat64s(weights, outShape...)), nil, false)
		v, err := l.Item()
		if err != nil {
			t.Fatal(err)
		}
		if mode != Grad {
			return v, nil
		}
		s.Backward(l)
		grads := make([][]float64, len(xs))
		for i, x := range xs {
			g := s.Grad(x)
			if g == nil {
				t.Fatalf("input %d has no gradient (%v)", i, s.Err())
			}
			if grads[i], err = g.Float64s(); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatalf("backward: %v", err)
		}
		return v, grads
	}
	_, analytic := loss(Grad)
	const h = 1e-6
	for i := range vals {
		for j := range vals[i] {
			orig := vals[i][j]
			vals[i][j] = orig + h
			fp, _ := loss(NoGrad)
			vals[i][j] = orig - h
			fm, _ := loss(NoGrad)
			vals[i][j] = orig
			numeric := (fp - fm) / (2 * h)
			if d := math.Abs(numeric - analytic[i][j]); d > 1e-6*math.Max(1, math.Abs(numeric)) {
				t.Fatalf("input %d element %d: autograd %.10g, finite differences %.10g", i, j, analytic[i][j], numeric)
			}
		}
	}
}

func TestGradientsMatchFiniteDifferences(t *testing.T) {
	cases := []gradCase{
		{"conv2d", [][]int64{{2, 2, 5, 5}, {3, 2, 3, 3}, {3}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.Conv2d(x[0], x[1], x[2], Conv2dOptions{Padding: [2]int64{1, 1}})
		}},
		{"conv2d stride 2 groups 2", [][]int64{{1, 4, 5, 5}, {4, 2, 3, 3}, {4}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.Conv2d(x[0], x[1], x[2], Conv2dOptions{Stride: [2]int64{2, 2}, Padding: [2]int64{1, 1}, Groups: 2})
		}},
		{"group_norm", [][]int64{{2, 4, 3, 3}, {4}, {4}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.GroupNorm(x[0], 2, x[1], x[2], 1e-5)
		}},
		{"group_norm channels-last", [][]int64{{2, 4, 3, 3}, {4}, {4}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.GroupNorm(s.ChannelsLast(x[0]), 2, x[1], x[2], 1e-5)
		}},
		{"group_norm_silu with a shift", [][]int64{{2, 4, 3, 3}, {2, 4}, {4}, {4}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.GroupNormSiLU(s.ChannelsLast(x[0]), x[1], 2, x[2], x[3], 1e-5)
		}},
		{"linear", [][]int64{{3, 4}, {5, 4}, {5}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.Linear(x[0], x[1], x[2])
		}},
		{"attention", [][]int64{{2, 3, 4}, {2, 5, 4}, {2, 5, 3}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.Attention(x[0], x[1], x[2], 0)
		}},
		{"upsample_nearest2d", [][]int64{{1, 2, 3, 3}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.UpsampleNearest2d(x[0], 6, 6)
		}},
		{"avg_pool2d", [][]int64{{1, 2, 4, 4}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.AvgPool2d(x[0], 2, 2)
		}},
		{"silu softmax", [][]int64{{3, 5}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.Softmax(s.SiLU(x[0]), 1)
		}},
		{"mse_loss", [][]int64{{4, 3}, {4, 3}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.MSELoss(x[0], x[1], ReduceMean)
		}},
		{"matmul broadcast", [][]int64{{2, 3, 4}, {4, 2}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.Matmul(x[0], x[1])
		}},
		{"sin cos exp sqrt", [][]int64{{6}}, func(s *Scope, x []*Tensor) *Tensor {
			return s.Add(s.Mul(s.Sin(x[0]), s.Cos(x[0])), s.Sqrt(s.Exp(x[0])))
		}},
		{"cat narrow gather", [][]int64{{2, 3}, {2, 2}}, func(s *Scope, x []*Tensor) *Tensor {
			c := s.Cat([]*Tensor{x[0], x[1]}, 1)
			idx := s.FromInt64s([]int64{4, 0, 2, 1, 3, 3}, 2, 3)
			return s.Gather(s.Narrow(c, 1, 0, 5), 1, idx)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkGradients(t, c) })
	}
}

// The plain attention composition is what runs on libtorch 1.x; where the
// fused kernel exists it must agree with it.
func TestFusedAttentionMatchesPlain(t *testing.T) {
	s := NewScope(NoGrad)
	defer s.Close()
	g := opGen(t, 3)
	q := s.Randn([]int64{2, 4, 16, 8}, Float32, CPU, g)
	k := s.Randn([]int64{2, 4, 16, 8}, Float32, CPU, g)
	v := s.Randn([]int64{2, 4, 16, 8}, Float32, CPU, g)
	fused, ran := s.attention(q, k, v, 0, true)
	plain, _ := s.attention(q, k, v, 0, false)
	diff, err := s.Max(s.Abs(s.Sub(fused, plain)), nil, false).Item()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fused kernel ran: %v, max difference %.3g", ran, diff)
	if diff > 1e-5 {
		t.Fatalf("fused and plain attention differ by %g", diff)
	}
}
