// ops.cpp: elementwise arithmetic, comparisons, reductions and shape ops.
#include "shim.h"

using ddpm::ref;
using ddpm::wrap;

namespace {

at::Tensor unary(int32_t op, const at::Tensor& a) {
  switch (op) {
    case DDPM_NEG: return at::neg(a);
    case DDPM_ABS: return at::abs(a);
    case DDPM_SQRT: return at::sqrt(a);
    case DDPM_RSQRT: return at::rsqrt(a);
    case DDPM_EXP: return at::exp(a);
    case DDPM_LOG: return at::log(a);
    case DDPM_SIN: return at::sin(a);
    case DDPM_COS: return at::cos(a);
    case DDPM_SILU: return at::silu(a);
    case DDPM_SIGMOID: return at::sigmoid(a);
    case DDPM_TANH: return at::tanh(a);
    case DDPM_SQUARE: return at::square(a);
    case DDPM_RELU: return at::relu(a);
    case DDPM_ISFINITE: return at::isfinite(a);
    case DDPM_LOGICAL_NOT: return at::logical_not(a);
    case DDPM_GELU: return at::gelu(a);
  }
  TORCH_CHECK(false, "unknown unary op ", op);
}

// B is at::Tensor or at::Scalar; libtorch overloads most ops for both.
template <typename B>
at::Tensor binary(int32_t op, const at::Tensor& a, const B& b) {
  switch (op) {
    case DDPM_ADD: return at::add(a, b);
    case DDPM_SUB: return at::sub(a, b);
    case DDPM_MUL: return at::mul(a, b);
    case DDPM_DIV: return at::div(a, b);
    case DDPM_POW: return at::pow(a, b);
    case DDPM_EQ: return at::eq(a, b);
    case DDPM_NE: return at::ne(a, b);
    case DDPM_LT: return at::lt(a, b);
    case DDPM_LE: return at::le(a, b);
    case DDPM_GT: return at::gt(a, b);
    case DDPM_GE: return at::ge(a, b);
  }
  if constexpr (std::is_same_v<B, at::Tensor>) {
    switch (op) {
      case DDPM_MAXIMUM: return at::maximum(a, b);
      case DDPM_MINIMUM: return at::minimum(a, b);
      case DDPM_LOGICAL_AND: return at::logical_and(a, b);
      case DDPM_LOGICAL_OR: return at::logical_or(a, b);
    }
  } else {
    switch (op) {
      case DDPM_MAXIMUM: return at::clamp_min(a, b);
      case DDPM_MINIMUM: return at::clamp_max(a, b);
    }
  }
  TORCH_CHECK(false, "unknown or unsupported binary op ", op);
}

template <typename B>
void binary_inplace(int32_t op, const at::Tensor& a, const B& b) {
  switch (op) {
    case DDPM_ADD: a.add_(b); return;
    case DDPM_SUB: a.sub_(b); return;
    case DDPM_MUL: a.mul_(b); return;
    case DDPM_DIV: a.div_(b); return;
    case DDPM_POW: a.pow_(b); return;
  }
  TORCH_CHECK(false, "binary op ", op, " has no in-place form");
}

}  // namespace

extern "C" {

ddpm_error ddpm_unary(ddpm_mode mode, int32_t op, ddpm_tensor a, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(unary(op, ref(a))));
}

ddpm_error ddpm_binary(ddpm_mode mode, int32_t op, ddpm_tensor a, ddpm_tensor b, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(binary(op, ref(a), ref(b))));
}

ddpm_error ddpm_binary_scalar(ddpm_mode mode, int32_t op, ddpm_tensor a, double s,
                              ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(binary(op, ref(a), at::Scalar(s))));
}

ddpm_error ddpm_binary_(ddpm_mode mode, int32_t op, ddpm_tensor a, ddpm_tensor b) {
  DDPM_TRY(mode, binary_inplace(op, ref(a), ref(b)));
}

ddpm_error ddpm_binary_scalar_(ddpm_mode mode, int32_t op, ddpm_tensor a, double s) {
  DDPM_TRY(mode, binary_inplace(op, ref(a), at::Scalar(s)));
}

ddpm_error ddpm_copy_(ddpm_mode mode, ddpm_tensor dst, ddpm_tensor src) {
  DDPM_TRY(mode, ref(dst).copy_(ref(src)));
}

ddpm_error ddpm_lerp_(ddpm_mode mode, ddpm_tensor a, ddpm_tensor b, double w) {
  DDPM_TRY(mode, ref(a).lerp_(ref(b), w));
}

ddpm_error ddpm_clamp(ddpm_mode mode, ddpm_tensor a, int32_t has_lo, double lo, int32_t has_hi,
                      double hi, ddpm_tensor* out) {
  DDPM_TRY(mode, {
    c10::optional<at::Scalar> l, h;
    if (has_lo) l = lo;
    if (has_hi) h = hi;
    *out = wrap(at::clamp(ref(a), l, h));
  });
}

ddpm_error ddpm_where(ddpm_mode mode, ddpm_tensor cond, ddpm_tensor a, ddpm_tensor b,
                      ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::where(ref(cond), ref(a), ref(b))));
}

ddpm_error ddpm_reduce(ddpm_mode mode, int32_t op, ddpm_tensor a, const int64_t* dims,
                       int64_t ndims, int32_t keepdim, ddpm_tensor* out) {
  DDPM_TRY(mode, {
    // Under autocast the accumulating reductions run in float32; min, max
    // and argmax are exact in any precision.
    bool exact = op == DDPM_AMAX || op == DDPM_AMIN || op == DDPM_ARGMAX;
    at::Tensor t = exact ? ref(a) : ddpm::fp32_if_autocast(mode, ref(a));
    at::IntArrayRef d = ddpm::dims(dims, ndims);
    bool k = keepdim != 0;
    bool all = ndims == 0;
    at::Tensor r;
    switch (op) {
      case DDPM_SUM: r = all ? (k ? t.sum(at::IntArrayRef{}, true) : t.sum()) : t.sum(d, k); break;
      case DDPM_MEAN: r = all ? (k ? t.mean(at::IntArrayRef{}, true) : t.mean()) : t.mean(d, k); break;
      case DDPM_AMAX: r = at::amax(t, d, k); break;
      case DDPM_AMIN: r = at::amin(t, d, k); break;
      case DDPM_VAR: r = all ? (k ? at::var(t, at::OptionalIntArrayRef(), true, true) : at::var(t, true)) : at::var(t, d, true, k); break;
      case DDPM_VAR_POP: r = all ? (k ? at::var(t, at::OptionalIntArrayRef(), false, true) : at::var(t, false)) : at::var(t, d, false, k); break;
      case DDPM_STD: r = all ? (k ? at::std(t, at::OptionalIntArrayRef(), true, true) : at::std(t, true)) : at::std(t, d, true, k); break;
      case DDPM_NORM2: r = all ? (k ? at::linalg_vector_norm(t, 2, at::OptionalIntArrayRef(), true) : at::linalg_vector_norm(t, 2)) : at::linalg_vector_norm(t, 2, d, k); break;
      case DDPM_ARGMAX:
        TORCH_CHECK(ndims <= 1, "argmax takes at most one dim");
        r = all ? at::argmax(t, c10::nullopt, k) : at::argmax(t, d[0], k);
        break;
      default: TORCH_CHECK(false, "unknown reduction ", op);
    }
    *out = wrap(r);
  });
}

ddpm_error ddpm_reshape(ddpm_mode mode, ddpm_tensor a, const int64_t* shape, int64_t ndim,
                        ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(ref(a).reshape(ddpm::dims(shape, ndim))));
}

ddpm_error ddpm_expand(ddpm_mode mode, ddpm_tensor a, const int64_t* shape, int64_t ndim,
                       ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(ref(a).expand(ddpm::dims(shape, ndim))));
}

ddpm_error ddpm_permute(ddpm_mode mode, ddpm_tensor a, const int64_t* dims, int64_t ndim,
                        ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(ref(a).permute(ddpm::dims(dims, ndim))));
}

ddpm_error ddpm_transpose(ddpm_mode mode, ddpm_tensor a, int64_t d0, int64_t d1,
                          ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(ref(a).transpose(d0, d1)));
}

ddpm_error ddpm_narrow(ddpm_mode mode, ddpm_tensor a, int64_t dim, int64_t start, int64_t length,
                       ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(ref(a).narrow(dim, start, length)));
}

ddpm_error ddpm_unsqueeze(ddpm_mode mode, ddpm_tensor a, int64_t dim, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(ref(a).unsqueeze(dim)));
}

ddpm_error ddpm_squeeze(ddpm_mode mode, ddpm_tensor a, int64_t dim, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(ref(a).squeeze(dim)));
}

ddpm_error ddpm_contiguous(ddpm_mode mode, ddpm_tensor a, int32_t format, ddpm_tensor* out) {
  DDPM_TRY(mode, {
    at::MemoryFormat mf;
    switch (format) {
      case DDPM_CONTIGUOUS: mf = at::MemoryFormat::Contiguous; break;
      case DDPM_CHANNELS_LAST: mf = at::MemoryFormat::ChannelsLast; break;
      default: TORCH_CHECK(false, "unknown memory format ", format);
    }
    *out = wrap(ref(a).contiguous(mf));
  });
}

ddpm_error ddpm_cat(ddpm_mode mode, const ddpm_tensor* ts, int64_t n, int64_t dim, int32_t stack,
                    ddpm_tensor* out) {
  DDPM_TRY(mode, {
    TORCH_CHECK(n > 0 && ts != nullptr, "cat/stack needs at least one tensor");
    std::vector<at::Tensor> v;
    v.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) v.push_back(ref(ts[i]));
    *out = wrap(stack ? at::stack(v, dim) : at::cat(v, dim));
  });
}

ddpm_error ddpm_split(ddpm_mode mode, ddpm_tensor a, const int64_t* sizes, int64_t nsizes,
                      int64_t dim, ddpm_tensor* outs) {
  DDPM_TRY(mode, {
    std::vector<at::Tensor> parts = at::split_with_sizes(ref(a), ddpm::dims(sizes, nsizes), dim);
    TORCH_CHECK(static_cast<int64_t>(parts.size()) == nsizes, "split produced ", parts.size(),
                " pieces, expected ", nsizes);
    for (int64_t i = 0; i < nsizes; i++) outs[i] = wrap(parts[static_cast<size_t>(i)]);
  });
}

ddpm_error ddpm_index_select(ddpm_mode mode, ddpm_tensor a, int64_t dim, ddpm_tensor index,
                             ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::index_select(ref(a), dim, ref(index))));
}

ddpm_error ddpm_gather(ddpm_mode mode, ddpm_tensor a, int64_t dim, ddpm_tensor index,
                       ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::gather(ref(a), dim, ref(index))));
}

}  // extern "C"
