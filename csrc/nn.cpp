// nn.cpp: linear algebra and the neural-network ops of the U-Net and trainer.
#include <torch/version.h>
#include <ATen/ops/mkldnn_convolution.h>

#include "lanes.h"
#include "shim.h"

using ddpm::ref;
using ddpm::wrap;

extern "C" {

ddpm_error ddpm_matmul(ddpm_mode mode, ddpm_tensor a, ddpm_tensor b, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::matmul(ref(a), ref(b))));
}

ddpm_error ddpm_bmm(ddpm_mode mode, ddpm_tensor a, ddpm_tensor b, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::bmm(ref(a), ref(b))));
}

ddpm_error ddpm_linear(ddpm_mode mode, ddpm_tensor x, ddpm_tensor w, ddpm_tensor bias,
                       ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::linear(ref(x), ddpm::bf16_weight_if_autocast(mode, ref(w)),
                                         ddpm::bf16_weight_if_autocast(mode, ddpm::optional(bias)))));
}

}  // extern "C"

namespace {

// Whether a 1x1 convolution should call oneDNN itself. On one intra-op
// thread below batch 16, libtorch runs 1x1 convolutions with its own kernel
// (faster for NCHW, its comment says), which copies a channels-last input
// to NCHW and returns NCHW, which the model then copies back; oneDNN takes
// channels-last as it is. The small preset's sampling forward on one thread
// (a serving worker's), oneDNN's against libtorch's, the two taking turns
// in one process: 0.91-0.97 of the time at batch 8, 0.94-0.99 at 6 and 7,
// 0.95 at 12, but 1.03 at 5, 1.10 at 4 and 1.20 at 1, where oneDNN's fixed
// cost per call outweighs the copies: hence from batch 6. Only without
// autograd (trained models' convolutions are NCHW, libtorch's choice) and
// without autocast (which does not know this operator: the convolution
// would stay float32 under bf16).
bool onednn_1x1(const at::Tensor& x, const at::Tensor& w, const int64_t* stride,
                const int64_t* padding, const int64_t* dilation, int64_t groups) {
  return at::hasMKLDNN() && at::globalContext().userEnabledMkldnn() && !at::GradMode::is_enabled() &&
         !at::autocast::is_cpu_enabled() &&
         x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4 && x.size(0) >= 6 && x.size(0) < 16 &&
         w.size(2) == 1 && w.size(3) == 1 && groups == 1 && stride[0] == 1 && stride[1] == 1 &&
         padding[0] == 0 && padding[1] == 0 && dilation[0] == 1 && dilation[1] == 1 &&
         at::get_num_threads() == 1 && x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// oneDNN's 1x1 kernel where onednn_1x1 says, else libtorch's choice.
at::Tensor plain_conv2d(ddpm_mode mode, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                        const int64_t* stride, const int64_t* padding, const int64_t* dilation, int64_t groups) {
  if (onednn_1x1(x, w, stride, padding, dilation, groups)) {
    return at::mkldnn_convolution(x, w, bias, ddpm::dims(padding, 2), ddpm::dims(stride, 2), ddpm::dims(dilation, 2),
                                  groups);
  }
  return at::conv2d(x, ddpm::bf16_weight_if_autocast(mode, w), ddpm::bf16_weight_if_autocast(mode, bias),
                    ddpm::dims(stride, 2), ddpm::dims(padding, 2), ddpm::dims(dilation, 2), groups);
}

// Whether the shim's kernels can add res to the output of a convolution of
// x upsampled by up by w (stride 1, the input's size) in their last pass.
bool residual_fits(const at::Tensor& res, const at::Tensor& x, int64_t up, const at::Tensor& w) {
  return res.defined() && res.device().is_cpu() && res.scalar_type() == at::kFloat && res.dim() == 4 &&
         res.size(0) == x.size(0) && res.size(1) == w.size(0) && res.size(2) == x.size(2) * up &&
         res.size(3) == x.size(3) * up && res.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         !(at::GradMode::is_enabled() && res.requires_grad());
}

// The convolution of x upsampled by up (nearest neighbour), plus res when
// defined. The shim's Winograd, 1x1, narrow or im2col kernel where kernels names it, it
// takes the convolution and the weight's form fits in the weight cache: the
// Winograd kernel reads the upsampled map from x, and each adds res in its
// last pass where it fits (after it otherwise). Else the upsampled map is
// made and oneDNN's 1x1 kernel runs where onednn_1x1 says, or libtorch's
// choice, res added after.
at::Tensor conv2d(ddpm_mode mode, const at::Tensor& x, int64_t up, const at::Tensor& w, const at::Tensor& bias,
                  const at::Tensor& res, const int64_t* stride, const int64_t* padding, const int64_t* dilation,
                  int64_t groups, int32_t kernels) {
  TORCH_CHECK(up >= 1, "conv2d: upsampling factor ", up, ", want 1 or more");
  const at::Tensor none;
  bool added = false;  // whether a kernel added res
  at::Tensor y;
  if ((kernels & DDPM_CONV_WINOGRAD) != 0 &&
      ddpm::winograd_conv_takes(x, w, bias, stride, padding, dilation, groups)) {
    added = residual_fits(res, x, up, w);
    y = ddpm::winograd_conv(x, w, bias, added ? res : none, up);
  }
  at::Tensor in = x;
  if (!y.defined() && up > 1) in = at::upsample_nearest2d(x, {x.size(2) * up, x.size(3) * up});
  if (!y.defined() && (kernels & DDPM_CONV_POINTWISE) != 0 &&
      ddpm::pointwise_conv_takes(in, w, bias, stride, padding, dilation, groups)) {
    added = residual_fits(res, in, 1, w);
    y = ddpm::pointwise_conv(in, w, bias, added ? res : none);
  }
  if (!y.defined() && (kernels & DDPM_CONV_NARROW) != 0 &&
      ddpm::narrow_conv_takes(in, w, bias, stride, padding, dilation, groups)) {
    added = false;
    y = ddpm::narrow_conv(in, w, bias);
  }
  if (!y.defined() && (kernels & DDPM_CONV_IM2COL) != 0 &&
      ddpm::im2col_conv_takes(in, w, bias, stride, padding, dilation, groups)) {
    added = false;
    y = ddpm::im2col_conv(in, w, bias, stride[0]);
  }
  if (!y.defined()) {
    added = false;
    y = plain_conv2d(mode, in, w, bias, stride, padding, dilation, groups);
  }
  return res.defined() && !added ? at::add(y, res) : y;
}

}  // namespace

namespace ddpm {

bool vector_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                       const int64_t* padding, const int64_t* dilation, int64_t groups, int64_t kernel, int64_t pad,
                       bool sixteens) {
  const auto float_cpu = [](const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == at::kFloat; };
  return vector_isa() != DDPM_VECTORS_NONE && !at::autocast::is_cpu_enabled() && float_cpu(x) && x.dim() == 4 &&
         !(at::GradMode::is_enabled() && x.requires_grad()) && weight_cacheable(w) && w.dim() == 4 &&
         w.size(2) == kernel && w.size(3) == kernel && groups == 1 && x.size(1) == w.size(1) && x.size(1) > 0 &&
         w.size(0) > 0 && (!sixteens || w.size(0) % 16 == 0) &&
         (!bias.defined() ||
          (weight_cacheable(bias) && bias.dim() == 1 && bias.size(0) == w.size(0) && bias.is_contiguous())) &&
         stride[0] == 1 && stride[1] == 1 && padding[0] == pad && padding[1] == pad && dilation[0] == 1 &&
         dilation[1] == 1 && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace ddpm

extern "C" {

ddpm_error ddpm_conv2d(ddpm_mode mode, ddpm_tensor x, int64_t upsample, ddpm_tensor w, ddpm_tensor bias,
                       ddpm_tensor residual, const int64_t* stride, const int64_t* padding, const int64_t* dilation,
                       int64_t groups, int32_t kernels, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(conv2d(mode, ref(x), upsample, ref(w), ddpm::optional(bias), ddpm::optional(residual),
                                     stride, padding, dilation, groups, kernels)));
}

ddpm_error ddpm_softmax(ddpm_mode mode, ddpm_tensor a, int64_t dim, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::softmax(ddpm::fp32_if_autocast(mode, ref(a)), dim)));
}

ddpm_error ddpm_log_softmax(ddpm_mode mode, ddpm_tensor a, int64_t dim, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::log_softmax(ddpm::fp32_if_autocast(mode, ref(a)), dim)));
}

ddpm_error ddpm_attention(ddpm_mode mode, ddpm_tensor q, ddpm_tensor k, ddpm_tensor v,
                          double scale, int32_t allow_fused, ddpm_tensor* out, int32_t* fused) {
  DDPM_TRY(mode, {
    const at::Tensor& Q = ref(q);
    const at::Tensor& K = ref(k);
    const at::Tensor& V = ref(v);
    TORCH_CHECK(Q.dim() >= 2, "attention query needs at least 2 dims, got ", Q.dim());
    double s = scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(Q.size(-1)));
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
    // 2.1 added the scale argument to the fused kernel.
    if (allow_fused) {
      *out = wrap(at::scaled_dot_product_attention(Q, K, V, {}, 0.0, false, s));
      *fused = 1;
      return nullptr;
    }
#else
    (void)allow_fused;
#endif
    // The products run in the autocast precision, the softmax in float32.
    at::Tensor w = at::softmax(ddpm::fp32_if_autocast(mode, at::matmul(Q, K.transpose(-2, -1))) * s, -1);
    *out = wrap(at::matmul(w, V));
    *fused = 0;
  });
}

ddpm_error ddpm_upsample_nearest2d(ddpm_mode mode, ddpm_tensor x, int64_t out_h, int64_t out_w,
                                   ddpm_tensor* out) {
  DDPM_TRY(mode, {
    int64_t size[2] = {out_h, out_w};
    *out = wrap(at::upsample_nearest2d(ref(x), at::IntArrayRef(size, 2)));
  });
}

ddpm_error ddpm_avg_pool2d(ddpm_mode mode, ddpm_tensor x, int64_t kernel, int64_t stride,
                           ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::avg_pool2d(ref(x), {kernel, kernel}, {stride, stride})));
}

static int64_t reduction(int32_t r) {
  switch (r) {
    case DDPM_REDUCE_NONE: return at::Reduction::None;
    case DDPM_REDUCE_MEAN: return at::Reduction::Mean;
    case DDPM_REDUCE_SUM: return at::Reduction::Sum;
  }
  TORCH_CHECK(false, "unknown reduction ", r);
}

ddpm_error ddpm_mse_loss(ddpm_mode mode, ddpm_tensor a, ddpm_tensor b, int32_t red,
                         ddpm_tensor* out) {
  DDPM_TRY(mode, {
    at::Tensor A = ddpm::fp32_if_autocast(mode, ref(a));
    at::Tensor B = ddpm::fp32_if_autocast(mode, ref(b));
    TORCH_CHECK(A.sizes() == B.sizes(), "mse_loss: input shape ", A.sizes(),
                " differs from target shape ", B.sizes());
    *out = wrap(at::mse_loss(A, B, reduction(red)));
  });
}

ddpm_error ddpm_cross_entropy(ddpm_mode mode, ddpm_tensor logits, ddpm_tensor targets,
                              int32_t red, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::cross_entropy_loss(ddpm::fp32_if_autocast(mode, ref(logits)),
                                                    ref(targets), {}, reduction(red))));
}

}  // extern "C"
