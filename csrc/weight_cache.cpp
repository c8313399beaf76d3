// weight_cache.cpp: forms of float32 CPU weights derived once and kept
// while the weight lives unchanged, for calls without autograd: bfloat16
// copies for bf16 autocast, Winograd transforms for 3x3 convolutions
// (winograd_conv.cpp).
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
// Winograd transform four times a 3x3 weight's.
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

std::mutex cache_mu;
std::unordered_map<Key, Entry, KeyHash> cache;
size_t sweep_at = 64;  // the cache size at which dead weights' entries are dropped

// Drops the entries of weights that no longer live; cache_mu held.
void sweep_locked() {
  for (auto e = cache.begin(); e != cache.end();) e = e->second.weight.expired() ? cache.erase(e) : std::next(e);
  sweep_at = 2 * cache.size() + 64;
}

}  // namespace

namespace ddpm {

bool weight_cacheable(const at::Tensor& w) {
  return w.defined() && w.device().is_cpu() && w.scalar_type() == at::kFloat && !w.is_inference() &&
         !(at::GradMode::is_enabled() && w.requires_grad());
}

at::Tensor derived_weight(const at::Tensor& w, WeightForm form, at::Tensor (*derive)(const at::Tensor&)) {
  const int64_t version = w._version();
  const Key key{w.unsafeGetTensorImpl(), form};
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end() && !it->second.weight.expired() && it->second.version == version) return it->second.derived;
  }
  at::Tensor derived = derive(w);  // outside the lock: a transform takes milliseconds
  std::lock_guard<std::mutex> lock(cache_mu);
  cache.insert_or_assign(key, Entry{c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
                                        w.getIntrusivePtr()),
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
  return derived_weight(w, WeightForm::kBFloat16, [](const at::Tensor& t) { return t.to(at::kBFloat16); });
}

}  // namespace ddpm
