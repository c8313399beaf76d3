// weight_cache.cpp: forms of float32 CPU weights derived once and kept
// while the weight lives unchanged, for calls without autograd: bfloat16
// copies for bf16 autocast, Winograd transforms for 3x3 convolutions
// (winograd_conv.cpp), transposes for 1x1 convolutions (pointwise_conv.cpp)
// and the taps of 3x3 ones into few channels (narrow_conv.cpp).
//
// Autocast casts a convolution's or linear layer's float32 weight and bias
// to bfloat16 at every call; libtorch keeps those casts only for leaves that
// need gradients, and only until autocast ends. A sampling step of the small
// preset in bf16 spent about 1.2 ms of its 9.3 at batch 1 (two threads) in
// those casts; a 3x3 convolution's Winograd transform takes longer than the
// convolution. An entry holds a weak reference to the weight (so its
// address is never another tensor's while the entry exists) and the
// weight's version, which every in-place change (an optimizer or EMA step,
// a checkpoint loaded into it) advances; a changed weight's entry is
// replaced, and dead weights' entries are dropped as the cache grows and
// whenever the CPU cache is trimmed or emptied (torch's TrimCPUCache, which
// a server calls every minute, and EmptyCPUCache), so a closed model's
// forms do not outlive it for long. The bfloat16 copies take half the float32 weights' memory, a
// Winograd transform four times a 3x3 weight's (about 0.8 GB for the decoder
// of Stable Diffusion's autoencoder), so the forms together are held to a
// limit: a quarter of the memory the process may use unless
// DDPM_WEIGHT_CACHE_MB says otherwise when the library loads, or
// ddpm_weight_cache_set_limit later. A form that would take the cache over
// it, once dead weights' forms are dropped, is not made: its call runs as
// without the cache (libtorch's convolution, autocast's cast per call), so
// memory stays bounded and the weights cached first keep their forms.
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <mutex>
#include <unordered_map>

#include "shim.h"

namespace {

struct Key {
  const c10::TensorImpl* weight;
  ddpm::WeightForm form;
  bool operator==(const Key& o) const { return weight == o.weight && form == o.form; }
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    return std::hash<const void*>()(k.weight) ^ static_cast<size_t>(k.form);
  }
};

struct Entry {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> weight;
  int64_t version;
  at::Tensor derived;
};

using Cache = std::unordered_map<Key, Entry, KeyHash>;

std::mutex cache_mu;
Cache cache;
size_t sweep_at = 64;  // the cache size at which dead weights' entries are dropped
int64_t held = 0;      // bytes of the forms in the cache, and of those being made
int64_t limit = ddpm::mb_from_env("DDPM_WEIGHT_CACHE_MB", ddpm::memory_quarter());

// Removes an entry; cache_mu held.
Cache::iterator erase_locked(Cache::iterator e) {
  held -= static_cast<int64_t>(e->second.derived.nbytes());
  return cache.erase(e);
}

// Drops the entries of weights that no longer live; cache_mu held.
void sweep_locked() {
  for (auto e = cache.begin(); e != cache.end();) e = e->second.weight.expired() ? erase_locked(e) : std::next(e);
  sweep_at = 2 * cache.size() + 64;
}

}  // namespace

namespace ddpm {

bool weight_cacheable(const at::Tensor& w) {
  return w.defined() && w.device().is_cpu() && w.scalar_type() == at::kFloat && !w.is_inference() &&
         !(at::GradMode::is_enabled() && w.requires_grad());
}

at::Tensor derived_weight(const at::Tensor& w, WeightForm form, int64_t bytes,
                          at::Tensor (*derive)(const at::Tensor&)) {
  const int64_t version = w._version();
  const Key key{w.unsafeGetTensorImpl(), form};
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end()) {
      if (!it->second.weight.expired() && it->second.version == version) return it->second.derived;
      erase_locked(it);  // an older version's, or a dead weight's at the same address
    }
    if (held + bytes > limit) sweep_locked();
    if (held + bytes > limit) return at::Tensor();
    held += bytes;  // reserved while it is made, so that threads deriving at once stay within the limit
  }
  at::Tensor derived;
  try {
    // A plain tensor without history whatever mode the first caller is in:
    // an inference tensor made in an inference scope could not be saved for
    // backward by a later call with autograd on a frozen weight.
    c10::InferenceMode normal(false);
    at::NoGradGuard no_grad;
    derived = derive(w);  // outside the lock: a transform takes milliseconds
  } catch (...) {
    std::lock_guard<std::mutex> lock(cache_mu);
    held -= bytes;
    throw;
  }
  std::lock_guard<std::mutex> lock(cache_mu);
  held -= bytes;
  auto it = cache.find(key);
  if (it != cache.end()) erase_locked(it);  // another thread's, made meanwhile
  held += static_cast<int64_t>(derived.nbytes());
  cache.emplace(key, Entry{c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(w.getIntrusivePtr()),
                           version, derived});
  if (cache.size() >= sweep_at) sweep_locked();
  return derived;
}

void sweep_weight_cache() {
  std::lock_guard<std::mutex> lock(cache_mu);
  sweep_locked();
}

at::Tensor bf16_weight(const at::Tensor& w) {
  if (!weight_cacheable(w)) return w;
  at::Tensor copy = derived_weight(w, WeightForm::kBFloat16, w.numel() * 2,
                                   [](const at::Tensor& t) { return t.to(at::kBFloat16); });
  return copy.defined() ? copy : w;
}

}  // namespace ddpm

extern "C" {

ddpm_error ddpm_weight_cache_stats(ddpm_weight_forms* out) {
  DDPM_TRY_PLAIN(TORCH_CHECK(out != nullptr, "null stats"); std::lock_guard<std::mutex> lock(cache_mu);
                 out->bytes = held; out->forms = static_cast<int64_t>(cache.size()); out->limit_bytes = limit);
}

ddpm_error ddpm_weight_cache_set_limit(int64_t bytes) {
  DDPM_TRY_PLAIN(TORCH_CHECK(bytes >= 0, "weight cache limit must be at least 0, got ", bytes);
                 std::lock_guard<std::mutex> lock(cache_mu); limit = bytes; sweep_locked();
                 for (auto e = cache.begin(); held > limit && e != cache.end();) e = erase_locked(e));
}

}  // extern "C"
