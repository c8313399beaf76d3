// dropout.cpp: dropout, with its mask on the CPU drawn from libtorch's
// generator in bulk.
//
// Dropout keeps the elements whose float32 uniform draw is below 1 - p and
// scales them by 1 / (1 - p): the Bernoulli(1 - p) mask, drawn from the
// generator as reproducibly as bernoulli_, which without MKL (Debian's
// libtorch) draws each element through a double-precision distribution (4.8
// ns an element here, against 2.1 for uniform_ in float32). libtorch's
// uniform_ still makes one call of the generator's MT19937 per element, and
// then lt_, mul_ and a conversion each take a pass: the small preset's 14
// dropout layers took 35-63 ms of a 0.44-0.64 s training step at batch 64.
// On a dense CPU map of float32 or bfloat16 the shim makes the same mask,
// value for value, in one pass, and leaves the generator in the state
// uniform_ would: it copies the engine's state out, draws the numbers 624 at
// a time (a twist of the state, then the tempering of the block) and writes
// each element's mask value as it goes. The product with the map stays
// libtorch's, so autograd sees the mask as before.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/MT19937RNGEngine.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <mutex>

#include "shim.h"

using ddpm::ref;
using ddpm::wrap;

namespace {

constexpr int kN = at::MERSENNE_STATE_N, kM = at::MERSENNE_STATE_M;

inline uint32_t twist(uint32_t u, uint32_t v) {
  return (((u & at::UMASK) | (v & at::LMASK)) >> 1) ^ (v & 1 ? at::MATRIX_A : 0);
}

// The engine's next state, as at::mt19937 makes it.
void next_state(uint32_t* s) {
  for (int j = 0; j < kN - kM; j++) s[j] = s[j + kM] ^ twist(s[j], s[j + 1]);
  for (int j = kN - kM; j < kN - 1; j++) s[j] = s[j + kM - kN] ^ twist(s[j], s[j + 1]);
  s[kN - 1] = s[kM - 1] ^ twist(s[kN - 1], s[0]);
}

// m[i] = keep_value where the i-th number's float32 uniform draw (its low 24
// bits times 2^-24, as at::uniform_real_distribution<float>) is below
// threshold, else 0, for n numbers s[0..n) of the state, tempered.
template <class T>
void write_mask(const uint32_t* s, int64_t n, float threshold, T keep_value, T* m) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t y = s[i];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    const float u = static_cast<float>(y & 0xFFFFFFu) * (1.0f / 16777216.0f);
    m[i] = u < threshold ? keep_value : T(0);
  }
}

// The scaled mask of dropout for x (float32 or bfloat16, dense, on the CPU),
// drawn from g (or the default generator) as uniform_, lt_, mul_ and a
// conversion to x's dtype would make it.
template <class T>
at::Tensor bulk_mask(const at::Tensor& x, double p, c10::optional<at::Generator> g) {
  RECORD_FUNCTION("ddpm::dropout_mask", std::vector<c10::IValue>({x}));
  at::Tensor m = at::empty_like(x);
  const int64_t n = m.numel();
  T* out = reinterpret_cast<T*>(m.data_ptr());
  // lt_ compares with 1 - p as a float32, mul_ scales by 1 / (1 - p) as a
  // float32, and the conversion rounds that to T.
  const float threshold = static_cast<float>(1 - p);
  const T keep_value = static_cast<T>(static_cast<float>(1 / (1 - p)));
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(g, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  at::mt19937 engine = gen->engine();
  at::mt19937_data_pod d = engine.data();
  // A call of the engine takes the next number of the state and, when the
  // state is used up, first makes the next one: left_ - 1 numbers remain.
  for (int64_t i = 0; i < n;) {
    if (d.left_ == 1) {
      next_state(d.state_.data());
      d.left_ = kN + 1;
      d.next_ = 0;
    }
    const int64_t take = std::min<int64_t>(n - i, d.left_ - 1);
    write_mask(d.state_.data() + d.next_, take, threshold, keep_value, out + i);
    d.next_ += static_cast<uint32_t>(take);
    d.left_ -= static_cast<int>(take);
    i += take;
  }
  engine.set_data(d);
  gen->set_engine(engine);
  return m;
}

// Dropout's scaled mask for x on a CPU without MKL: the bulk draw for a
// dense float32 or bfloat16 map, else the same mask through libtorch's ops
// (the uniform draw float32, float64 for a float64 x, whatever x's dtype, so
// a bf16 x gets the exact rate).
at::Tensor cpu_mask(const at::Tensor& x, double p, c10::optional<at::Generator> g) {
  const bool dense = x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (dense && x.scalar_type() == at::kFloat) return bulk_mask<float>(x, p, g);
  if (dense && x.scalar_type() == at::kBFloat16) return bulk_mask<at::BFloat16>(x, p, g);
  at::Tensor u = at::empty_like(x, x.options().dtype(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
  u.uniform_(0, 1, g);
  u.lt_(1 - p).mul_(1 / (1 - p));
  return u.to(x.scalar_type());
}

}  // namespace

extern "C" ddpm_error ddpm_dropout(ddpm_mode mode, ddpm_tensor x, double p, int32_t train, ddpm_generator g,
                                   ddpm_tensor* out) {
  DDPM_TRY(mode, {
    TORCH_CHECK(p >= 0 && p <= 1, "dropout probability must be in [0, 1], got ", p);
    const at::Tensor& t = ref(x);
    if (!train || p == 0) {
      *out = wrap(t.clone());
    } else if (p == 1) {
      *out = wrap(t * 0);
    } else if (t.device().is_cpu() && !AT_MKL_ENABLED()) {
      *out = wrap(t * cpu_mask(t, p, ddpm::generator(g)));
    } else {
      // A generator-driven mask keeps dropout reproducible from a seed.
      at::Tensor keep = at::empty_like(t).bernoulli_(1 - p, ddpm::generator(g));
      *out = wrap(t * keep / (1 - p));
    }
  });
}
