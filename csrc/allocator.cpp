// allocator.cpp: the caching allocator for CPU tensor memory, and the BLAS
// thread count.
//
// libtorch's default CPU allocator hands every tensor to malloc and back.
// Feature maps of a few MiB and more are above glibc's mmap threshold or at
// the top of its heap, so each one comes fresh from the kernel: a training
// step or a denoising step then spends a large part of its time in page
// faults, zeroing pages it will overwrite anyway (measured: ~30,000 minor
// faults and a third of the CPU time of a small U-Net forward pass at batch
// 64). Diffusion loops repeat the same shapes step after step, so this
// allocator keeps freed blocks of 64 KiB and more, keyed by their size
// rounded up to a page, and hands them out again: after the first step no
// tensor memory comes from the kernel. Smaller blocks go to malloc as before.
//
// The memory held idle is bounded twice: by the largest amount the cached
// size classes ever had in use at once (so the pool never exceeds twice the
// peak working set, and a steady loop keeps exactly its working set), and by
// a limit, DDPM_CPU_CACHE_MB at load time or ddpm_cpu_cache_set_limit (0
// turns caching off). ddpm_cpu_cache_empty gives everything idle back.
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <dlfcn.h>

#include <algorithm>
#include <climits>
#include <cstdint>
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
    trim_locked(0);
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mu_);
    trim_locked(cached_);
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
    if (p == nullptr) p = c10::alloc_cpu(size);  // throws c10::Error when out of memory
    self->record(p, size);
    return {p, p, &release, cpu};
  }

  // A cached block of exactly size, or nullptr.
  void* reuse(size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size);
    if (it == free_.end() || it->second.empty()) {
      misses_++;
      return nullptr;
    }
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= static_cast<int64_t>(size);
    hits_++;
    return p;
  }

  void record(void* p, size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = size;
    in_use_ += static_cast<int64_t>(size);
    peak_in_use_ = std::max(peak_in_use_, in_use_);
  }

  void put(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) {  // cannot happen: only our blocks carry release
      c10::free_cpu(p);
      return;
    }
    const size_t size = it->second;
    sizes_.erase(it);
    in_use_ -= static_cast<int64_t>(size);
    const int64_t bound = std::min(limit_, peak_in_use_);
    if (static_cast<int64_t>(size) > bound) {
      c10::free_cpu(p);
      return;
    }
    trim_locked(static_cast<int64_t>(size));
    free_[size].push_back(p);
    cached_ += static_cast<int64_t>(size);
  }

  // Frees idle blocks until room more bytes fit under the bound.
  void trim_locked(int64_t room) {
    const int64_t bound = std::min(limit_, peak_in_use_);
    for (auto it = free_.begin(); it != free_.end() && cached_ + room > bound;) {
      auto& blocks = it->second;
      while (!blocks.empty() && cached_ + room > bound) {
        c10::free_cpu(blocks.back());
        blocks.pop_back();
        cached_ -= static_cast<int64_t>(it->first);
      }
      it = blocks.empty() ? free_.erase(it) : std::next(it);
    }
  }

  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // idle blocks by size
  std::unordered_map<void*, size_t> sizes_;              // blocks in use
  int64_t limit_;
  int64_t in_use_ = 0, cached_ = 0, peak_in_use_ = 0, hits_ = 0, misses_ = 0;
};

// The limit from DDPM_CPU_CACHE_MB, or no limit beyond the peak.
int64_t limit_from_env() {
  const char* v = std::getenv("DDPM_CPU_CACHE_MB");
  if (v == nullptr || *v == '\0') return INT64_MAX;
  char* end = nullptr;
  long long mb = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || mb < 0) return INT64_MAX;  // unreadable: the default
  return static_cast<int64_t>(mb) << 20;
}

CachingCPUAllocator* the_allocator() {
  static CachingCPUAllocator* a = new CachingCPUAllocator(limit_from_env());
  return a;
}

void CachingCPUAllocator::release(void* ptr) { the_allocator()->put(ptr); }

// OpenBLAS (Debian's libblas) keeps its own thread pool, sized to the
// machine, apart from libtorch's intra-op threads: with one intra-op thread
// its idle workers still spin on the other cores. The shim keeps the two
// counts equal unless OPENBLAS_NUM_THREADS says otherwise.
void set_blas_threads(int n) {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  using setter = void (*)(int);
  static auto set = reinterpret_cast<setter>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set != nullptr) set(n);
}

// Installed when the library loads, before any tensor of ours exists.
// Tensors allocated earlier keep their own deleter, so mixing is safe.
const bool installed = [] {
  c10::SetCPUAllocator(the_allocator(), /*priority=*/1);
  set_blas_threads(at::get_num_threads());
  return true;
}();

}  // namespace

namespace ddpm {
void apply_blas_threads(int n) { set_blas_threads(n); }
}  // namespace ddpm

extern "C" {

ddpm_error ddpm_cpu_cache_stats(ddpm_cache_stats* out) {
  DDPM_TRY_PLAIN(TORCH_CHECK(out != nullptr, "null stats"); the_allocator()->stats(out));
}

ddpm_error ddpm_cpu_cache_set_limit(int64_t bytes) {
  DDPM_TRY_PLAIN(TORCH_CHECK(bytes >= 0, "cache limit must be at least 0, got ", bytes);
                 the_allocator()->set_limit(bytes));
}

ddpm_error ddpm_cpu_cache_empty(void) { DDPM_TRY_PLAIN(the_allocator()->empty()); }

}  // extern "C"
