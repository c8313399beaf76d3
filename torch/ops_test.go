package torch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

// Every expectation in this file is worked out by hand (or by a closed-form
// formula written next to it), never obtained by running the op under test.

const (
	opTol32 = 1e-6  // relative tolerance for float32 results
	opTol64 = 1e-12 // relative tolerance for float64 results
)

// opScope returns a scope that is closed when the test ends, after checking
// that none of its operations failed.
func opScope(t *testing.T, mode Mode) *Scope {
	t.Helper()
	s := NewScope(mode)
	t.Cleanup(func() {
		if err := s.Err(); err != nil {
			t.Errorf("scope error: %v", err)
		}
		s.Close()
	})
	return s
}

// opTol is the comparison tolerance for results of dtype dt (exact for
// integers and bools).
func opTol(dt DType) float64 {
	switch dt {
	case Float32:
		return opTol32
	case Float64:
		return opTol64
	case Float16, BFloat16:
		return 1e-2
	}
	return 0
}

// opClose compares got with want: NaN matches NaN, infinities must be equal,
// anything else may differ by tol relative to |want| (absolute below 1).
func opClose(got, want, tol float64) bool {
	switch {
	case math.IsNaN(want):
		return math.IsNaN(got)
	case math.IsInf(want, 0):
		return got == want
	}
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

// float64Of is x in float64 (nil for nil): the reference side of the
// tests of the shim's float32 kernels, which never run in float64.
func float64Of(s *Scope, x *Tensor) *Tensor {
	if x == nil {
		return nil
	}
	return s.ToDType(x, Float64)
}

// contiguousBytes is y's bytes in contiguous order.
func contiguousBytes(t *testing.T, s *Scope, y *Tensor) []byte {
	t.Helper()
	v, err := s.Contiguous(y).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// castCalls is the tensors f converts from one dtype to another
// (aten::_to_copy calls in the profile).
func castCalls(t *testing.T, f func()) int64 {
	t.Helper()
	return profileOf(t, f)["aten::_to_copy"].Calls
}

// opValues copies x's elements to float64s, whatever its dtype (bools are 0
// and 1).
func opValues(t *testing.T, x *Tensor) []float64 {
	t.Helper()
	if x == nil {
		t.Fatalf("nil tensor (the operation failed; see the scope error)")
	}
	var out []float64
	switch dt := x.DType(); dt {
	case Float32:
		v, err := x.Float32s()
		if err != nil {
			t.Fatalf("Float32s: %v", err)
		}
		for _, e := range v {
			out = append(out, float64(e))
		}
	case Float64:
		v, err := x.Float64s()
		if err != nil {
			t.Fatalf("Float64s: %v", err)
		}
		out = v
	case Int64:
		v, err := x.Int64s()
		if err != nil {
			t.Fatalf("Int64s: %v", err)
		}
		for _, e := range v {
			out = append(out, float64(e))
		}
	case Bool:
		v, err := x.Bools()
		if err != nil {
			t.Fatalf("Bools: %v", err)
		}
		for _, e := range v {
			out = append(out, opBool(e))
		}
	case Uint8:
		v, err := x.Bytes()
		if err != nil {
			t.Fatalf("Bytes: %v", err)
		}
		for _, e := range v {
			out = append(out, float64(e))
		}
	default:
		t.Fatalf("opValues: unsupported dtype %v", dt)
	}
	if out == nil {
		out = []float64{}
	}
	return out
}

func opBool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// opTF turns a string of T and F into bool expectations (1 and 0).
func opTF(s string) []float64 {
	out := make([]float64, 0, len(s))
	for _, c := range s {
		out = append(out, opBool(c == 'T'))
	}
	return out
}

// opCheck checks got's dtype, shape and values with the tolerance of its dtype.
func opCheck(t *testing.T, got *Tensor, dt DType, shape []int64, want []float64) {
	t.Helper()
	opCheckTol(t, got, dt, shape, want, opTol(dt))
}

func opCheckTol(t *testing.T, got *Tensor, dt DType, shape []int64, want []float64, tol float64) {
	t.Helper()
	if got == nil {
		t.Fatalf("nil tensor (the operation failed; see the scope error)")
	}
	m, err := got.Meta()
	if err != nil {
		t.Fatalf("Meta: %v", err)
	}
	if m.DType != dt {
		t.Errorf("dtype %v, want %v", m.DType, dt)
	}
	if !slices.Equal(m.Shape, shape) {
		t.Errorf("shape %v, want %v", m.Shape, shape)
	}
	if m.Device != CPU {
		t.Errorf("device %v, want cpu", m.Device)
	}
	vals := opValues(t, got)
	if len(vals) != len(want) {
		t.Fatalf("%d values %v, want %d %v", len(vals), vals, len(want), want)
	}
	bad := 0
	for i := range want {
		if !opClose(vals[i], want[i], tol) {
			if bad < 8 {
				t.Errorf("element %d = %.17g, want %.17g", i, vals[i], want[i])
			}
			bad++
		}
	}
	if bad > 8 {
		t.Errorf("... %d mismatching elements in all", bad)
	}
}

// opCase is one table entry: run builds the result in a fresh scope.
type opCase struct {
	name  string
	run   func(s *Scope) *Tensor
	dtype DType
	shape []int64
	want  []float64
}

func opRun(t *testing.T, cases []opCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := opScope(t, NoGrad)
			opCheck(t, c.run(s), c.dtype, c.shape, c.want)
		})
	}
}

// opMap applies f to every element of xs.
func opMap(xs []float64, f func(float64) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func opSeq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i)
	}
	return out
}

var (
	opInf = math.Inf(1)
	opNaN = math.NaN()
)

func TestOpsHostRoundTrip(t *testing.T) {
	t.Run("Float32s", func(t *testing.T) {
		s := opScope(t, NoGrad)
		in := []float32{1.5, -2.25, 0, 3e38, -1e-38, float32(math.Inf(-1))}
		x := s.FromFloat32s(in, 2, 3)
		got, err := x.Float32s()
		if err != nil || !slices.Equal(got, in) {
			t.Fatalf("Float32s = %v, %v; want %v", got, err, in)
		}
		if !slices.Equal(x.Shape(), []int64{2, 3}) || x.DType() != Float32 || x.Device() != CPU || x.Numel() != 6 {
			t.Errorf("got %v numel %d", x, x.Numel())
		}
		if _, err := x.Float64s(); err == nil {
			t.Errorf("Float64s of a float32 tensor succeeded")
		}
	})
	t.Run("Float64s", func(t *testing.T) {
		s := opScope(t, NoGrad)
		in := []float64{math.Pi, -0.5, 1e300, 5e-324, math.Copysign(0, -1), 7}
		x := s.FromFloat64s(in, 3, 1, 2)
		got, err := x.Float64s()
		if err != nil {
			t.Fatal(err)
		}
		for i := range in {
			if math.Float64bits(got[i]) != math.Float64bits(in[i]) {
				t.Errorf("element %d = %v, want %v (bit for bit)", i, got[i], in[i])
			}
		}
		if !slices.Equal(x.Shape(), []int64{3, 1, 2}) || x.DType() != Float64 {
			t.Errorf("got %v", x)
		}
	})
	t.Run("Int64s", func(t *testing.T) {
		s := opScope(t, NoGrad)
		in := []int64{math.MinInt64, -1, 0, 42, math.MaxInt64}
		x := s.FromInt64s(in, 5)
		got, err := x.Int64s()
		if err != nil || !slices.Equal(got, in) {
			t.Fatalf("Int64s = %v, %v; want %v", got, err, in)
		}
		if x.DType() != Int64 {
			t.Errorf("dtype %v", x.DType())
		}
	})
	t.Run("Bools", func(t *testing.T) {
		s := opScope(t, NoGrad)
		in := []bool{true, false, false, true}
		x := s.FromBools(in, 2, 2)
		got, err := x.Bools()
		if err != nil || !slices.Equal(got, in) {
			t.Fatalf("Bools = %v, %v; want %v", got, err, in)
		}
		if x.DType() != Bool {
			t.Errorf("dtype %v", x.DType())
		}
		b, err := x.Bytes()
		if err != nil || !bytes.Equal(b, []byte{1, 0, 0, 1}) {
			t.Errorf("Bytes = %v, %v", b, err)
		}
	})
	t.Run("Bytes", func(t *testing.T) {
		s := opScope(t, NoGrad)
		// float32 bytes in little-endian order.
		f32 := []float32{1.5, -2}
		raw := binary.LittleEndian.AppendUint32(nil, math.Float32bits(f32[0]))
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f32[1]))
		x := s.FromBytes(raw, Float32, 2)
		if got, err := x.Float32s(); err != nil || !slices.Equal(got, f32) {
			t.Errorf("FromBytes(float32) = %v, %v", got, err)
		}
		if b, err := s.FromFloat32s(f32, 2).Bytes(); err != nil || !bytes.Equal(b, raw) {
			t.Errorf("Bytes(float32) = %v, %v; want %v", b, err, raw)
		}
		// float64 and int64.
		f64raw := binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.Pi))
		f64raw = binary.LittleEndian.AppendUint64(f64raw, math.Float64bits(-0.25))
		if got, err := s.FromBytes(f64raw, Float64, 2, 1).Float64s(); err != nil || !slices.Equal(got, []float64{math.Pi, -0.25}) {
			t.Errorf("FromBytes(float64) = %v, %v", got, err)
		}
		i64raw := binary.LittleEndian.AppendUint64(nil, uint64(0xFFFFFFFFFFFFFFFE)) // -2
		if got, err := s.FromBytes(i64raw, Int64).Int64s(); err != nil || !slices.Equal(got, []int64{-2}) {
			t.Errorf("FromBytes(int64) = %v, %v", got, err)
		}
		// uint8 and bool.
		u8 := []byte{0, 7, 255}
		xu := s.FromBytes(u8, Uint8, 3)
		if b, err := xu.Bytes(); err != nil || !bytes.Equal(b, u8) || xu.DType() != Uint8 {
			t.Errorf("uint8 round trip = %v, %v (%v)", b, err, xu)
		}
		if got, err := s.FromBytes([]byte{1, 0, 1}, Bool, 3).Bools(); err != nil || !slices.Equal(got, []bool{true, false, true}) {
			t.Errorf("FromBytes(bool) = %v, %v", got, err)
		}
		// Half precision: 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800 (fp16);
		// 1.0 = 0x3F80, -2.0 = 0xC000, 0.5 = 0x3F00 (bf16).
		h := []byte{0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38}
		opCheck(t, s.ToDType(s.FromBytes(h, Float16, 3), Float32), Float32, []int64{3}, []float64{1, -2, 0.5})
		bf := []byte{0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F}
		opCheck(t, s.ToDType(s.FromBytes(bf, BFloat16, 3), Float32), Float32, []int64{3}, []float64{1, -2, 0.5})
		if b, err := s.FromBytes(h, Float16, 3).Bytes(); err != nil || !bytes.Equal(b, h) {
			t.Errorf("float16 Bytes = %v, %v", b, err)
		}
	})
	t.Run("Item", func(t *testing.T) {
		s := opScope(t, NoGrad)
		items := []struct {
			x    *Tensor
			want float64
		}{
			{s.FromFloat32s([]float32{2.5}), 2.5},
			{s.FromFloat64s([]float64{-math.Pi}, 1, 1), -math.Pi},
			{s.FromInt64s([]int64{7}, 1), 7},
			{s.FromBools([]bool{true}), 1},
		}
		for i, it := range items {
			got, err := it.x.Item()
			if err != nil || got != it.want {
				t.Errorf("item %d = %v, %v; want %v", i, got, err, it.want)
			}
		}
		if v, err := s.FromFloat64s([]float64{1, 2}, 2).Item(); err == nil {
			t.Errorf("Item of two elements = %v, want an error", v)
		}
	})
	t.Run("ScalarShape", func(t *testing.T) {
		s := opScope(t, NoGrad)
		x := s.FromFloat64s([]float64{4})
		if sh := x.Shape(); len(sh) != 0 || x.Numel() != 1 {
			t.Errorf("shape %v numel %d, want [] and 1", sh, x.Numel())
		}
	})
	t.Run("Meta", func(t *testing.T) {
		s := opScope(t, Grad)
		p := s.Ones([]int64{2, 3}, Float32, CPU)
		m, err := p.Meta()
		if err != nil {
			t.Fatal(err)
		}
		want := Meta{Shape: []int64{2, 3}, DType: Float32, Device: CPU, RequiresGrad: false, IsLeaf: true, Contiguous: true}
		if !opMetaEqual(m, want) {
			t.Errorf("Meta = %+v, want %+v", m, want)
		}
		if err := p.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
		y := s.MulScalar(p, 2)
		m, _ = y.Meta()
		want = Meta{Shape: []int64{2, 3}, DType: Float32, Device: CPU, RequiresGrad: true, IsLeaf: false, Contiguous: true}
		if !opMetaEqual(m, want) {
			t.Errorf("Meta of p*2 = %+v, want %+v", m, want)
		}
		m, _ = s.Transpose(y, 0, 1).Meta()
		want = Meta{Shape: []int64{3, 2}, DType: Float32, Device: CPU, RequiresGrad: true, IsLeaf: false, Contiguous: false}
		if !opMetaEqual(m, want) {
			t.Errorf("Meta of transpose = %+v, want %+v", m, want)
		}
		if d := p.Device(); d.String() != "cpu" {
			t.Errorf("Device = %v", d)
		}
	})
}

func opMetaEqual(a, b Meta) bool {
	return slices.Equal(a.Shape, b.Shape) && a.DType == b.DType && a.Device == b.Device &&
		a.RequiresGrad == b.RequiresGrad && a.IsLeaf == b.IsLeaf && a.Contiguous == b.Contiguous
}

func TestOpsCreate(t *testing.T) {
	opRun(t, []opCase{
		{"Full/float32", func(s *Scope) *Tensor { return s.Full([]int64{2, 3}, 2.5, Float32, CPU) },
			Float32, []int64{2, 3}, []float64{2.5, 2.5, 2.5, 2.5, 2.5, 2.5}},
		{"Full/int64", func(s *Scope) *Tensor { return s.Full([]int64{3}, -4, Int64, CPU) },
			Int64, []int64{3}, []float64{-4, -4, -4}},
		{"Full/scalar", func(s *Scope) *Tensor { return s.Full(nil, math.Pi, Float64, CPU) },
			Float64, []int64{}, []float64{math.Pi}},
		{"Full/bool", func(s *Scope) *Tensor { return s.Full([]int64{2}, 1, Bool, CPU) },
			Bool, []int64{2}, opTF("TT")},
		{"Full/empty", func(s *Scope) *Tensor { return s.Full([]int64{0, 3}, 1, Float32, CPU) },
			Float32, []int64{0, 3}, []float64{}},
		{"Zeros", func(s *Scope) *Tensor { return s.Zeros([]int64{2, 2}, Float64, CPU) },
			Float64, []int64{2, 2}, []float64{0, 0, 0, 0}},
		{"Ones", func(s *Scope) *Tensor { return s.Ones([]int64{1, 3}, Float32, CPU) },
			Float32, []int64{1, 3}, []float64{1, 1, 1}},
		{"Arange/int64", func(s *Scope) *Tensor { return s.Arange(5, Int64, CPU) },
			Int64, []int64{5}, []float64{0, 1, 2, 3, 4}},
		{"Arange/float64", func(s *Scope) *Tensor { return s.Arange(4, Float64, CPU) },
			Float64, []int64{4}, []float64{0, 1, 2, 3}},
		{"Arange/empty", func(s *Scope) *Tensor { return s.Arange(0, Float32, CPU) },
			Float32, []int64{0}, []float64{}},
	})
}

func TestOpsUnary(t *testing.T) {
	xs := []float64{-2, -0.5, 0, 0.5, 1, 3}
	pos := []float64{0.25, 1, 2, 4, 9}
	sigmoid := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	cases := []struct {
		name string
		op   func(*Scope, *Tensor) *Tensor
		in   []float64
		f    func(float64) float64
	}{
		{"Neg", (*Scope).Neg, xs, func(x float64) float64 { return -x }},
		{"Abs", (*Scope).Abs, xs, math.Abs},
		{"Sqrt", (*Scope).Sqrt, pos, math.Sqrt},
		{"Rsqrt", (*Scope).Rsqrt, pos, func(x float64) float64 { return 1 / math.Sqrt(x) }},
		{"Exp", (*Scope).Exp, xs, math.Exp},
		{"Log", (*Scope).Log, pos, math.Log},
		{"Sin", (*Scope).Sin, xs, math.Sin},
		{"Cos", (*Scope).Cos, xs, math.Cos},
		{"SiLU", (*Scope).SiLU, xs, func(x float64) float64 { return x * sigmoid(x) }},
		{"Sigmoid", (*Scope).Sigmoid, xs, sigmoid},
		{"Tanh", (*Scope).Tanh, xs, math.Tanh},
		{"Square", (*Scope).Square, xs, func(x float64) float64 { return x * x }},
		{"ReLU", (*Scope).ReLU, xs, func(x float64) float64 { return math.Max(x, 0) }},
		{"GELU", (*Scope).GELU, xs, func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }},
	}
	for _, c := range cases {
		// The inputs are dyadic fractions, exact in float32 too.
		for _, dt := range []DType{Float64, Float32} {
			t.Run(c.name+"/"+dt.String(), func(t *testing.T) {
				s := opScope(t, NoGrad)
				x := s.ToDType(s.FromFloat64s(c.in, int64(len(c.in))), dt)
				opCheck(t, c.op(s, x), dt, []int64{int64(len(c.in))}, opMap(c.in, c.f))
			})
		}
	}

	negZero := math.Copysign(0, -1)
	edges := []struct {
		name string
		op   func(*Scope, *Tensor) *Tensor
		in   []float64
		dt   DType
		want []float64
	}{
		{"Log/edges", (*Scope).Log, []float64{0, -1, opInf, 1}, Float64, []float64{-opInf, opNaN, opInf, 0}},
		{"Sqrt/edges", (*Scope).Sqrt, []float64{-1, 0, opInf, 4}, Float64, []float64{opNaN, 0, opInf, 2}},
		{"Rsqrt/edges", (*Scope).Rsqrt, []float64{0, 4, opInf, -1}, Float64, []float64{opInf, 0.5, 0, opNaN}},
		{"Exp/edges", (*Scope).Exp, []float64{-opInf, opInf, 0, 1000}, Float64, []float64{0, opInf, 1, opInf}},
		{"Abs/edges", (*Scope).Abs, []float64{-opInf, opNaN, negZero}, Float64, []float64{opInf, opNaN, 0}},
		{"Neg/edges", (*Scope).Neg, []float64{opInf, opNaN}, Float64, []float64{-opInf, opNaN}},
		{"Sigmoid/edges", (*Scope).Sigmoid, []float64{-opInf, opInf}, Float64, []float64{0, 1}},
		{"Tanh/edges", (*Scope).Tanh, []float64{-opInf, opInf}, Float64, []float64{-1, 1}},
		{"ReLU/edges", (*Scope).ReLU, []float64{-opInf, opInf}, Float64, []float64{0, opInf}},
		{"Square/edges", (*Scope).Square, []float64{-opInf, opNaN}, Float64, []float64{opInf, opNaN}},
		{"Log/float32", (*Scope).Log, []float64{0, -1}, Float32, []float64{-opInf, opNaN}},
		{"Sqrt/float32", (*Scope).Sqrt, []float64{-1}, Float32, []float64{opNaN}},
	}
	for _, c := range edges {
		t.Run(c.name, func(t *testing.T) {
			s := opScope(t, NoGrad)
			x := s.ToDType(s.FromFloat64s(c.in, int64(len(c.in))), c.dt)
			opCheck(t, c.op(s, x), c.dt, []int64{int64(len(c.in))}, c.want)
		})
	}

	opRun(t, []opCase{
		{"IsFinite/float64", func(s *Scope) *Tensor {
			return s.IsFinite(s.FromFloat64s([]float64{1, opNaN, opInf, -opInf, 0, -1e308}, 2, 3))
		}, Bool, []int64{2, 3}, opTF("TFFFTT")},
		{"IsFinite/float32", func(s *Scope) *Tensor {
			return s.IsFinite(s.FromFloat32s([]float32{math.MaxFloat32, float32(math.NaN()), float32(math.Inf(-1))}, 3))
		}, Bool, []int64{3}, opTF("TFF")},
		{"IsFinite/int64", func(s *Scope) *Tensor { return s.IsFinite(s.FromInt64s([]int64{math.MaxInt64, 0}, 2)) },
			Bool, []int64{2}, opTF("TT")},
		{"LogicalNot/bool", func(s *Scope) *Tensor { return s.LogicalNot(s.FromBools([]bool{true, false}, 2)) },
			Bool, []int64{2}, opTF("FT")},
		// NaN is truthy (non-zero), so its logical not is false.
		{"LogicalNot/float64", func(s *Scope) *Tensor {
			return s.LogicalNot(s.FromFloat64s([]float64{0, 2, -0.5, negZero, opNaN}, 5))
		}, Bool, []int64{5}, opTF("TFFTF")},
		{"LogicalNot/int64", func(s *Scope) *Tensor { return s.LogicalNot(s.FromInt64s([]int64{0, 3}, 2)) },
			Bool, []int64{2}, opTF("TF")},
		{"Neg/int64", func(s *Scope) *Tensor { return s.Neg(s.FromInt64s([]int64{-3, 0, 5}, 3)) },
			Int64, []int64{3}, []float64{3, 0, -5}},
		{"Abs/int64", func(s *Scope) *Tensor { return s.Abs(s.FromInt64s([]int64{-3, 0, 5}, 3)) },
			Int64, []int64{3}, []float64{3, 0, 5}},
	})
}

func TestOpsBinary(t *testing.T) {
	// Broadcasting: a is [2,1], b is [1,3], every result is [2,3] with
	// element (i, j) = f(a[i], b[j]).
	a21 := func(s *Scope) *Tensor { return s.FromFloat64s([]float64{1, 2}, 2, 1) }
	b13 := func(s *Scope) *Tensor { return s.FromFloat64s([]float64{1, 2, 4}, 1, 3) }
	bc := func(op func(*Scope, *Tensor, *Tensor) *Tensor) func(*Scope) *Tensor {
		return func(s *Scope) *Tensor { return op(s, a21(s), b13(s)) }
	}
	sh := []int64{2, 3}
	opRun(t, []opCase{
		{"Add/broadcast", bc((*Scope).Add), Float64, sh, []float64{2, 3, 5, 3, 4, 6}},
		{"Sub/broadcast", bc((*Scope).Sub), Float64, sh, []float64{0, -1, -3, 1, 0, -2}},
		{"Mul/broadcast", bc((*Scope).Mul), Float64, sh, []float64{1, 2, 4, 2, 4, 8}},
		{"Div/broadcast", bc((*Scope).Div), Float64, sh, []float64{1, 0.5, 0.25, 2, 1, 0.5}},
		{"Pow/broadcast", bc((*Scope).Pow), Float64, sh, []float64{1, 1, 1, 2, 4, 16}},
		{"Maximum/broadcast", bc((*Scope).Maximum), Float64, sh, []float64{1, 2, 4, 2, 2, 4}},
		{"Minimum/broadcast", bc((*Scope).Minimum), Float64, sh, []float64{1, 1, 1, 1, 2, 2}},
		{"Eq/broadcast", bc((*Scope).Eq), Bool, sh, opTF("TFFFTF")},
		{"Ne/broadcast", bc((*Scope).Ne), Bool, sh, opTF("FTTTFT")},
		{"Lt/broadcast", bc((*Scope).Lt), Bool, sh, opTF("FTTFFT")},
		{"Le/broadcast", bc((*Scope).Le), Bool, sh, opTF("TTTFTT")},
		{"Gt/broadcast", bc((*Scope).Gt), Bool, sh, opTF("FFFTFF")},
		{"Ge/broadcast", bc((*Scope).Ge), Bool, sh, opTF("TFFTTF")},
		{"LogicalAnd/broadcast", func(s *Scope) *Tensor {
			return s.LogicalAnd(s.FromBools([]bool{true, false}, 2, 1), s.FromBools([]bool{true, false, true}, 1, 3))
		}, Bool, sh, opTF("TFTFFF")},
		{"LogicalOr/broadcast", func(s *Scope) *Tensor {
			return s.LogicalOr(s.FromBools([]bool{true, false}, 2, 1), s.FromBools([]bool{true, false, true}, 1, 3))
		}, Bool, sh, opTF("TTTTFT")},
		{"LogicalAnd/float", func(s *Scope) *Tensor {
			return s.LogicalAnd(s.FromFloat64s([]float64{0, 1, 2, 0}, 4), s.FromFloat64s([]float64{0, 0, -3, 5}, 4))
		}, Bool, []int64{4}, opTF("FFTF")},
		{"LogicalOr/float", func(s *Scope) *Tensor {
			return s.LogicalOr(s.FromFloat64s([]float64{0, 1, 2, 0}, 4), s.FromFloat64s([]float64{0, 0, -3, 5}, 4))
		}, Bool, []int64{4}, opTF("FTTT")},
		// Same shapes, float32.
		{"Add/float32", func(s *Scope) *Tensor {
			return s.Add(s.FromFloat32s([]float32{1.5, -2}, 2), s.FromFloat32s([]float32{0.25, 2}, 2))
		}, Float32, []int64{2}, []float64{1.75, 0}},
		{"Div/float32", func(s *Scope) *Tensor {
			return s.Div(s.FromFloat32s([]float32{1, 2}, 2), s.FromFloat32s([]float32{3, 7}, 2))
		}, Float32, []int64{2}, []float64{1.0 / 3, 2.0 / 7}},
		// Scalar (0-dim) tensors broadcast against anything.
		{"Mul/0-dim", func(s *Scope) *Tensor {
			return s.Mul(s.FromFloat64s([]float64{1, 2, 3, 4}, 2, 2), s.FromFloat64s([]float64{-0.5}))
		}, Float64, []int64{2, 2}, []float64{-0.5, -1, -1.5, -2}},
		// Edge values.
		{"Div/edges", func(s *Scope) *Tensor {
			return s.Div(s.FromFloat64s([]float64{1, -1, 0}, 3), s.FromFloat64s([]float64{0, 0, 0}, 3))
		}, Float64, []int64{3}, []float64{opInf, -opInf, opNaN}},
		{"Pow/edges", func(s *Scope) *Tensor {
			return s.Pow(s.FromFloat64s([]float64{0, -8, 2, 4}, 4), s.FromFloat64s([]float64{0, 1.0 / 3, -1, 0.5}, 4))
		}, Float64, []int64{4}, []float64{1, opNaN, 0.5, 2}},
		{"Maximum/NaN propagates", func(s *Scope) *Tensor {
			return s.Maximum(s.FromFloat64s([]float64{opNaN, 1}, 2), s.FromFloat64s([]float64{0, opNaN}, 2))
		}, Float64, []int64{2}, []float64{opNaN, opNaN}},
		{"Minimum/NaN propagates", func(s *Scope) *Tensor {
			return s.Minimum(s.FromFloat64s([]float64{opNaN, 1}, 2), s.FromFloat64s([]float64{0, opNaN}, 2))
		}, Float64, []int64{2}, []float64{opNaN, opNaN}},
		{"Eq/NaN", func(s *Scope) *Tensor {
			x := s.FromFloat64s([]float64{opNaN, 1}, 2)
			return s.Eq(x, x)
		}, Bool, []int64{2}, opTF("FT")},
		{"Ne/NaN", func(s *Scope) *Tensor {
			x := s.FromFloat64s([]float64{opNaN, 1}, 2)
			return s.Ne(x, x)
		}, Bool, []int64{2}, opTF("TF")},
		// Type promotion follows PyTorch.
		{"Add/float32+float64", func(s *Scope) *Tensor {
			return s.Add(s.FromFloat32s([]float32{1, 2}, 2), s.FromFloat64s([]float64{0.5, 0.25}, 2))
		}, Float64, []int64{2}, []float64{1.5, 2.25}},
		{"Add/int64", func(s *Scope) *Tensor {
			return s.Add(s.FromInt64s([]int64{1, -2}, 2), s.FromInt64s([]int64{10, 20}, 2))
		}, Int64, []int64{2}, []float64{11, 18}},
		{"Div/int64 is true division", func(s *Scope) *Tensor {
			return s.Div(s.FromInt64s([]int64{7, -7}, 2), s.FromInt64s([]int64{2, 2}, 2))
		}, Float32, []int64{2}, []float64{3.5, -3.5}},
		{"Mul/int64*float32", func(s *Scope) *Tensor {
			return s.Mul(s.FromInt64s([]int64{3}, 1), s.FromFloat32s([]float32{0.5}, 1))
		}, Float32, []int64{1}, []float64{1.5}},
	})
}

func TestOpsScalar(t *testing.T) {
	x := func(s *Scope) *Tensor { return s.FromFloat64s([]float64{-2, 0, 0.5, 4}, 2, 2) }
	sh := []int64{2, 2}
	opRun(t, []opCase{
		{"AddScalar", func(s *Scope) *Tensor { return s.AddScalar(x(s), 1.5) }, Float64, sh, []float64{-0.5, 1.5, 2, 5.5}},
		{"MulScalar", func(s *Scope) *Tensor { return s.MulScalar(x(s), -3) }, Float64, sh, []float64{6, 0, -1.5, -12}},
		{"DivScalar", func(s *Scope) *Tensor { return s.DivScalar(x(s), 4) }, Float64, sh, []float64{-0.5, 0, 0.125, 1}},
		{"DivScalar/zero", func(s *Scope) *Tensor { return s.DivScalar(x(s), 0) }, Float64, sh, []float64{-opInf, opNaN, opInf, opInf}},
		{"PowScalar/2", func(s *Scope) *Tensor { return s.PowScalar(x(s), 2) }, Float64, sh, []float64{4, 0, 0.25, 16}},
		{"PowScalar/0.5", func(s *Scope) *Tensor { return s.PowScalar(x(s), 0.5) }, Float64, sh, []float64{opNaN, 0, math.Sqrt(0.5), 2}},
		{"PowScalar/-1", func(s *Scope) *Tensor { return s.PowScalar(x(s), -1) }, Float64, sh, []float64{-0.5, opInf, 2, 0.25}},
		{"PowScalar/0", func(s *Scope) *Tensor { return s.PowScalar(x(s), 0) }, Float64, sh, []float64{1, 1, 1, 1}},
		{"GtScalar", func(s *Scope) *Tensor { return s.GtScalar(x(s), 0) }, Bool, sh, opTF("FFTT")},
		{"LtScalar", func(s *Scope) *Tensor { return s.LtScalar(x(s), 0.5) }, Bool, sh, opTF("TTFF")},
		{"EqScalar", func(s *Scope) *Tensor { return s.EqScalar(x(s), 0.5) }, Bool, sh, opTF("FFTF")},
		{"AddScalar/float32", func(s *Scope) *Tensor { return s.AddScalar(s.FromFloat32s([]float32{1, 2}, 2), 0.25) },
			Float32, []int64{2}, []float64{1.25, 2.25}},
		// An int64 tensor with a floating-point scalar gives the default float
		// dtype, as in PyTorch.
		{"AddScalar/int64", func(s *Scope) *Tensor { return s.AddScalar(s.FromInt64s([]int64{1, 2}, 2), 2.5) },
			Float32, []int64{2}, []float64{3.5, 4.5}},
		{"EqScalar/int64", func(s *Scope) *Tensor { return s.EqScalar(s.FromInt64s([]int64{3, 4}, 2), 3) },
			Bool, []int64{2}, opTF("TF")},
	})
}

func TestOpsInPlace(t *testing.T) {
	a := []float64{1, 2, 3, 4, 5, 6}
	b := []float64{0.5, -1, 2}
	ip := func(op func(*Scope, *Tensor, *Tensor)) func(*Scope) *Tensor {
		return func(s *Scope) *Tensor {
			x := s.FromFloat64s(a, 2, 3)
			op(s, x, s.FromFloat64s(b, 3)) // b broadcasts over the rows
			return x
		}
	}
	ips := func(op func(*Scope, *Tensor, float64), v float64) func(*Scope) *Tensor {
		return func(s *Scope) *Tensor {
			x := s.FromFloat64s(a, 2, 3)
			op(s, x, v)
			return x
		}
	}
	sh := []int64{2, 3}
	opRun(t, []opCase{
		{"AddInPlace", ip((*Scope).AddInPlace), Float64, sh, []float64{1.5, 1, 5, 4.5, 4, 8}},
		{"SubInPlace", ip((*Scope).SubInPlace), Float64, sh, []float64{0.5, 3, 1, 3.5, 6, 4}},
		{"MulInPlace", ip((*Scope).MulInPlace), Float64, sh, []float64{0.5, -2, 6, 2, -5, 12}},
		{"DivInPlace", ip((*Scope).DivInPlace), Float64, sh, []float64{2, -2, 1.5, 8, -5, 3}},
		{"AddScalarInPlace", ips((*Scope).AddScalarInPlace, -1), Float64, sh, []float64{0, 1, 2, 3, 4, 5}},
		{"MulScalarInPlace", ips((*Scope).MulScalarInPlace, 0.5), Float64, sh, []float64{0.5, 1, 1.5, 2, 2.5, 3}},
		{"CopyInPlace/broadcast", ip((*Scope).CopyInPlace), Float64, sh, []float64{0.5, -1, 2, 0.5, -1, 2}},
		{"CopyInPlace/converts dtype", func(s *Scope) *Tensor {
			dst := s.Zeros([]int64{3}, Float32, CPU)
			s.CopyInPlace(dst, s.FromInt64s([]int64{7, -1, 2}, 3))
			return dst
		}, Float32, []int64{3}, []float64{7, -1, 2}},
		{"CopyInPlace/float64 into int64 truncates", func(s *Scope) *Tensor {
			dst := s.Zeros([]int64{3}, Int64, CPU)
			s.CopyInPlace(dst, s.FromFloat64s([]float64{2.9, -2.9, 0.5}, 3))
			return dst
		}, Int64, []int64{3}, []float64{2, -2, 0}},
		{"LerpInPlace", func(s *Scope) *Tensor {
			x := s.FromFloat64s([]float64{0, 10, -4}, 3)
			s.LerpInPlace(x, s.FromFloat64s([]float64{1, 20, 4}, 3), 0.25) // x + 0.25 (y - x)
			return x
		}, Float64, []int64{3}, []float64{0.25, 12.5, -2}},
		{"LerpInPlace/weight 1 copies", func(s *Scope) *Tensor {
			x := s.FromFloat64s([]float64{0, 10}, 2)
			s.LerpInPlace(x, s.FromFloat64s([]float64{3, -3}, 2), 1)
			return x
		}, Float64, []int64{2}, []float64{3, -3}},
		{"AddScalarInPlace/narrow is a view", func(s *Scope) *Tensor {
			x := s.FromFloat64s(a, 2, 3)
			s.AddScalarInPlace(s.Narrow(x, 1, 1, 2), 100)
			return x
		}, Float64, sh, []float64{1, 102, 103, 4, 105, 106}},
	})

	// A parameter (a leaf that requires grad) may be updated in place in a
	// NoGrad scope, as an optimizer does; it stays a parameter.
	t.Run("parameter update under NoGrad", func(t *testing.T) {
		s := opScope(t, NoGrad)
		p := s.FromFloat32s([]float32{1, 2, 3}, 3)
		if err := p.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
		g := s.FromFloat32s([]float32{0.5, 0.5, 1}, 3)
		s.SubInPlace(p, g)                                       // 0.5 1.5 2
		s.MulScalarInPlace(p, 2)                                 // 1 3 4
		s.AddInPlace(p, g)                                       // 1.5 3.5 5
		s.DivInPlace(p, g)                                       // 3 7 5
		s.AddScalarInPlace(p, -1)                                // 2 6 4
		s.MulInPlace(p, g)                                       // 1 3 4
		s.LerpInPlace(p, s.Zeros([]int64{3}, Float32, CPU), 0.5) // 0.5 1.5 2
		opCheck(t, p, Float32, []int64{3}, []float64{0.5, 1.5, 2})
		s.CopyInPlace(p, s.FromFloat32s([]float32{9}, 1))
		opCheck(t, p, Float32, []int64{3}, []float64{9, 9, 9})
		m, _ := p.Meta()
		if !m.RequiresGrad || !m.IsLeaf {
			t.Errorf("after in-place updates: requires grad %v, leaf %v; want true, true", m.RequiresGrad, m.IsLeaf)
		}
	})
	// The same update in a Grad scope is refused by libtorch.
	t.Run("parameter update under Grad fails", func(t *testing.T) {
		s := NewScope(Grad)
		defer s.Close()
		p := s.FromFloat32s([]float32{1, 2, 3}, 3)
		if err := p.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
		s.AddScalarInPlace(p, 1)
		if s.Err() == nil {
			t.Errorf("in-place update of a leaf that requires grad in a Grad scope succeeded")
		}
	})
}

func TestOpsClampWhere(t *testing.T) {
	x := func(s *Scope) *Tensor { return s.FromFloat64s([]float64{-2, -0.5, 0, 0.5, 2}, 5) }
	sh := []int64{5}
	opRun(t, []opCase{
		{"Clamp", func(s *Scope) *Tensor { return s.Clamp(x(s), -1, 1) }, Float64, sh, []float64{-1, -0.5, 0, 0.5, 1}},
		{"ClampMin", func(s *Scope) *Tensor { return s.ClampMin(x(s), 0) }, Float64, sh, []float64{0, 0, 0, 0.5, 2}},
		{"ClampMax", func(s *Scope) *Tensor { return s.ClampMax(x(s), 0.25) }, Float64, sh, []float64{-2, -0.5, 0, 0.25, 0.25}},
		{"Clamp/float32", func(s *Scope) *Tensor {
			return s.Clamp(s.FromFloat32s([]float32{-5, 5, 0.5}, 3), -1.5, 1.5)
		}, Float32, []int64{3}, []float64{-1.5, 1.5, 0.5}},
		{"Clamp/infinities", func(s *Scope) *Tensor {
			return s.Clamp(s.FromFloat64s([]float64{-opInf, opInf}, 2), -1, 1)
		}, Float64, []int64{2}, []float64{-1, 1}},
		{"Where", func(s *Scope) *Tensor {
			return s.Where(s.FromBools([]bool{true, false, true}, 3), s.FromFloat64s([]float64{1, 2, 3}, 3), s.FromFloat64s([]float64{-1, -2, -3}, 3))
		}, Float64, []int64{3}, []float64{1, -2, 3}},
		{"Where/broadcast", func(s *Scope) *Tensor {
			// cond [2,1], a [1,3], b a 0-dim scalar -> [2,3].
			return s.Where(s.FromBools([]bool{true, false}, 2, 1), s.FromFloat64s([]float64{1, 2, 3}, 1, 3), s.FromFloat64s([]float64{-1}))
		}, Float64, []int64{2, 3}, []float64{1, 2, 3, -1, -1, -1}},
		{"Where/replaces non-finite", func(s *Scope) *Tensor {
			v := s.FromFloat64s([]float64{1, opNaN, opInf, -2}, 4)
			return s.Where(s.IsFinite(v), v, s.Zeros([]int64{4}, Float64, CPU))
		}, Float64, []int64{4}, []float64{1, 0, 0, -2}},
	})
}

func TestOpsReduce(t *testing.T) {
	// x = [[1 2 3] [4 5 6]]: sum 21, mean 3.5, squared deviations 17.5.
	x := func(s *Scope) *Tensor { return s.FromFloat64s([]float64{1, 2, 3, 4, 5, 6}, 2, 3) }
	// y = [[3 9 1] [7 2 8]] for max, min and argmax.
	y := func(s *Scope) *Tensor { return s.FromFloat64s([]float64{3, 9, 1, 7, 2, 8}, 2, 3) }
	type red func(*Scope, *Tensor, []int64, bool) *Tensor
	r := func(op red, in func(*Scope) *Tensor, dims []int64, keep bool) func(*Scope) *Tensor {
		return func(s *Scope) *Tensor { return op(s, in(s), dims, keep) }
	}
	sq := math.Sqrt
	opRun(t, []opCase{
		{"Sum/all", r((*Scope).Sum, x, nil, false), Float64, []int64{}, []float64{21}},
		{"Sum/all keepdim", r((*Scope).Sum, x, nil, true), Float64, []int64{1, 1}, []float64{21}},
		{"Sum/0", r((*Scope).Sum, x, []int64{0}, false), Float64, []int64{3}, []float64{5, 7, 9}},
		{"Sum/0 keepdim", r((*Scope).Sum, x, []int64{0}, true), Float64, []int64{1, 3}, []float64{5, 7, 9}},
		{"Sum/1", r((*Scope).Sum, x, []int64{1}, false), Float64, []int64{2}, []float64{6, 15}},
		{"Sum/-1 keepdim", r((*Scope).Sum, x, []int64{-1}, true), Float64, []int64{2, 1}, []float64{6, 15}},
		{"Sum/0,1", r((*Scope).Sum, x, []int64{0, 1}, false), Float64, []int64{}, []float64{21}},
		{"Sum/int64 stays int64", func(s *Scope) *Tensor { return s.Sum(s.FromInt64s([]int64{1, 2, 3}, 3), nil, false) },
			Int64, []int64{}, []float64{6}},
		{"Sum/bool counts", func(s *Scope) *Tensor { return s.Sum(s.FromBools([]bool{true, false, true}, 3), nil, false) },
			Int64, []int64{}, []float64{2}},
		{"Mean/all", r((*Scope).Mean, x, nil, false), Float64, []int64{}, []float64{3.5}},
		{"Mean/all keepdim", r((*Scope).Mean, x, nil, true), Float64, []int64{1, 1}, []float64{3.5}},
		{"Mean/0", r((*Scope).Mean, x, []int64{0}, false), Float64, []int64{3}, []float64{2.5, 3.5, 4.5}},
		{"Mean/1 keepdim", r((*Scope).Mean, x, []int64{1}, true), Float64, []int64{2, 1}, []float64{2, 5}},
		{"Mean/float32", func(s *Scope) *Tensor { return s.Mean(s.FromFloat32s([]float32{1, 2, 4}, 3), nil, false) },
			Float32, []int64{}, []float64{7.0 / 3}},
		{"Var/all", r((*Scope).Var, x, nil, false), Float64, []int64{}, []float64{17.5 / 5}},
		{"Var/all keepdim", r((*Scope).Var, x, nil, true), Float64, []int64{1, 1}, []float64{17.5 / 5}},
		{"Var/0", r((*Scope).Var, x, []int64{0}, false), Float64, []int64{3}, []float64{4.5, 4.5, 4.5}},
		{"Var/1 keepdim", r((*Scope).Var, x, []int64{1}, true), Float64, []int64{2, 1}, []float64{1, 1}},
		{"VarPop/all", r((*Scope).VarPop, x, nil, false), Float64, []int64{}, []float64{17.5 / 6}},
		{"VarPop/all keepdim", r((*Scope).VarPop, x, nil, true), Float64, []int64{1, 1}, []float64{17.5 / 6}},
		{"VarPop/0", r((*Scope).VarPop, x, []int64{0}, false), Float64, []int64{3}, []float64{2.25, 2.25, 2.25}},
		{"VarPop/1 keepdim", r((*Scope).VarPop, x, []int64{1}, true), Float64, []int64{2, 1}, []float64{2.0 / 3, 2.0 / 3}},
		{"Std/all", r((*Scope).Std, x, nil, false), Float64, []int64{}, []float64{sq(3.5)}},
		{"Std/all keepdim", r((*Scope).Std, x, nil, true), Float64, []int64{1, 1}, []float64{sq(3.5)}},
		{"Std/0", r((*Scope).Std, x, []int64{0}, false), Float64, []int64{3}, []float64{sq(4.5), sq(4.5), sq(4.5)}},
		{"Std/1 keepdim", r((*Scope).Std, x, []int64{1}, true), Float64, []int64{2, 1}, []float64{1, 1}},
		{"Max/all", r((*Scope).Max, y, nil, false), Float64, []int64{}, []float64{9}},
		{"Max/all keepdim", r((*Scope).Max, y, nil, true), Float64, []int64{1, 1}, []float64{9}},
		{"Max/0", r((*Scope).Max, y, []int64{0}, false), Float64, []int64{3}, []float64{7, 9, 8}},
		{"Max/1 keepdim", r((*Scope).Max, y, []int64{1}, true), Float64, []int64{2, 1}, []float64{9, 8}},
		{"Min/all", r((*Scope).Min, y, nil, false), Float64, []int64{}, []float64{1}},
		{"Min/all keepdim", r((*Scope).Min, y, nil, true), Float64, []int64{1, 1}, []float64{1}},
		{"Min/0", r((*Scope).Min, y, []int64{0}, false), Float64, []int64{3}, []float64{3, 2, 1}},
		{"Min/1 keepdim", r((*Scope).Min, y, []int64{1}, true), Float64, []int64{2, 1}, []float64{1, 2}},
		{"Norm/all", r((*Scope).Norm, x, nil, false), Float64, []int64{}, []float64{sq(91)}},
		{"Norm/all keepdim", r((*Scope).Norm, x, nil, true), Float64, []int64{1, 1}, []float64{sq(91)}},
		{"Norm/0", r((*Scope).Norm, x, []int64{0}, false), Float64, []int64{3}, []float64{sq(17), sq(29), sq(45)}},
		{"Norm/1 keepdim", r((*Scope).Norm, x, []int64{1}, true), Float64, []int64{2, 1}, []float64{sq(14), sq(77)}},
		{"ArgMax/0", func(s *Scope) *Tensor { return s.ArgMax(y(s), 0, false) }, Int64, []int64{3}, []float64{1, 0, 1}},
		{"ArgMax/1", func(s *Scope) *Tensor { return s.ArgMax(y(s), 1, false) }, Int64, []int64{2}, []float64{1, 2}},
		{"ArgMax/1 keepdim", func(s *Scope) *Tensor { return s.ArgMax(y(s), 1, true) }, Int64, []int64{2, 1}, []float64{1, 2}},
		{"ArgMax/-1", func(s *Scope) *Tensor { return s.ArgMax(y(s), -1, false) }, Int64, []int64{2}, []float64{1, 2}},
		{"Mean/3-d over 0,2", func(s *Scope) *Tensor {
			// [2,2,2] = 0..7; mean over dims 0 and 2 keeps dim 1:
			// dim1=0: {0,1,4,5} -> 2.5; dim1=1: {2,3,6,7} -> 4.5.
			return s.Mean(s.FromFloat64s(opSeq(8), 2, 2, 2), []int64{0, 2}, true)
		}, Float64, []int64{1, 2, 1}, []float64{2.5, 4.5}},
	})
}

func TestOpsShape(t *testing.T) {
	x := func(s *Scope) *Tensor { return s.FromFloat64s([]float64{1, 2, 3, 4, 5, 6}, 2, 3) }
	seq := []float64{1, 2, 3, 4, 5, 6}
	// permute(2,0,1) of arange [2,3,4]: out[k][i][j] = x[i][j][k] = 12i+4j+k.
	perm := make([]float64, 0, 24)
	for k := range 4 {
		for i := range 2 {
			for j := range 3 {
				perm = append(perm, float64(12*i+4*j+k))
			}
		}
	}
	opRun(t, []opCase{
		{"Reshape", func(s *Scope) *Tensor { return s.Reshape(x(s), 3, 2) }, Float64, []int64{3, 2}, seq},
		{"Reshape/-1", func(s *Scope) *Tensor { return s.Reshape(x(s), -1) }, Float64, []int64{6}, seq},
		{"Reshape/1,-1,2", func(s *Scope) *Tensor { return s.Reshape(x(s), 1, -1, 2) }, Float64, []int64{1, 3, 2}, seq},
		{"Reshape/to scalar", func(s *Scope) *Tensor { return s.Reshape(s.FromFloat64s([]float64{5}, 1, 1)) },
			Float64, []int64{}, []float64{5}},
		{"Expand", func(s *Scope) *Tensor { return s.Expand(s.FromFloat64s([]float64{1, 2, 3}, 3, 1), 3, 4) },
			Float64, []int64{3, 4}, []float64{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}},
		{"Expand/-1 and new dim", func(s *Scope) *Tensor { return s.Expand(s.FromFloat64s([]float64{1, 2}, 1, 2), 2, 2, -1) },
			Float64, []int64{2, 2, 2}, []float64{1, 2, 1, 2, 1, 2, 1, 2}},
		{"Permute", func(s *Scope) *Tensor { return s.Permute(s.FromFloat64s(opSeq(24), 2, 3, 4), 2, 0, 1) },
			Float64, []int64{4, 2, 3}, perm},
		{"Transpose", func(s *Scope) *Tensor { return s.Transpose(x(s), 0, 1) }, Float64, []int64{3, 2}, []float64{1, 4, 2, 5, 3, 6}},
		{"Transpose/-1,-2", func(s *Scope) *Tensor { return s.Transpose(x(s), -1, -2) }, Float64, []int64{3, 2}, []float64{1, 4, 2, 5, 3, 6}},
		{"Narrow/1", func(s *Scope) *Tensor { return s.Narrow(x(s), 1, 1, 2) }, Float64, []int64{2, 2}, []float64{2, 3, 5, 6}},
		{"Narrow/0", func(s *Scope) *Tensor { return s.Narrow(x(s), 0, 1, 1) }, Float64, []int64{1, 3}, []float64{4, 5, 6}},
		{"Unsqueeze/0", func(s *Scope) *Tensor { return s.Unsqueeze(x(s), 0) }, Float64, []int64{1, 2, 3}, seq},
		{"Unsqueeze/1", func(s *Scope) *Tensor { return s.Unsqueeze(x(s), 1) }, Float64, []int64{2, 1, 3}, seq},
		{"Unsqueeze/-1", func(s *Scope) *Tensor { return s.Unsqueeze(x(s), -1) }, Float64, []int64{2, 3, 1}, seq},
		{"Squeeze", func(s *Scope) *Tensor { return s.Squeeze(s.FromFloat64s(seq, 2, 1, 3), 1) }, Float64, []int64{2, 3}, seq},
		{"Squeeze/-1", func(s *Scope) *Tensor { return s.Squeeze(s.FromFloat64s(seq, 2, 3, 1), -1) }, Float64, []int64{2, 3}, seq},
		{"Squeeze/size not 1 is kept", func(s *Scope) *Tensor { return s.Squeeze(x(s), 0) }, Float64, []int64{2, 3}, seq},
		{"Contiguous/of transpose", func(s *Scope) *Tensor { return s.Contiguous(s.Transpose(x(s), 0, 1)) },
			Float64, []int64{3, 2}, []float64{1, 4, 2, 5, 3, 6}},
		{"Cat/0", func(s *Scope) *Tensor {
			return s.Cat([]*Tensor{x(s), s.FromFloat64s([]float64{7, 8, 9}, 1, 3)}, 0)
		}, Float64, []int64{3, 3}, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"Cat/1", func(s *Scope) *Tensor {
			return s.Cat([]*Tensor{s.FromFloat64s([]float64{1, 2}, 2, 1), s.FromFloat64s([]float64{3, 4, 5, 6}, 2, 2)}, 1)
		}, Float64, []int64{2, 3}, []float64{1, 3, 4, 2, 5, 6}},
		{"Cat/-1 three", func(s *Scope) *Tensor {
			a := s.FromFloat64s([]float64{1}, 1)
			return s.Cat([]*Tensor{a, s.FromFloat64s([]float64{2, 3}, 2), a}, -1)
		}, Float64, []int64{4}, []float64{1, 2, 3, 1}},
		{"Cat/one", func(s *Scope) *Tensor { return s.Cat([]*Tensor{x(s)}, 0) }, Float64, []int64{2, 3}, seq},
		{"Stack/0", func(s *Scope) *Tensor {
			return s.Stack([]*Tensor{s.FromFloat64s([]float64{1, 2, 3}, 3), s.FromFloat64s([]float64{4, 5, 6}, 3)}, 0)
		}, Float64, []int64{2, 3}, seq},
		{"Stack/1", func(s *Scope) *Tensor {
			return s.Stack([]*Tensor{s.FromFloat64s([]float64{1, 2, 3}, 3), s.FromFloat64s([]float64{4, 5, 6}, 3)}, 1)
		}, Float64, []int64{3, 2}, []float64{1, 4, 2, 5, 3, 6}},
		{"Stack/-1", func(s *Scope) *Tensor {
			return s.Stack([]*Tensor{s.FromFloat64s([]float64{1, 2, 3}, 3), s.FromFloat64s([]float64{4, 5, 6}, 3)}, -1)
		}, Float64, []int64{3, 2}, []float64{1, 4, 2, 5, 3, 6}},
		{"IndexSelect/0", func(s *Scope) *Tensor {
			return s.IndexSelect(s.FromFloat64s(seq, 3, 2), 0, s.FromInt64s([]int64{2, 0, 2}, 3))
		}, Float64, []int64{3, 2}, []float64{5, 6, 1, 2, 5, 6}},
		{"IndexSelect/1", func(s *Scope) *Tensor {
			return s.IndexSelect(s.FromFloat64s(seq, 3, 2), 1, s.FromInt64s([]int64{1}, 1))
		}, Float64, []int64{3, 1}, []float64{2, 4, 6}},
		{"Gather/1", func(s *Scope) *Tensor {
			return s.Gather(s.FromFloat64s([]float64{1, 2, 3, 4}, 2, 2), 1, s.FromInt64s([]int64{0, 0, 1, 0}, 2, 2))
		}, Float64, []int64{2, 2}, []float64{1, 1, 4, 3}},
		{"Gather/0", func(s *Scope) *Tensor {
			return s.Gather(s.FromFloat64s([]float64{1, 2, 3, 4}, 2, 2), 0, s.FromInt64s([]int64{1, 0, 0, 0}, 2, 2))
		}, Float64, []int64{2, 2}, []float64{3, 2, 1, 2}},
		{"Gather/picks one per row", func(s *Scope) *Tensor {
			return s.Gather(s.FromFloat64s(seq, 2, 3), 1, s.FromInt64s([]int64{2, 0}, 2, 1))
		}, Float64, []int64{2, 1}, []float64{3, 4}},
	})

	t.Run("Transpose/not contiguous", func(t *testing.T) {
		s := opScope(t, NoGrad)
		tr := s.Transpose(x(s), 0, 1)
		if m, _ := tr.Meta(); m.Contiguous {
			t.Errorf("transpose reports contiguous")
		}
		if m, _ := s.Contiguous(tr).Meta(); !m.Contiguous {
			t.Errorf("Contiguous result is not contiguous")
		}
	})

	t.Run("ChannelsLast", func(t *testing.T) {
		s := opScope(t, NoGrad)
		nchw := s.FromFloat32s(opF32(opSeq(24)), 2, 3, 2, 2)
		cl := s.ChannelsLast(nchw)
		// Same shape and logical values; a different memory layout.
		opCheck(t, cl, Float32, []int64{2, 3, 2, 2}, opSeq(24))
		if m, _ := cl.Meta(); m.Contiguous {
			t.Errorf("channels-last [2,3,2,2] reports row-major contiguous")
		}
		back := s.Contiguous(cl)
		opCheck(t, back, Float32, []int64{2, 3, 2, 2}, opSeq(24))
		if m, _ := back.Meta(); !m.Contiguous {
			t.Errorf("Contiguous of channels-last is not contiguous")
		}
		// Ops see the same tensor whatever its layout.
		w := s.FromFloat32s(opF32([]float64{1, 0, -1, 2, 0.5, 0, 0, 0, 1, 1, 1, 1}), 1, 3, 2, 2)
		a, _ := s.Conv2d(nchw, w, nil, Conv2dOptions{}).Float32s()
		b, _ := s.Conv2d(cl, w, nil, Conv2dOptions{}).Float32s()
		if len(a) != 2 || !slices.Equal(a, b) {
			t.Errorf("conv2d of NCHW %v, of channels-last %v", a, b)
		}
	})

	t.Run("Split", func(t *testing.T) {
		s := opScope(t, NoGrad)
		parts := s.Split(s.FromFloat64s(opSeq(5), 5), []int64{2, 3}, 0)
		if len(parts) != 2 {
			t.Fatalf("%d parts, want 2", len(parts))
		}
		opCheck(t, parts[0], Float64, []int64{2}, []float64{0, 1})
		opCheck(t, parts[1], Float64, []int64{3}, []float64{2, 3, 4})
		cols := s.Split(x(s), []int64{1, 2}, 1)
		if len(cols) != 2 {
			t.Fatalf("%d parts, want 2", len(cols))
		}
		opCheck(t, cols[0], Float64, []int64{2, 1}, []float64{1, 4})
		opCheck(t, cols[1], Float64, []int64{2, 2}, []float64{2, 3, 5, 6})
	})

	t.Run("Chunk", func(t *testing.T) {
		for _, c := range []struct {
			size  int
			n     int
			sizes []int64
		}{
			{5, 3, []int64{2, 2, 1}},
			{4, 3, []int64{2, 2}},
			{6, 3, []int64{2, 2, 2}},
			{2, 3, []int64{1, 1}},
			{1, 4, []int64{1}},
			{7, 1, []int64{7}},
			{7, 2, []int64{4, 3}},
		} {
			s := opScope(t, NoGrad)
			parts := s.Chunk(s.FromFloat64s(opSeq(c.size), 1, int64(c.size)), c.n, 1)
			var got []int64
			var vals []float64
			for _, p := range parts {
				sh := p.Shape()
				if len(sh) != 2 || sh[0] != 1 {
					t.Errorf("chunk of [1,%d] has shape %v", c.size, sh)
					continue
				}
				got = append(got, sh[1])
				vals = append(vals, opValues(t, p)...)
			}
			if !slices.Equal(got, c.sizes) {
				t.Errorf("size %d into %d: pieces %v, want %v", c.size, c.n, got, c.sizes)
			}
			if !slices.Equal(vals, opSeq(c.size)) {
				t.Errorf("size %d into %d: values %v", c.size, c.n, vals)
			}
		}
		s := opScope(t, NoGrad)
		parts := s.Chunk(s.FromFloat64s(opSeq(10), 2, 5), 2, -1)
		if len(parts) != 2 {
			t.Fatalf("%d parts, want 2", len(parts))
		}
		opCheck(t, parts[0], Float64, []int64{2, 3}, []float64{0, 1, 2, 5, 6, 7})
		opCheck(t, parts[1], Float64, []int64{2, 2}, []float64{3, 4, 8, 9})
	})
}

func opF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func TestOpsLinear(t *testing.T) {
	a := []float64{1, 2, 3, 4, 5, 6}    // [2,3]
	b := []float64{7, 8, 9, 10, 11, 12} // [3,2]
	w := []float64{1, 0, -1, 0.5, 0.5, 0.5}
	opRun(t, []opCase{
		{"Matmul", func(s *Scope) *Tensor { return s.Matmul(s.FromFloat64s(a, 2, 3), s.FromFloat64s(b, 3, 2)) },
			Float64, []int64{2, 2}, []float64{58, 64, 139, 154}},
		{"Matmul/vector", func(s *Scope) *Tensor {
			return s.Matmul(s.FromFloat64s([]float64{1, 2, 3}, 3), s.FromFloat64s(b, 3, 2))
		}, Float64, []int64{2}, []float64{58, 64}},
		{"Matmul/batched broadcast", func(s *Scope) *Tensor {
			aa := append(slices.Clone(a), opMap(a, func(v float64) float64 { return -v })...)
			return s.Matmul(s.FromFloat64s(aa, 2, 2, 3), s.FromFloat64s(b, 3, 2))
		}, Float64, []int64{2, 2, 2}, []float64{58, 64, 139, 154, -58, -64, -139, -154}},
		{"Matmul/float32", func(s *Scope) *Tensor {
			return s.Matmul(s.FromFloat32s(opF32(a), 2, 3), s.FromFloat32s(opF32(b), 3, 2))
		}, Float32, []int64{2, 2}, []float64{58, 64, 139, 154}},
		{"BMM", func(s *Scope) *Tensor {
			return s.BMM(s.FromFloat64s([]float64{1, 2, 3, 4}, 2, 1, 2), s.FromFloat64s([]float64{5, 6, 7, 8}, 2, 2, 1))
		}, Float64, []int64{2, 1, 1}, []float64{17, 53}},
		{"BMM/2x2", func(s *Scope) *Tensor {
			// [[1 2][3 4]] x I and [[0 1][1 0]] x [[1 2][3 4]].
			return s.BMM(s.FromFloat64s([]float64{1, 2, 3, 4, 0, 1, 1, 0}, 2, 2, 2), s.FromFloat64s([]float64{1, 0, 0, 1, 1, 2, 3, 4}, 2, 2, 2))
		}, Float64, []int64{2, 2, 2}, []float64{1, 2, 3, 4, 3, 4, 1, 2}},
		// x W^T + b with W = [[1 0 -1] [.5 .5 .5]]: rows give [-2 3] and [-2 7.5].
		{"Linear/bias", func(s *Scope) *Tensor {
			return s.Linear(s.FromFloat64s(a, 2, 3), s.FromFloat64s(w, 2, 3), s.FromFloat64s([]float64{10, 20}, 2))
		}, Float64, []int64{2, 2}, []float64{8, 23, 8, 27.5}},
		{"Linear/no bias", func(s *Scope) *Tensor { return s.Linear(s.FromFloat64s(a, 2, 3), s.FromFloat64s(w, 2, 3), nil) },
			Float64, []int64{2, 2}, []float64{-2, 3, -2, 7.5}},
		{"Linear/1-d input", func(s *Scope) *Tensor {
			return s.Linear(s.FromFloat64s([]float64{1, 2, 3}, 3), s.FromFloat64s(w, 2, 3), s.FromFloat64s([]float64{10, 20}, 2))
		}, Float64, []int64{2}, []float64{8, 23}},
		{"Linear/3-d input", func(s *Scope) *Tensor { return s.Linear(s.FromFloat64s(a, 2, 1, 3), s.FromFloat64s(w, 2, 3), nil) },
			Float64, []int64{2, 1, 2}, []float64{-2, 3, -2, 7.5}},
		{"Linear/float32", func(s *Scope) *Tensor {
			return s.Linear(s.FromFloat32s(opF32(a), 2, 3), s.FromFloat32s(opF32(w), 2, 3), s.FromFloat32s([]float32{10, 20}, 2))
		}, Float32, []int64{2, 2}, []float64{8, 23, 8, 27.5}},
	})
}

func TestOpsConv2d(t *testing.T) {
	x33 := opSeq(10)[1:]       // 1..9 as a 3x3 image
	x44 := opSeq(17)[1:]       // 1..16 as a 4x4 image
	k := []float64{1, 2, 3, 4} // 2x2 kernel [[1 2] [3 4]]
	conv := func(x []float64, hw int64, bias *float64, o Conv2dOptions) func(*Scope) *Tensor {
		return func(s *Scope) *Tensor {
			var b *Tensor
			if bias != nil {
				b = s.FromFloat64s([]float64{*bias}, 1)
			}
			return s.Conv2d(s.FromFloat64s(x, 1, 1, hw, hw), s.FromFloat64s(k, 1, 1, 2, 2), b, o)
		}
	}
	half := 0.5
	// Every 2x2 window [[v v+1] [v+3 v+4]] of the 3x3 image gives
	// v + 2(v+1) + 3(v+3) + 4(v+4) = 10v + 27: 37 47 67 77.
	// In the 4x4 image the window is [[v v+1] [v+4 v+5]]: 10v + 34.
	opRun(t, []opCase{
		{"3x3 by 2x2", conv(x33, 3, nil, Conv2dOptions{}), Float64, []int64{1, 1, 2, 2}, []float64{37, 47, 67, 77}},
		{"bias", conv(x33, 3, &half, Conv2dOptions{}), Float64, []int64{1, 1, 2, 2}, []float64{37.5, 47.5, 67.5, 77.5}},
		{"stride 2", conv(x44, 4, nil, Conv2dOptions{Stride: [2]int64{2, 2}}), Float64, []int64{1, 1, 2, 2},
			[]float64{44, 64, 124, 144}},
		{"stride 2 on 3x3", conv(x33, 3, nil, Conv2dOptions{Stride: [2]int64{2, 2}}), Float64, []int64{1, 1, 1, 1},
			[]float64{37}},
		{"stride 1,2", conv(x33, 3, nil, Conv2dOptions{Stride: [2]int64{1, 2}}), Float64, []int64{1, 1, 2, 1},
			[]float64{37, 67}},
		// Zero padding of 1: out[i][j] = x[i-1][j-1] + 2x[i-1][j] + 3x[i][j-1] + 4x[i][j].
		{"padding 1", conv(x33, 3, nil, Conv2dOptions{Padding: [2]int64{1, 1}}), Float64, []int64{1, 1, 4, 4},
			[]float64{
				4, 11, 18, 9,
				18, 37, 47, 21,
				36, 67, 77, 33,
				14, 23, 26, 9,
			}},
		// Dilation 2 spreads the kernel over [[v . v+2] [. . .] [v+8 . v+10]]
		// of the 4x4 image: v + 2(v+2) + 3(v+8) + 4(v+10) = 10v + 68.
		{"dilation 2", conv(x44, 4, nil, Conv2dOptions{Dilation: [2]int64{2, 2}}), Float64, []int64{1, 1, 2, 2},
			[]float64{78, 88, 118, 128}},
		{"dilation 2 on 3x3", conv(x33, 3, nil, Conv2dOptions{Dilation: [2]int64{2, 2}}), Float64, []int64{1, 1, 1, 1},
			[]float64{1 + 2*3 + 3*7 + 4*9}},
		// Two channels in two groups: each output channel sees only its own
		// input channel. ch0 [[1 2] [3 4]] with all-ones -> 10; ch1 [[5 6] [7 8]]
		// with [[1 0] [0 -1]] -> 5 - 8 = -3; bias [0.5 -1].
		{"groups 2", func(s *Scope) *Tensor {
			x := s.FromFloat64s([]float64{1, 2, 3, 4, 5, 6, 7, 8}, 1, 2, 2, 2)
			w := s.FromFloat64s([]float64{1, 1, 1, 1, 1, 0, 0, -1}, 2, 1, 2, 2)
			return s.Conv2d(x, w, s.FromFloat64s([]float64{0.5, -1}, 2), Conv2dOptions{Groups: 2})
		}, Float64, []int64{1, 2, 1, 1}, []float64{10.5, -4}},
		// The same weights as one group over both channels sum the channels:
		// out0 = 10 + (ones on ch1: 26), out1 = (1-4) + (5-8).
		{"groups 1 two channels", func(s *Scope) *Tensor {
			x := s.FromFloat64s([]float64{1, 2, 3, 4, 5, 6, 7, 8}, 1, 2, 2, 2)
			w := s.FromFloat64s([]float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, -1, 1, 0, 0, -1}, 2, 2, 2, 2)
			return s.Conv2d(x, w, nil, Conv2dOptions{})
		}, Float64, []int64{1, 2, 1, 1}, []float64{36, -6}},
		// A batch of two: the second image is the first doubled.
		{"batch", func(s *Scope) *Tensor {
			xx := append(slices.Clone(x33), opMap(x33, func(v float64) float64 { return 2 * v })...)
			return s.Conv2d(s.FromFloat64s(xx, 2, 1, 3, 3), s.FromFloat64s(k, 1, 1, 2, 2), nil, Conv2dOptions{})
		}, Float64, []int64{2, 1, 2, 2}, []float64{37, 47, 67, 77, 74, 94, 134, 154}},
		{"float32", func(s *Scope) *Tensor {
			return s.Conv2d(s.FromFloat32s(opF32(x33), 1, 1, 3, 3), s.FromFloat32s(opF32(k), 1, 1, 2, 2), nil, Conv2dOptions{})
		}, Float32, []int64{1, 1, 2, 2}, []float64{37, 47, 67, 77}},
	})
}

// On one thread, a 1x1 convolution of a channels-last batch of 6 to 15
// without autograd runs in oneDNN and returns channels-last (the shim's
// choice); under autograd, and below batch 6, libtorch's own kernel runs it
// through NCHW copies, and under autocast libtorch's at its dtype. Both
// give the same values.
func TestConv2d1x1OneDNN(t *testing.T) {
	before := NumThreads()
	defer SetNumThreads(before)
	if err := SetNumThreads(1); err != nil {
		t.Fatal(err)
	}
	in := opScope(t, NoGrad)
	w := in.Randn([]int64{24, 16, 1, 1}, Float32, CPU, nil)
	bias := in.Randn([]int64{24}, Float32, CPU, nil)
	for _, c := range []struct {
		batch  int64
		mode   Mode
		onednn bool
	}{{8, Inference, true}, {15, NoGrad, true}, {8, Grad, false}, {5, Inference, false}} {
		x := in.ChannelsLast(in.Randn([]int64{c.batch, 16, 8, 8}, Float32, CPU, nil))
		if c.onednn {
			// Under bf16 autocast the convolution is libtorch's, in bf16.
			a, err := NewAutocastScope(c.mode, BFloat16)
			if err != nil {
				t.Fatal(err)
			}
			if dt := a.Conv2d(x, w, bias, Conv2dOptions{}).DType(); dt != BFloat16 {
				t.Errorf("batch %d, mode %v, bf16 autocast: the convolution gives %v, want bf16", c.batch, c.mode, dt)
			}
			a.Close()
		}
		s := NewScope(c.mode)
		var y *Tensor
		ops := profileOf(t, func() { y = s.ChannelsLast(s.Conv2d(x, w, bias, Conv2dOptions{})) })
		got := opValues(t, y)
		s.Close()
		ref := NewScope(Grad) // libtorch's choice
		want := opValues(t, ref.Conv2d(x, w, bias, Conv2dOptions{}))
		ref.Close()
		what := fmt.Sprintf("batch %d, mode %v", c.batch, c.mode)
		onednn, native := ops["aten::mkldnn_convolution"].Calls, ops["aten::_slow_conv2d_forward"].Calls
		if c.onednn && (onednn != 1 || native != 0 || ops["aten::copy_"].Calls != 0) {
			t.Errorf("%s: oneDNN %d calls, libtorch's kernel %d, copies %d: want oneDNN once and no copy", what, onednn, native, ops["aten::copy_"].Calls)
		}
		if !c.onednn && (onednn != 0 || native != 1) {
			t.Errorf("%s: oneDNN %d calls, libtorch's kernel %d: want libtorch's once", what, onednn, native)
		}
		for i := range want {
			if !opClose(got[i], want[i], 1e-5) {
				t.Fatalf("%s: value %d is %g, libtorch's convolution gives %g", what, i, got[i], want[i])
			}
		}
	}
}

func TestOpsGroupNorm(t *testing.T) {
	// x is [2,4,1,2]: sample 0 has channels [1 2] [3 4] [10 20] [30 40];
	// sample 1 is 2*x + 1. Two groups of two channels.
	x0 := []float64{1, 2, 3, 4, 10, 20, 30, 40}
	x := append(slices.Clone(x0), opMap(x0, func(v float64) float64 { return 2*v + 1 })...)
	const eps = 1e-5
	// Group means and population variances, per sample and group:
	// sample 0: {1,2,3,4} mean 2.5 var 1.25; {10,20,30,40} mean 25 var 125.
	// sample 1: {3,5,7,9} mean 6 var 5;      {21,41,61,81} mean 51 var 500.
	mean := []float64{2.5, 25, 6, 51}
	vr := []float64{1.25, 125, 5, 500}
	norm := make([]float64, len(x))
	for i, v := range x {
		g := i / 4 // 4 elements per group (2 channels x 2 pixels)
		norm[i] = (v - mean[g]) / math.Sqrt(vr[g]+eps)
	}
	w := []float64{1, 2, -1, 0.5}
	b := []float64{0, 1, 0.5, -2}
	affine := make([]float64, len(x))
	for i := range x {
		c := (i / 2) % 4
		affine[i] = norm[i]*w[c] + b[c]
	}
	// One group normalises over all channels: sample 0 mean 13.75.
	var m1, v1 float64
	for _, v := range x0 {
		m1 += v / 8
	}
	for _, v := range x0 {
		v1 += (v - m1) * (v - m1) / 8
	}
	sh := []int64{2, 4, 1, 2}
	opRun(t, []opCase{
		{"no affine", func(s *Scope) *Tensor { return s.GroupNorm(s.FromFloat64s(x, sh...), 2, nil, nil, eps) },
			Float64, sh, norm},
		{"affine", func(s *Scope) *Tensor {
			return s.GroupNorm(s.FromFloat64s(x, sh...), 2, s.FromFloat64s(w, 4), s.FromFloat64s(b, 4), eps)
		}, Float64, sh, affine},
		{"one group", func(s *Scope) *Tensor { return s.GroupNorm(s.FromFloat64s(x0, 1, 4, 1, 2), 1, nil, nil, eps) },
			Float64, []int64{1, 4, 1, 2}, opMap(x0, func(v float64) float64 { return (v - m1) / math.Sqrt(v1+eps) })},
		{"large eps", func(s *Scope) *Tensor {
			// {1,2,3,4}: mean 2.5, var 1.25; eps 2.75 makes the divisor 2.
			return s.GroupNorm(s.FromFloat64s([]float64{1, 2, 3, 4}, 1, 2, 2), 1, nil, nil, 2.75)
		}, Float64, []int64{1, 2, 2}, []float64{-0.75, -0.25, 0.25, 0.75}},
		{"float32 affine", func(s *Scope) *Tensor {
			return s.GroupNorm(s.FromFloat32s(opF32(x), sh...), 2, s.FromFloat32s(opF32(w), 4), s.FromFloat32s(opF32(b), 4), eps)
		}, Float32, sh, affine},
	})
}

func TestOpsSoftmax(t *testing.T) {
	e := math.Exp
	z := e(1) + e(2) + e(3)
	opRun(t, []opCase{
		{"Softmax/1-d", func(s *Scope) *Tensor { return s.Softmax(s.FromFloat64s([]float64{1, 2, 3}, 3), 0) },
			Float64, []int64{3}, []float64{e(1) / z, e(2) / z, e(3) / z}},
		{"Softmax/rows", func(s *Scope) *Tensor { return s.Softmax(s.FromFloat64s([]float64{1, 2, 3, 0, 0, 0}, 2, 3), 1) },
			Float64, []int64{2, 3}, []float64{e(1) / z, e(2) / z, e(3) / z, 1.0 / 3, 1.0 / 3, 1.0 / 3}},
		{"Softmax/-1", func(s *Scope) *Tensor { return s.Softmax(s.FromFloat64s([]float64{0, math.Log(3)}, 1, 2), -1) },
			Float64, []int64{1, 2}, []float64{0.25, 0.75}},
		{"Softmax/columns", func(s *Scope) *Tensor { return s.Softmax(s.FromFloat64s([]float64{0, 1, math.Log(3), 1}, 2, 2), 0) },
			Float64, []int64{2, 2}, []float64{0.25, 0.5, 0.75, 0.5}},
		{"Softmax/large logits", func(s *Scope) *Tensor { return s.Softmax(s.FromFloat64s([]float64{1000, 1000, -1000}, 3), 0) },
			Float64, []int64{3}, []float64{0.5, 0.5, 0}},
		{"Softmax/float32", func(s *Scope) *Tensor { return s.Softmax(s.FromFloat32s([]float32{1, 2, 3}, 3), 0) },
			Float32, []int64{3}, []float64{e(1) / z, e(2) / z, e(3) / z}},
		{"LogSoftmax", func(s *Scope) *Tensor { return s.LogSoftmax(s.FromFloat64s([]float64{1, 2, 3}, 3), 0) },
			Float64, []int64{3}, []float64{1 - math.Log(z), 2 - math.Log(z), 3 - math.Log(z)}},
		{"LogSoftmax/large logits", func(s *Scope) *Tensor { return s.LogSoftmax(s.FromFloat64s([]float64{1000, 0}, 1, 2), 1) },
			Float64, []int64{1, 2}, []float64{0, -1000}},
		{"LogSoftmax/rows", func(s *Scope) *Tensor { return s.LogSoftmax(s.FromFloat64s([]float64{0, 0, 5, 5}, 2, 2), -1) },
			Float64, []int64{2, 2}, []float64{-math.Ln2, -math.Ln2, -math.Ln2, -math.Ln2}},
	})
}

func TestOpsAttention(t *testing.T) {
	// q = k = I (2x2), v = [[1 2] [3 4]]. Scores are a*I with a the scale;
	// row 0 weighs v's rows by p = sigmoid(a) and 1-p, row 1 by 1-p and p:
	// out = [[3-2p 4-2p] [1+2p 2+2p]].
	sig := func(a float64) float64 { return 1 / (1 + math.Exp(-a)) }
	want := func(a float64) []float64 {
		p := sig(a)
		return []float64{3 - 2*p, 4 - 2*p, 1 + 2*p, 2 + 2*p}
	}
	eye := []float64{1, 0, 0, 1}
	v := []float64{1, 2, 3, 4}
	att := func(dt DType, scale float64) func(*Scope) *Tensor {
		return func(s *Scope) *Tensor {
			q := s.ToDType(s.FromFloat64s(eye, 1, 2, 2), dt)
			return s.Attention(q, q, s.ToDType(s.FromFloat64s(v, 1, 2, 2), dt), scale)
		}
	}
	// One query [1 1] against keys [1 0], [0 1], [1 1] with values 1, 2, 4:
	// scores c, c, 2c with c the scale, so out = (3 + 4e^c) / (2 + e^c).
	rect := func(c float64) float64 { return (3 + 4*math.Exp(c)) / (2 + math.Exp(c)) }
	opRun(t, []opCase{
		{"default scale", att(Float64, 0), Float64, []int64{1, 2, 2}, want(1 / math.Sqrt2)},
		{"negative scale means default", att(Float64, -1), Float64, []int64{1, 2, 2}, want(1 / math.Sqrt2)},
		{"scale 2", att(Float64, 2), Float64, []int64{1, 2, 2}, want(2)},
		{"scale 1", att(Float64, 1), Float64, []int64{1, 2, 2}, want(1)},
		{"float32", att(Float32, 0), Float32, []int64{1, 2, 2}, want(1 / math.Sqrt2)},
		{"Lq != Lk", func(s *Scope) *Tensor {
			q := s.FromFloat64s([]float64{1, 1}, 1, 1, 2)
			k := s.FromFloat64s([]float64{1, 0, 0, 1, 1, 1}, 1, 3, 2)
			vv := s.FromFloat64s([]float64{1, 2, 4}, 1, 3, 1)
			return s.Attention(q, k, vv, 0)
		}, Float64, []int64{1, 1, 1}, []float64{rect(1 / math.Sqrt2)}},
		{"Lq != Lk scale 0.5", func(s *Scope) *Tensor {
			q := s.FromFloat64s([]float64{1, 1}, 1, 1, 2)
			k := s.FromFloat64s([]float64{1, 0, 0, 1, 1, 1}, 1, 3, 2)
			vv := s.FromFloat64s([]float64{1, 2, 4}, 1, 3, 1)
			return s.Attention(q, k, vv, 0.5)
		}, Float64, []int64{1, 1, 1}, []float64{rect(0.5)}},
		{"4-d heads", func(s *Scope) *Tensor {
			// Two heads: the second has v negated.
			q := s.FromFloat64s(append(slices.Clone(eye), eye...), 1, 2, 2, 2)
			vv := s.FromFloat64s(append(slices.Clone(v), opMap(v, func(x float64) float64 { return -x })...), 1, 2, 2, 2)
			return s.Attention(q, q, vv, 1)
		}, Float64, []int64{1, 2, 2, 2}, append(want(1), opMap(want(1), func(x float64) float64 { return -x })...)},
	})
}

func TestOpsResample(t *testing.T) {
	opRun(t, []opCase{
		{"UpsampleNearest2d/2x", func(s *Scope) *Tensor {
			return s.UpsampleNearest2d(s.FromFloat64s([]float64{1, 2, 3, 4}, 1, 1, 2, 2), 4, 4)
		}, Float64, []int64{1, 1, 4, 4}, []float64{
			1, 1, 2, 2,
			1, 1, 2, 2,
			3, 3, 4, 4,
			3, 3, 4, 4,
		}},
		{"UpsampleNearest2d/width 3x", func(s *Scope) *Tensor {
			return s.UpsampleNearest2d(s.FromFloat32s([]float32{1, 2, 3, 4}, 1, 1, 2, 2), 2, 6)
		}, Float32, []int64{1, 1, 2, 6}, []float64{1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4}},
		{"UpsampleNearest2d/channels", func(s *Scope) *Tensor {
			return s.UpsampleNearest2d(s.FromFloat64s([]float64{1, -1}, 1, 2, 1, 1), 2, 2)
		}, Float64, []int64{1, 2, 2, 2}, []float64{1, 1, 1, 1, -1, -1, -1, -1}},
		{"AvgPool2d/2 stride 2", func(s *Scope) *Tensor {
			return s.AvgPool2d(s.FromFloat64s(opSeq(17)[1:], 1, 1, 4, 4), 2, 2)
		}, Float64, []int64{1, 1, 2, 2}, []float64{3.5, 5.5, 11.5, 13.5}},
		{"AvgPool2d/2 stride 1", func(s *Scope) *Tensor {
			return s.AvgPool2d(s.FromFloat64s(opSeq(10)[1:], 1, 1, 3, 3), 2, 1)
		}, Float64, []int64{1, 1, 2, 2}, []float64{3, 4, 6, 7}},
		{"AvgPool2d/odd size floors", func(s *Scope) *Tensor {
			return s.AvgPool2d(s.FromFloat64s(opSeq(10)[1:], 1, 1, 3, 3), 2, 2)
		}, Float64, []int64{1, 1, 1, 1}, []float64{3}},
		{"AvgPool2d/float32", func(s *Scope) *Tensor {
			return s.AvgPool2d(s.FromFloat32s([]float32{1, 2, 3, 5}, 1, 1, 2, 2), 2, 2)
		}, Float32, []int64{1, 1, 1, 1}, []float64{2.75}},
	})
}

func TestOpsLosses(t *testing.T) {
	// MSE of [1 2 3 4] against [1 0 5 1]: squared errors 0 4 4 9.
	mse := func(r Reduction) func(*Scope) *Tensor {
		return func(s *Scope) *Tensor {
			return s.MSELoss(s.FromFloat64s([]float64{1, 2, 3, 4}, 2, 2), s.FromFloat64s([]float64{1, 0, 5, 1}, 2, 2), r)
		}
	}
	// Cross entropy of logits [1 2 3] with label 2 and [1 1 1] with label 0.
	l0 := math.Log(math.Exp(1)+math.Exp(2)+math.Exp(3)) - 3
	l1 := math.Log(3)
	ce := func(r Reduction) func(*Scope) *Tensor {
		return func(s *Scope) *Tensor {
			return s.CrossEntropy(s.FromFloat64s([]float64{1, 2, 3, 1, 1, 1}, 2, 3), s.FromInt64s([]int64{2, 0}, 2), r)
		}
	}
	opRun(t, []opCase{
		{"MSELoss/mean", mse(ReduceMean), Float64, []int64{}, []float64{17.0 / 4}},
		{"MSELoss/sum", mse(ReduceSum), Float64, []int64{}, []float64{17}},
		{"MSELoss/none", mse(ReduceNone), Float64, []int64{2, 2}, []float64{0, 4, 4, 9}},
		{"MSELoss/float32", func(s *Scope) *Tensor {
			return s.MSELoss(s.FromFloat32s([]float32{0.5, -1}, 2), s.FromFloat32s([]float32{0, 1}, 2), ReduceMean)
		}, Float32, []int64{}, []float64{(0.25 + 4) / 2}},
		{"CrossEntropy/mean", ce(ReduceMean), Float64, []int64{}, []float64{(l0 + l1) / 2}},
		{"CrossEntropy/sum", ce(ReduceSum), Float64, []int64{}, []float64{l0 + l1}},
		{"CrossEntropy/none", ce(ReduceNone), Float64, []int64{2}, []float64{l0, l1}},
		{"CrossEntropy/confident", func(s *Scope) *Tensor {
			// Logits [0 ln 3] with label 1: p = 3/4.
			return s.CrossEntropy(s.FromFloat64s([]float64{0, math.Log(3)}, 1, 2), s.FromInt64s([]int64{1}, 1), ReduceMean)
		}, Float64, []int64{}, []float64{-math.Log(0.75)}},
	})
}

func TestOpsDropout(t *testing.T) {
	t.Run("eval copies", func(t *testing.T) {
		s := opScope(t, NoGrad)
		x := s.FromFloat64s([]float64{1, -2, 3}, 3)
		y := s.Dropout(x, 0.5, false, nil)
		opCheck(t, y, Float64, []int64{3}, []float64{1, -2, 3})
		s.AddScalarInPlace(y, 10)
		opCheck(t, x, Float64, []int64{3}, []float64{1, -2, 3}) // a copy, not a view
	})
	t.Run("p=0 copies", func(t *testing.T) {
		s := opScope(t, NoGrad)
		g := opGen(t, 1)
		x := s.FromFloat64s([]float64{1, -2, 3}, 3)
		y := s.Dropout(x, 0, true, g)
		opCheck(t, y, Float64, []int64{3}, []float64{1, -2, 3})
		s.AddScalarInPlace(y, 10)
		opCheck(t, x, Float64, []int64{3}, []float64{1, -2, 3})
	})
	t.Run("p=1 zeroes", func(t *testing.T) {
		s := opScope(t, NoGrad)
		opCheck(t, s.Dropout(s.FromFloat64s([]float64{1, -2, 3}, 3), 1, true, nil), Float64, []int64{3}, []float64{0, 0, 0})
	})
	t.Run("mask", func(t *testing.T) {
		const n, p = 100000, 0.3
		s := opScope(t, NoGrad)
		in := make([]float32, n)
		for i := range in {
			in[i] = float32(1 + i%7) // never zero, so a zero means dropped
		}
		x := s.FromFloat32s(in, n)
		draw := func(seed uint64) []float32 {
			g, err := NewGenerator(seed, CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			v, err := s.Dropout(x, p, true, g).Float32s()
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		y := draw(11)
		zeros := 0
		for i, v := range y {
			if v == 0 {
				zeros++
				continue
			}
			if want := float64(in[i]) / (1 - p); !opClose(float64(v), want, opTol32) {
				t.Fatalf("element %d = %v, want 0 or %v", i, v, want)
			}
		}
		if frac := float64(zeros) / n; math.Abs(frac-p) > 0.01 {
			t.Errorf("fraction of zeros %v, want %v ± 0.01", frac, p)
		}
		if !slices.Equal(draw(11), y) {
			t.Errorf("the same seed gave a different dropout mask")
		}
		if slices.Equal(draw(12), y) {
			t.Errorf("different seeds gave the same dropout mask")
		}
	})
	// The mask is the one libtorch's ops make from the same generator (a
	// float32 uniform draw per element, in memory order, kept below 1 - p,
	// scaled by 1 / (1 - p), converted to x's dtype), to the bit, and the
	// generator is left where they leave it: for float32 and bfloat16, NCHW
	// and channels-last maps (the shim's bulk draw) and a strided one
	// (libtorch's ops), two draws in a row from one generator, sizes that
	// cut the engine's 624-number blocks anywhere.
	t.Run("same mask as libtorch's uniform draw", func(t *testing.T) {
		const p = 0.1
		s := opScope(t, NoGrad)
		if _, mkl := profileOf(t, func() { s.Dropout(s.Ones([]int64{4}, Float32, CPU), p, true, nil) })["aten::bernoulli_"]; mkl {
			t.Skip("this libtorch draws dropout masks with MKL's bernoulli_")
		}
		for _, dt := range []DType{Float32, BFloat16} {
			for _, layout := range []string{"nchw", "channels-last", "strided"} {
				g, ref := opGen(t, 7), opGen(t, 7)
				for _, shape := range [][]int64{{2, 3, 37, 41}, {1, 5, 7, 3}} {
					x := s.ToDType(s.Randn(shape, Float32, CPU, nil), dt)
					order := shape // the memory order of x's elements
					switch layout {
					case "channels-last":
						x = s.ChannelsLast(x)
						order = []int64{shape[0], shape[2], shape[3], shape[1]}
					case "strided":
						x = s.Narrow(s.ToDType(s.Randn([]int64{shape[0], shape[1], shape[2], shape[3] + 2}, Float32, CPU, nil), dt), 3, 1, shape[3])
					}
					var y *Tensor
					_, bulk := profileOf(t, func() { y = s.Dropout(x, p, true, g) })["ddpm::dropout_mask"]
					if bulk != (layout != "strided") {
						t.Errorf("%v %s %v: the shim's bulk draw ran %v", dt, layout, shape, bulk)
					}
					u := s.Rand(order, Float32, CPU, ref)
					if layout == "channels-last" {
						u = s.Permute(u, 0, 3, 1, 2)
					}
					mask := s.ToDType(s.MulScalar(s.ToDType(s.LtScalar(u, 1-p), Float32), 1/(1-p)), dt)
					want := s.Mul(x, mask)
					if err := s.Err(); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(contiguousBytes(t, s, y), contiguousBytes(t, s, want)) {
						t.Errorf("%v %s %v: dropout differs from libtorch's ops on the same draws", dt, layout, shape)
					}
				}
				next, refNext := contiguousBytes(t, s, s.Rand([]int64{9}, Float32, CPU, g)), contiguousBytes(t, s, s.Rand([]int64{9}, Float32, CPU, ref))
				if !bytes.Equal(next, refNext) {
					t.Errorf("%v %s: the generator is left elsewhere than libtorch's ops leave it", dt, layout)
				}
			}
		}
	})
	// A bfloat16 input keeps the rate (its mask is drawn in float32), and
	// the gradient is the mask: x's gradient of sum(dropout(x)) is y / x.
	t.Run("bf16 rate and gradient", func(t *testing.T) {
		const n, p = 100000, 0.3
		s := opScope(t, Grad)
		g := opGen(t, 5)
		in := make([]float32, n)
		for i := range in {
			in[i] = float32(1 + i%3)
		}
		x := s.ToDType(s.FromFloat32s(in, n), BFloat16)
		if err := x.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
		y := s.Dropout(x, p, true, g)
		s.Backward(s.Sum(s.ToDType(y, Float32), nil, false))
		yv, err := s.ToDType(y, Float32).Float32s()
		if err != nil {
			t.Fatal(err)
		}
		gv, err := s.ToDType(s.Grad(x), Float32).Float32s()
		if err != nil {
			t.Fatal(err)
		}
		zeros := 0
		for i := range yv {
			if yv[i] == 0 {
				zeros++
			}
			if want := float64(yv[i]) / float64(in[i]); !opClose(float64(gv[i]), want, 1e-2) {
				t.Fatalf("element %d: gradient %v, want y/x = %v", i, gv[i], want)
			}
		}
		if frac := float64(zeros) / n; math.Abs(frac-p) > 0.01 {
			t.Errorf("fraction of zeros %v, want %v ± 0.01", frac, p)
		}
	})
}

func TestOpsConvert(t *testing.T) {
	t.Run("ToDType", func(t *testing.T) {
		s := opScope(t, NoGrad)
		in := []float32{1.5, -2.7, 3.99, -0.5, 0}
		x := s.FromFloat32s(in, 5)
		d := s.ToDType(x, Float64)
		want := make([]float64, len(in))
		for i, v := range in {
			want[i] = float64(v) // widening is exact
		}
		opCheckTol(t, d, Float64, []int64{5}, want, 0)
		// Conversion to an integer truncates toward zero.
		opCheck(t, s.ToDType(d, Int64), Int64, []int64{5}, []float64{1, -2, 3, 0, 0})
		opCheck(t, s.ToDType(x, Bool), Bool, []int64{5}, opTF("TTTTF"))
		opCheck(t, s.ToDType(s.FromInt64s([]int64{3, -1}, 2), Float32), Float32, []int64{2}, []float64{3, -1})
		// Narrowing rounds to nearest.
		opCheck(t, s.ToDType(s.FromFloat64s([]float64{1.0 / 3}, 1), Float32), Float32, []int64{1}, []float64{float64(float32(1.0 / 3))})
	})
	t.Run("To CPU", func(t *testing.T) {
		s := opScope(t, NoGrad)
		x := s.FromFloat64s([]float64{1, 2}, 2)
		y := s.To(x, CPU)
		opCheck(t, y, Float64, []int64{2}, []float64{1, 2})
		if y.Device() != CPU {
			t.Errorf("device %v", y.Device())
		}
	})
	t.Run("Clone", func(t *testing.T) {
		s := opScope(t, NoGrad)
		x := s.FromFloat64s([]float64{1, 2, 3}, 3)
		c := s.Clone(x)
		opCheck(t, c, Float64, []int64{3}, []float64{1, 2, 3})
		s.MulScalarInPlace(c, -1)
		opCheck(t, c, Float64, []int64{3}, []float64{-1, -2, -3})
		opCheck(t, x, Float64, []int64{3}, []float64{1, 2, 3})
		// Clone of a non-contiguous view is a full copy of the view's values.
		opCheck(t, s.Clone(s.Transpose(s.FromFloat64s([]float64{1, 2, 3, 4}, 2, 2), 0, 1)), Float64, []int64{2, 2}, []float64{1, 3, 2, 4})
	})
	t.Run("Detach", func(t *testing.T) {
		s := opScope(t, Grad)
		p := s.FromFloat64s([]float64{1, 2}, 2)
		if err := p.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
		y := s.MulScalar(p, 3)
		d := s.Detach(y)
		m, _ := d.Meta()
		if m.RequiresGrad || !m.IsLeaf {
			t.Errorf("detached: requires grad %v, leaf %v; want false, true", m.RequiresGrad, m.IsLeaf)
		}
		opCheck(t, d, Float64, []int64{2}, []float64{3, 6})
		// Detach shares storage: writing through the detached tensor shows in
		// the original.
		s.AddScalarInPlace(d, 1)
		opCheck(t, y, Float64, []int64{2}, []float64{4, 7})
		if m, _ := y.Meta(); !m.RequiresGrad {
			t.Errorf("the original lost requires grad")
		}
	})
}

// ---- cross-check against PyTorch ------------------------------------------

// opArray is a tensor as JSON: shape and row-major data.
type opArray struct {
	Shape []int64   `json:"shape"`
	Data  []float64 `json:"data"`
}

const opPyOpsScript = `
import json, math, sys
import torch
import torch.nn.functional as F

d = json.load(sys.stdin)
def T(name):
    a = d[name]
    return torch.tensor(a["data"], dtype=torch.float64).reshape(a["shape"])

x, w, b, wg, bg = T("x"), T("w"), T("b"), T("wg"), T("bg")
gx, gw, gb = T("gx"), T("gw"), T("gb")
lx, lw, lb = T("lx"), T("lw"), T("lb")
q, k, v = T("q"), T("k"), T("v")
ma, mb = T("ma"), T("mb")
out = {
    "conv_s1_p1": F.conv2d(x, w, b, stride=1, padding=1),
    "conv_groups2": F.conv2d(x, wg, bg, groups=2),
    "group_norm": F.group_norm(gx, 4, gw, gb, eps=1e-5),
    "silu": F.silu(x),
    "softmax": torch.softmax(x, -1),
    "softmax_dim1": torch.softmax(x, 1),
    "linear": F.linear(lx, lw, lb),
    "linear_nobias": F.linear(lx, lw),
    "upsample": F.interpolate(x, scale_factor=2, mode="nearest"),
    "avg_pool": F.avg_pool2d(x, 2),
    "attention": torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v,
    "attention_scale": torch.softmax(q @ k.transpose(-2, -1) * 0.3, -1) @ v,
    "mse_mean": F.mse_loss(ma, mb),
    "mse_sum": F.mse_loss(ma, mb, reduction="sum"),
}
json.dump({n: {"shape": list(t.shape), "data": t.flatten().tolist()} for n, t in out.items()}, sys.stdout)
`

func TestOpsAgainstPyTorch(t *testing.T) {
	rng := rand.New(rand.NewPCG(2024, 7))
	arr := func(shape ...int64) opArray {
		a := opArray{Shape: shape, Data: make([]float64, numel(shape))}
		for i := range a.Data {
			a.Data[i] = rng.NormFloat64()
		}
		return a
	}
	in := map[string]opArray{
		"x": arr(2, 4, 5, 6), "w": arr(3, 4, 3, 3), "b": arr(3),
		"wg": arr(6, 2, 3, 3), "bg": arr(6),
		"gx": arr(2, 8, 3, 3), "gw": arr(8), "gb": arr(8),
		"lx": arr(3, 5), "lw": arr(4, 5), "lb": arr(4),
		"q": arr(2, 3, 4), "k": arr(2, 5, 4), "v": arr(2, 5, 6),
		"ma": arr(3, 7), "mb": arr(3, 7),
	}
	var want map[string]opArray
	pyref.Run(t, opPyOpsScript, in, &want)

	s := opScope(t, NoGrad)
	T := func(name string) *Tensor { return s.FromFloat64s(in[name].Data, in[name].Shape...) }
	x := T("x")
	got := map[string]*Tensor{
		"conv_s1_p1":      s.Conv2d(x, T("w"), T("b"), Conv2dOptions{Stride: [2]int64{1, 1}, Padding: [2]int64{1, 1}}),
		"conv_groups2":    s.Conv2d(x, T("wg"), T("bg"), Conv2dOptions{Groups: 2}),
		"group_norm":      s.GroupNorm(T("gx"), 4, T("gw"), T("gb"), 1e-5),
		"silu":            s.SiLU(x),
		"softmax":         s.Softmax(x, -1),
		"softmax_dim1":    s.Softmax(x, 1),
		"linear":          s.Linear(T("lx"), T("lw"), T("lb")),
		"linear_nobias":   s.Linear(T("lx"), T("lw"), nil),
		"upsample":        s.UpsampleNearest2d(x, 10, 12),
		"avg_pool":        s.AvgPool2d(x, 2, 2),
		"attention":       s.Attention(T("q"), T("k"), T("v"), 0),
		"attention_scale": s.Attention(T("q"), T("k"), T("v"), 0.3),
		"mse_mean":        s.MSELoss(T("ma"), T("mb"), ReduceMean),
		"mse_sum":         s.MSELoss(T("ma"), T("mb"), ReduceSum),
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			w, ok := want[n]
			if !ok {
				t.Fatalf("python gave no %q", n)
			}
			opCheckTol(t, got[n], Float64, w.Shape, w.Data, 1e-10)
		})
	}
	if len(want) != len(got) {
		t.Errorf("python computed %d results, Go %d", len(want), len(got))
	}
}
