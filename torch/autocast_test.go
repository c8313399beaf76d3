package torch

import (
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
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

// The shim's autocast policy: products run in bfloat16 whatever their
// inputs; softmax, log-softmax, the losses and accumulating reductions take
// bfloat16 in float32; min and max stay exact; a child scope autocasts
// like its parent.
func TestAutocastPolicy(t *testing.T) {
	g, _ := NewGenerator(3, CPU)
	defer g.Close()
	s, err := NewAutocastScope(NoGrad, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if dt, ok := s.Autocast(); !ok || dt != BFloat16 {
		t.Fatalf("Autocast() = %s, %v", dt, ok)
	}
	if _, ok := NewScope(Grad).Autocast(); ok {
		t.Fatal("a plain scope reports autocast")
	}
	a := s.Randn([]int64{2, 3, 5, 4}, Float32, CPU, g)
	b := s.Matmul(a, s.Transpose(a, 2, 3)) // bfloat16 product
	c := s.Child()
	defer c.Close()
	if dt, ok := c.Autocast(); !ok || dt != BFloat16 || c.Mode() != NoGrad {
		t.Fatalf("child scope: autocast %s %v, mode %s", dt, ok, c.Mode())
	}
	got := map[string]*Tensor{
		"matmul":      b,
		"child conv":  c.Conv2d(a, s.Randn([]int64{4, 3, 1, 1}, Float32, CPU, g), nil, Conv2dOptions{}),
		"softmax":     s.Softmax(b, -1),
		"log_softmax": s.LogSoftmax(b, -1),
		"sum":         s.Sum(b, nil, false),
		"mean":        s.Mean(b, []int64{1}, false),
		"norm":        s.Norm(b, nil, false),
		"mse_loss":    s.MSELoss(b, b, ReduceMean),
		"attention":   s.Attention(a, a, a, 0),
		"max":         s.Max(b, []int64{1}, false),
	}
	want := map[string]DType{"matmul": BFloat16, "child conv": BFloat16, "attention": BFloat16, "max": BFloat16}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	for name, x := range got {
		w, ok := want[name]
		if !ok {
			w = Float32
		}
		if x.DType() != w {
			t.Errorf("%s under bf16 autocast is %s, want %s", name, x.DType(), w)
		}
	}
	// The float32 softmax of bfloat16 scores sums to 1 to float32
	// precision (a bfloat16 softmax would be off by ~1e-3).
	sums, err := s.Sum(got["softmax"], []int64{3}, false).Float32s()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range sums {
		if math.Abs(float64(v)-1) > 1e-6 {
			t.Fatalf("softmax rows sum to %v", v)
		}
	}
}

// CPUHasBF16 agrees with the CPU flags Linux reports.
func TestCPUHasBF16(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the /proc/cpuinfo flags checked here are x86 Linux's")
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	want := false
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags := strings.Fields(v)
			want = slices.Contains(flags, "avx512_bf16") || slices.Contains(flags, "amx_bf16")
			break
		}
	}
	if got := CPUHasBF16(); got != want {
		t.Errorf("CPUHasBF16() = %v, /proc/cpuinfo says %v", got, want)
	}
}
