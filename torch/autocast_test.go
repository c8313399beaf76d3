package torch

import (
	"math"
	"testing"
)

// Under bfloat16 autocast a convolution runs in bfloat16, GroupNorm and the
// loss in float32, gradients reach float32 parameters, and the results are
// close to float32's; the scope's setting does not leak into other scopes.
func TestAutocastBFloat16(t *testing.T) {
	g, _ := NewGenerator(1, CPU)
	defer g.Close()
	init := NewScope(NoGrad)
	w := init.Keep(init.MulScalar(init.Randn([]int64{8, 4, 3, 3}, Float32, CPU, g), 0.2))
	x := init.Keep(init.Randn([]int64{2, 4, 8, 8}, Float32, CPU, g))
	init.Close()
	defer w.Close()
	defer x.Close()
	if err := w.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	forward := func(s *Scope) (conv, norm, loss *Tensor) {
		conv = s.Conv2d(x, w, nil, Conv2dOptions{Padding: [2]int64{1, 1}})
		norm = s.GroupNorm(conv, 2, nil, nil, 1e-5)
		loss = s.MSELoss(norm, s.Zeros([]int64{2, 8, 8, 8}, Float32, CPU), ReduceMean)
		return
	}
	ac, err := NewAutocastScope(Grad, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	conv, norm, loss := forward(ac)
	if conv.DType() != BFloat16 || norm.DType() != Float32 || loss.DType() != Float32 {
		t.Fatalf("autocast dtypes: conv %s, group_norm %s, loss %s", conv.DType(), norm.DType(), loss.DType())
	}
	ac.Backward(loss)
	grad := ac.Grad(w)
	if ac.Err() != nil || grad == nil || grad.DType() != Float32 {
		t.Fatalf("gradient %v, %v", grad, ac.Err())
	}
	plain := NewScope(Grad)
	defer plain.Close()
	pc, _, pl := forward(plain)
	if pc.DType() != Float32 {
		t.Fatalf("autocast leaked into a plain scope: conv is %s", pc.DType())
	}
	a, _ := loss.Item()
	b, _ := pl.Item()
	if math.Abs(a-b) > 0.02*math.Abs(b) {
		t.Errorf("bf16 loss %g vs float32 %g", a, b)
	}
	if _, err := NewAutocastScope(Grad, Int64); err == nil {
		t.Error("autocast to int64 accepted")
	}
}
