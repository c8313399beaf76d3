// optim.cpp: the multi-tensor steps of training: AdamW, gradient clipping
// and the EMA of the weights.
#include <cmath>

#include "shim.h"

using ddpm::ref;

namespace {

std::vector<at::Tensor> tensors(const ddpm_tensor* hs, int64_t n) {
  TORCH_CHECK(n >= 0 && (n == 0 || hs != nullptr), "bad tensor list");
  std::vector<at::Tensor> v;
  v.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) v.push_back(ref(hs[i]));
  return v;
}

}  // namespace

extern "C" {

ddpm_error ddpm_adamw_step(const ddpm_tensor* params, const ddpm_tensor* exp_avg,
                           const ddpm_tensor* exp_avg_sq, int64_t n, const ddpm_adamw* hp,
                           int32_t foreach) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    TORCH_CHECK(hp != nullptr && hp->step >= 1, "AdamW step must be at least 1");
    std::vector<at::Tensor> p, m, v, g;
    auto all_p = tensors(params, n), all_m = tensors(exp_avg, n), all_v = tensors(exp_avg_sq, n);
    for (int64_t i = 0; i < n; i++) {
      const at::Tensor& grad = all_p[i].grad();
      if (!grad.defined()) continue;
      TORCH_CHECK(all_m[i].sizes() == all_p[i].sizes() && all_v[i].sizes() == all_p[i].sizes(),
                  "AdamW state of parameter ", i, " has the wrong shape");
      p.push_back(all_p[i]);
      m.push_back(all_m[i]);
      v.push_back(all_v[i]);
      g.push_back(grad);
    }
    if (p.empty()) return nullptr;
    const double bc1 = 1 - std::pow(hp->beta1, static_cast<double>(hp->step));
    const double bc2 = 1 - std::pow(hp->beta2, static_cast<double>(hp->step));
    const double step_size = hp->lr / bc1;
    const double bc2_sqrt = std::sqrt(bc2);
    if (foreach) {
      at::_foreach_mul_(p, 1 - hp->lr * hp->weight_decay);
      at::_foreach_mul_(m, hp->beta1);
      at::_foreach_add_(m, g, 1 - hp->beta1);
      at::_foreach_mul_(v, hp->beta2);
      at::_foreach_addcmul_(v, g, g, 1 - hp->beta2);
      std::vector<at::Tensor> denom = at::_foreach_sqrt(v);
      at::_foreach_div_(denom, bc2_sqrt);
      at::_foreach_add_(denom, hp->eps);
      at::_foreach_addcdiv_(p, m, denom, -step_size);
    } else {
      for (size_t i = 0; i < p.size(); i++) {
        p[i].mul_(1 - hp->lr * hp->weight_decay);
        m[i].mul_(hp->beta1).add_(g[i], 1 - hp->beta1);
        v[i].mul_(hp->beta2).addcmul_(g[i], g[i], 1 - hp->beta2);
        at::Tensor denom = (v[i].sqrt() / bc2_sqrt).add_(hp->eps);
        p[i].addcdiv_(m[i], denom, -step_size);
      }
    }
  });
}

ddpm_error ddpm_clip_grad_norm(const ddpm_tensor* params, int64_t n, double max_norm,
                               double* total_norm) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    std::vector<at::Tensor> g;
    for (const at::Tensor& p : tensors(params, n)) {
      if (p.grad().defined()) g.push_back(p.grad());
    }
    if (g.empty()) {
      *total_norm = 0;
      return nullptr;
    }
    // Accumulate in float64 so large models do not lose the norm to rounding.
    at::Tensor norms = at::stack(at::_foreach_norm(g)).to(at::kDouble);
    double total = norms.norm().item<double>();
    *total_norm = total;
    if (max_norm > 0 && std::isfinite(total)) {
      double coef = max_norm / (total + 1e-6);
      if (coef < 1) at::_foreach_mul_(g, coef);
    }
  });
}

ddpm_error ddpm_ema_update(const ddpm_tensor* avg, const ddpm_tensor* value, int64_t n,
                           double decay) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    TORCH_CHECK(decay >= 0 && decay <= 1, "EMA decay must be in [0, 1], got ", decay);
    auto a = tensors(avg, n), v = tensors(value, n);
    at::_foreach_mul_(a, decay);
    at::_foreach_add_(a, v, 1 - decay);
  });
}

}  // extern "C"
