package torch

// #include "ddpm_torch.h"
import "C"

func (s *Scope) unary(op string, code C.int32_t, a *Tensor) *Tensor {
	if !s.ready(op, a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap(op, C.ddpm_unary(s.mode, code, a.h, &out), out, a)
}

func (s *Scope) binary(op string, code C.int32_t, a, b *Tensor) *Tensor {
	if !s.ready(op, a, b) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap(op, C.ddpm_binary(s.mode, code, a.h, b.h, &out), out, a, b)
}

func (s *Scope) binaryScalar(op string, code C.int32_t, a *Tensor, x float64) *Tensor {
	if !s.ready(op, a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap(op, C.ddpm_binary_scalar(s.mode, code, a.h, C.double(x), &out), out, a)
}

func (s *Scope) binaryInPlace(op string, code C.int32_t, a, b *Tensor) {
	if s.ready(op, a, b) {
		s.check(op, C.ddpm_binary_(s.mode, code, a.h, b.h), a, b)
	}
}

func (s *Scope) binaryScalarInPlace(op string, code C.int32_t, a *Tensor, x float64) {
	if s.ready(op, a) {
		s.check(op, C.ddpm_binary_scalar_(s.mode, code, a.h, C.double(x)), a)
	}
}

// Neg is -a.
func (s *Scope) Neg(a *Tensor) *Tensor { return s.unary("neg", C.DDPM_NEG, a) }

// Abs is |a|.
func (s *Scope) Abs(a *Tensor) *Tensor { return s.unary("abs", C.DDPM_ABS, a) }

// Sqrt is the elementwise square root.
func (s *Scope) Sqrt(a *Tensor) *Tensor { return s.unary("sqrt", C.DDPM_SQRT, a) }

// Rsqrt is 1/sqrt(a).
func (s *Scope) Rsqrt(a *Tensor) *Tensor { return s.unary("rsqrt", C.DDPM_RSQRT, a) }

// Exp is e^a.
func (s *Scope) Exp(a *Tensor) *Tensor { return s.unary("exp", C.DDPM_EXP, a) }

// Log is the natural logarithm.
func (s *Scope) Log(a *Tensor) *Tensor { return s.unary("log", C.DDPM_LOG, a) }

// Sin is the elementwise sine.
func (s *Scope) Sin(a *Tensor) *Tensor { return s.unary("sin", C.DDPM_SIN, a) }

// Cos is the elementwise cosine.
func (s *Scope) Cos(a *Tensor) *Tensor { return s.unary("cos", C.DDPM_COS, a) }

// SiLU is a * sigmoid(a) (the swish activation of the DDPM U-Net).
func (s *Scope) SiLU(a *Tensor) *Tensor { return s.unary("silu", C.DDPM_SILU, a) }

// Sigmoid is 1/(1+e^-a).
func (s *Scope) Sigmoid(a *Tensor) *Tensor { return s.unary("sigmoid", C.DDPM_SIGMOID, a) }

// Tanh is the hyperbolic tangent.
func (s *Scope) Tanh(a *Tensor) *Tensor { return s.unary("tanh", C.DDPM_TANH, a) }

// Square is a*a.
func (s *Scope) Square(a *Tensor) *Tensor { return s.unary("square", C.DDPM_SQUARE, a) }

// ReLU is max(a, 0).
func (s *Scope) ReLU(a *Tensor) *Tensor { return s.unary("relu", C.DDPM_RELU, a) }

// GELU is the Gaussian error linear unit (exact form).
func (s *Scope) GELU(a *Tensor) *Tensor { return s.unary("gelu", C.DDPM_GELU, a) }

// IsFinite is true where a is neither infinite nor NaN.
func (s *Scope) IsFinite(a *Tensor) *Tensor { return s.unary("isfinite", C.DDPM_ISFINITE, a) }

// LogicalNot is !a.
func (s *Scope) LogicalNot(a *Tensor) *Tensor {
	return s.unary("logical_not", C.DDPM_LOGICAL_NOT, a)
}

// Add is a + b with broadcasting.
func (s *Scope) Add(a, b *Tensor) *Tensor { return s.binary("add", C.DDPM_ADD, a, b) }

// Sub is a - b with broadcasting.
func (s *Scope) Sub(a, b *Tensor) *Tensor { return s.binary("sub", C.DDPM_SUB, a, b) }

// Mul is a * b with broadcasting.
func (s *Scope) Mul(a, b *Tensor) *Tensor { return s.binary("mul", C.DDPM_MUL, a, b) }

// Div is a / b with broadcasting (true division).
func (s *Scope) Div(a, b *Tensor) *Tensor { return s.binary("div", C.DDPM_DIV, a, b) }

// Pow is a^b with broadcasting.
func (s *Scope) Pow(a, b *Tensor) *Tensor { return s.binary("pow", C.DDPM_POW, a, b) }

// Maximum is the elementwise max of a and b.
func (s *Scope) Maximum(a, b *Tensor) *Tensor { return s.binary("maximum", C.DDPM_MAXIMUM, a, b) }

// Minimum is the elementwise min of a and b.
func (s *Scope) Minimum(a, b *Tensor) *Tensor { return s.binary("minimum", C.DDPM_MINIMUM, a, b) }

// Eq is a == b (bool).
func (s *Scope) Eq(a, b *Tensor) *Tensor { return s.binary("eq", C.DDPM_EQ, a, b) }

// Ne is a != b (bool).
func (s *Scope) Ne(a, b *Tensor) *Tensor { return s.binary("ne", C.DDPM_NE, a, b) }

// Lt is a < b (bool).
func (s *Scope) Lt(a, b *Tensor) *Tensor { return s.binary("lt", C.DDPM_LT, a, b) }

// Le is a <= b (bool).
func (s *Scope) Le(a, b *Tensor) *Tensor { return s.binary("le", C.DDPM_LE, a, b) }

// Gt is a > b (bool).
func (s *Scope) Gt(a, b *Tensor) *Tensor { return s.binary("gt", C.DDPM_GT, a, b) }

// Ge is a >= b (bool).
func (s *Scope) Ge(a, b *Tensor) *Tensor { return s.binary("ge", C.DDPM_GE, a, b) }

// LogicalAnd is a && b.
func (s *Scope) LogicalAnd(a, b *Tensor) *Tensor {
	return s.binary("logical_and", C.DDPM_LOGICAL_AND, a, b)
}

// LogicalOr is a || b.
func (s *Scope) LogicalOr(a, b *Tensor) *Tensor {
	return s.binary("logical_or", C.DDPM_LOGICAL_OR, a, b)
}

// AddScalar is a + x.
func (s *Scope) AddScalar(a *Tensor, x float64) *Tensor {
	return s.binaryScalar("add", C.DDPM_ADD, a, x)
}

// MulScalar is a * x.
func (s *Scope) MulScalar(a *Tensor, x float64) *Tensor {
	return s.binaryScalar("mul", C.DDPM_MUL, a, x)
}

// DivScalar is a / x.
func (s *Scope) DivScalar(a *Tensor, x float64) *Tensor {
	return s.binaryScalar("div", C.DDPM_DIV, a, x)
}

// PowScalar is a^x.
func (s *Scope) PowScalar(a *Tensor, x float64) *Tensor {
	return s.binaryScalar("pow", C.DDPM_POW, a, x)
}

// GtScalar is a > x (bool).
func (s *Scope) GtScalar(a *Tensor, x float64) *Tensor {
	return s.binaryScalar("gt", C.DDPM_GT, a, x)
}

// LtScalar is a < x (bool).
func (s *Scope) LtScalar(a *Tensor, x float64) *Tensor {
	return s.binaryScalar("lt", C.DDPM_LT, a, x)
}

// EqScalar is a == x (bool).
func (s *Scope) EqScalar(a *Tensor, x float64) *Tensor {
	return s.binaryScalar("eq", C.DDPM_EQ, a, x)
}

// AddInPlace sets a = a + b.
func (s *Scope) AddInPlace(a, b *Tensor) { s.binaryInPlace("add_", C.DDPM_ADD, a, b) }

// SubInPlace sets a = a - b.
func (s *Scope) SubInPlace(a, b *Tensor) { s.binaryInPlace("sub_", C.DDPM_SUB, a, b) }

// MulInPlace sets a = a * b.
func (s *Scope) MulInPlace(a, b *Tensor) { s.binaryInPlace("mul_", C.DDPM_MUL, a, b) }

// DivInPlace sets a = a / b.
func (s *Scope) DivInPlace(a, b *Tensor) { s.binaryInPlace("div_", C.DDPM_DIV, a, b) }

// AddScalarInPlace sets a = a + x.
func (s *Scope) AddScalarInPlace(a *Tensor, x float64) {
	s.binaryScalarInPlace("add_", C.DDPM_ADD, a, x)
}

// MulScalarInPlace sets a = a * x.
func (s *Scope) MulScalarInPlace(a *Tensor, x float64) {
	s.binaryScalarInPlace("mul_", C.DDPM_MUL, a, x)
}

// CopyInPlace sets dst = src (broadcast; dtype and device converted).
func (s *Scope) CopyInPlace(dst, src *Tensor) {
	if s.ready("copy_", dst, src) {
		s.check("copy_", C.ddpm_copy_(s.mode, dst.h, src.h), dst, src)
	}
}

// LerpInPlace sets a = a + w (b - a), the EMA update with w = 1 - decay.
func (s *Scope) LerpInPlace(a, b *Tensor, w float64) {
	if s.ready("lerp_", a, b) {
		s.check("lerp_", C.ddpm_lerp_(s.mode, a.h, b.h, C.double(w)), a, b)
	}
}

// Clamp limits a to [lo, hi].
func (s *Scope) Clamp(a *Tensor, lo, hi float64) *Tensor { return s.clamp(a, true, lo, true, hi) }

// ClampMin limits a to [lo, +inf).
func (s *Scope) ClampMin(a *Tensor, lo float64) *Tensor { return s.clamp(a, true, lo, false, 0) }

// ClampMax limits a to (-inf, hi].
func (s *Scope) ClampMax(a *Tensor, hi float64) *Tensor { return s.clamp(a, false, 0, true, hi) }

func (s *Scope) clamp(a *Tensor, hasLo bool, lo float64, hasHi bool, hi float64) *Tensor {
	if !s.ready("clamp", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("clamp", C.ddpm_clamp(s.mode, a.h, cBool(hasLo), C.double(lo), cBool(hasHi), C.double(hi), &out), out, a)
}

// Where is cond ? a : b, broadcast.
func (s *Scope) Where(cond, a, b *Tensor) *Tensor {
	if !s.ready("where", cond, a, b) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("where", C.ddpm_where(s.mode, cond.h, a.h, b.h, &out), out, cond, a, b)
}

func cBool(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}
