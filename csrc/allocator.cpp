// allocator.cpp: the caching allocator for CPU tensor memory.
//
// libtorch's default CPU allocator hands every tensor to malloc and back.
// Feature maps of a few MiB and more are above glibc's mmap threshold or at
// the top of its heap, so each one comes fresh from the kernel: a training
// step or a denoising step then spends part of its time in page faults,
// zeroing pages it will overwrite anyway (measured: ~30,000 minor faults
// per forward pass of the small U-Net at batch 64, which ran ~15% faster
// without them). Diffusion loops repeat the same shapes step after step, so this
// allocator keeps freed blocks of 64 KiB and more, keyed by their size
// rounded up to a page, and hands them out again: after the first step no
// tensor memory comes from the kernel. Smaller blocks go to malloc as before.
// A request takes the smallest idle block of at least its size and at most
// a quarter larger (best fit, exact sizes first): a loop whose batches vary
// in size, as the serving engine's forwards of 1 to 16 rows do, then reuses
// the blocks of its larger batches instead of caching blocks of every size
// (measured: the cache of a 16-client server grew from 350 to 485 MiB
// between its first and tenth minute with exact sizes only).
//
// Like PyTorch's CUDA caching allocator, the cache keeps what the program
// used; the memory it holds idle is capped by a limit, a quarter of the
// machine's (or the cgroup's) memory unless DDPM_CPU_CACHE_MB says
// otherwise at load time or ddpm_cpu_cache_set_limit later (0 turns caching
// off). Over the limit, the sizes used least recently go first.
// ddpm_cpu_cache_empty gives everything idle back; ddpm_cpu_cache_trim gives
// back the blocks that have stayed idle for a while, then malloc's free
// pages (a long-running server calls it now and then, so that its resident
// memory follows its working set instead of its history: a size in steady
// use keeps only the blocks it went on using, not the most it ever held at
// once).
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <map>
#include <new>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "shim.h"

namespace {

constexpr size_t kMinCached = 64 << 10;  // smaller blocks go straight to malloc
constexpr size_t kPage = 4096;

class CachingCPUAllocator final : public c10::Allocator {
 public:
  explicit CachingCPUAllocator(int64_t limit) : limit_(limit) {}

  // libtorch 1.13 declares allocate const, 2.x does not; defining both
  // overrides whichever the base class has (hence no "override").
  c10::DataPtr allocate(size_t n) const { return take(n); }
  c10::DataPtr allocate(size_t n) { return take(n); }
  // Pure virtual in 2.x (used by clone), absent in 1.13.
  void copy_data(void* dest, const void* src, std::size_t count) const {
    std::memcpy(dest, src, count);
  }
  // raw_allocate hands out the data pointer alone; release tells our blocks
  // from malloc's small ones by the table of blocks in use.
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void stats(ddpm_cache_stats* out) {
    std::lock_guard<std::mutex> lock(mu_);
    out->in_use_bytes = in_use_;
    out->cached_bytes = cached_;
    out->peak_in_use_bytes = peak_in_use_;
    out->limit_bytes = limit_;
    out->hits = hits_;
    out->misses = misses_;
  }

  void set_limit(int64_t limit) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = limit;
    evict_locked(limit_);
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mu_);
    evict_locked(0);
  }

  // Frees the blocks idle for more than idle, and forgets the sizes last
  // asked for before that; returns the bytes freed.
  int64_t trim(std::chrono::steady_clock::duration idle) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto cutoff = std::chrono::steady_clock::now() - idle;
    int64_t freed = 0;
    for (auto it = classes_.begin(); it != classes_.end();) {
      SizeClass& c = it->second;
      // Blocks are reused last in, first out: the idle list runs from the
      // longest idle to the most recently freed.
      auto keep = std::find_if(c.idle.begin(), c.idle.end(),
                               [&](const IdleBlock& b) { return b.since > cutoff; });
      for (auto b = c.idle.begin(); b != keep; ++b) c10::free_cpu(b->ptr);
      const int64_t bytes = static_cast<int64_t>(it->first * (keep - c.idle.begin()));
      c.idle.erase(c.idle.begin(), keep);
      cached_ -= bytes;
      freed += bytes;
      if (c.idle.empty() && c.last_time <= cutoff) {
        it = classes_.erase(it);
      } else {
        ++it;
      }
    }
    return freed;
  }

 private:
  static size_t rounded(size_t n) { return (n + kPage - 1) / kPage * kPage; }

  // The allocator is never destroyed (tensors may be freed during exit), so
  // release can always reach it.
  static void release(void* ptr);

  c10::DataPtr take(size_t n) const {
    auto* self = const_cast<CachingCPUAllocator*>(this);
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n < kMinCached) {
      void* p = c10::alloc_cpu(n);
      return {p, p, &c10::free_cpu, cpu};
    }
    const size_t size = rounded(n);
    void* p = self->reuse(size);
    if (p == nullptr) {
      p = c10::alloc_cpu(size);  // throws c10::Error when out of memory
      std::lock_guard<std::mutex> lock(self->mu_);
      self->record_locked(p, size);
    }
    return {p, p, &release, cpu};
  }

  // The smallest cached block of at least size bytes and at most a
  // quarter more, already recorded as in use, or nullptr.
  void* reuse(size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = classes_.try_emplace(size).first;
    it->second.last_use = ++tick_;
    it->second.last_time = std::chrono::steady_clock::now();
    for (; it != classes_.end() && it->first <= size + size / 4; ++it) {
      SizeClass& c = it->second;
      if (c.idle.empty()) continue;
      void* p = c.idle.back().ptr;
      c.idle.pop_back();
      c.last_use = tick_;
      c.last_time = std::chrono::steady_clock::now();
      cached_ -= static_cast<int64_t>(it->first);
      hits_++;
      record_locked(p, it->first);
      return p;
    }
    misses_++;
    return nullptr;
  }

  void record_locked(void* p, size_t size) {
    sizes_[p] = size;
    in_use_ += static_cast<int64_t>(size);
    peak_in_use_ = std::max(peak_in_use_, in_use_);
  }

  void put(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) {  // a small block freed through raw_deleter: malloc's
      c10::free_cpu(p);
      return;
    }
    const size_t bytes = it->second;
    const int64_t size = static_cast<int64_t>(bytes);
    sizes_.erase(it);
    in_use_ -= size;
    if (size > limit_) {
      c10::free_cpu(p);
      return;
    }
    // Called from tensors' destructors, which must not throw: a block the
    // cache has no memory to record is freed instead.
    try {
      evict_locked(limit_ - size);
      classes_[bytes].idle.push_back({p, std::chrono::steady_clock::now()});
    } catch (const std::bad_alloc&) {
      c10::free_cpu(p);
      return;
    }
    cached_ += size;
  }

  // Frees idle blocks, of the sizes used least recently first, until at
  // most target bytes are idle.
  void evict_locked(int64_t target) {
    if (cached_ <= target) return;
    std::vector<std::pair<uint64_t, size_t>> order;  // (last use, size)
    for (const auto& [size, c] : classes_) {
      if (!c.idle.empty()) order.emplace_back(c.last_use, size);
    }
    std::sort(order.begin(), order.end());
    for (const auto& [last_use, size] : order) {
      auto& idle = classes_[size].idle;
      while (!idle.empty() && cached_ > target) {
        c10::free_cpu(idle.back().ptr);
        idle.pop_back();
        cached_ -= static_cast<int64_t>(size);
      }
      if (cached_ <= target) break;
    }
  }

  struct IdleBlock {
    void* ptr;
    std::chrono::steady_clock::time_point since;  // when it was freed
  };

  struct SizeClass {
    std::vector<IdleBlock> idle;  // blocks ready for reuse, in the order freed
    uint64_t last_use = 0;    // tick of the last request for this size
    std::chrono::steady_clock::time_point last_time = std::chrono::steady_clock::now();  // and its time
  };

  std::mutex mu_;
  std::map<size_t, SizeClass> classes_;  // by block size, for best fit
  std::unordered_map<void*, size_t> sizes_;  // blocks in use
  int64_t limit_;
  int64_t in_use_ = 0, cached_ = 0, peak_in_use_ = 0, hits_ = 0, misses_ = 0;
  uint64_t tick_ = 0;
};

CachingCPUAllocator* the_allocator() {
  static CachingCPUAllocator* a =
      new CachingCPUAllocator(ddpm::mb_from_env("DDPM_CPU_CACHE_MB", ddpm::memory_quarter()));
  return a;
}

void CachingCPUAllocator::release(void* ptr) { the_allocator()->put(ptr); }

// Installed when the library loads, before any tensor of ours exists.
// Tensors allocated earlier keep their own deleter, so mixing is safe.
const bool installed = [] {
  c10::SetCPUAllocator(the_allocator(), /*priority=*/1);
  return true;
}();

// Hands malloc's free pages back to the system, where malloc can.
void trim_malloc() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

}  // namespace

namespace ddpm {

int64_t memory_quarter() {
  int64_t total = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  if (FILE* f = std::fopen("/sys/fs/cgroup/memory.max", "r")) {
    long long cg = 0;
    if (std::fscanf(f, "%lld", &cg) == 1 && cg > 0 && cg < total) total = cg;  // "max": no cgroup limit
    std::fclose(f);
  }
  return total > 0 ? total / 4 : int64_t{1} << 30;
}

int64_t mb_from_env(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  long long mb = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || mb < 0) return fallback;  // unreadable: the default
  return static_cast<int64_t>(mb) << 20;
}

}  // namespace ddpm

extern "C" {

ddpm_error ddpm_cpu_cache_stats(ddpm_cache_stats* out) {
  DDPM_TRY_PLAIN(TORCH_CHECK(out != nullptr, "null stats"); the_allocator()->stats(out));
}

ddpm_error ddpm_cpu_cache_set_limit(int64_t bytes) {
  DDPM_TRY_PLAIN(TORCH_CHECK(bytes >= 0, "cache limit must be at least 0, got ", bytes);
                 the_allocator()->set_limit(bytes));
}

// Both first free the derived forms of dead weights (weight_cache.cpp).
ddpm_error ddpm_cpu_cache_empty(void) { DDPM_TRY_PLAIN(ddpm::sweep_weight_cache(); the_allocator()->empty()); }

ddpm_error ddpm_cpu_cache_trim(int64_t idle_ms, int64_t* freed) {
  DDPM_TRY_PLAIN(TORCH_CHECK(idle_ms >= 0, "idle time must be at least 0 ms, got ", idle_ms);
                 ddpm::sweep_weight_cache();
                 int64_t n = the_allocator()->trim(std::chrono::milliseconds(idle_ms));
                 if (freed != nullptr) *freed = n; trim_malloc());
}

}  // extern "C"
