// dist.cpp: data-parallel collectives over c10d (TCPStore rendezvous, Gloo
// process group). Compiled with DDPM_WITH_C10D_GLOO only when the libtorch in use
// has c10d with Gloo and Gloo's headers are installed; otherwise every
// function reports that this build has no distributed support, so the C ABI
// (and the Go API over it) is the same in every build.
#include "shim.h"

#ifdef DDPM_WITH_C10D_GLOO
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#endif

#ifdef DDPM_WITH_C10D_GLOO

struct ddpm_dist_s {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  int rank = 0, world = 1;
  std::chrono::milliseconds timeout{0};
  // Set once a collective failed: the group is then unusable, and tearing it
  // down could wait on a peer that is gone, so ddpm_dist_free leaks it (the
  // process is about to report the error and exit).
  bool broken = false;
};

namespace {

// Buckets hold at most this many bytes (DistributedDataParallel's default
// bucket size).
constexpr int64_t kBucketBytes = 25 << 20;

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The Gloo transport device: the loopback interface when the job runs on
// this machine only (the master address is a loopback one), the interface
// named by GLOO_SOCKET_IFNAME when set (as in PyTorch), else the address this
// machine's hostname resolves to (with libtorch's loopback fallback).
std::shared_ptr<::gloo::transport::Device> make_device(const std::string& master) {
  if (is_loopback(master)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0')
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

std::vector<at::Tensor> tensor_list(const ddpm_tensor* hs, int64_t n) {
  TORCH_CHECK(n >= 0 && (n == 0 || hs != nullptr), "bad tensor list");
  std::vector<at::Tensor> v;
  v.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) v.push_back(ddpm::ref(hs[i]));
  return v;
}

// Groups tensors into buckets of one dtype and device, at most cap bytes
// each (a larger tensor gets a bucket of its own), keeping their order, so
// every rank forms the same buckets from the same list.
std::vector<std::vector<size_t>> buckets(const std::vector<at::Tensor>& ts, int64_t cap = kBucketBytes) {
  std::vector<std::vector<size_t>> out;
  int64_t bytes = 0;
  for (size_t i = 0; i < ts.size(); i++) {
    const auto& t = ts[i];
    TORCH_CHECK(t.defined(), "tensor ", i, " is undefined");
    int64_t b = t.numel() * static_cast<int64_t>(t.element_size());
    bool fits = !out.empty() && bytes + b <= cap &&
                ts[out.back().front()].scalar_type() == t.scalar_type() &&
                ts[out.back().front()].device() == t.device();
    if (!fits) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(i);
    bytes += b;
  }
  return out;
}

// One contiguous CPU buffer holding the bucket's tensors (Gloo here works on
// CPU tensors; a CUDA bucket goes through host memory).
at::Tensor flatten(const std::vector<at::Tensor>& ts, const std::vector<size_t>& idx) {
  std::vector<at::Tensor> flat;
  flat.reserve(idx.size());
  for (size_t i : idx) flat.push_back(ts[i].detach().reshape({-1}));
  at::Tensor buf = flat.size() == 1 ? flat[0].clone() : at::cat(flat);
  return buf.device().is_cpu() ? buf : buf.to(at::kCPU);
}

void unflatten(const at::Tensor& buf, const std::vector<at::Tensor>& ts, const std::vector<size_t>& idx) {
  int64_t off = 0;
  for (size_t i : idx) {
    const at::Tensor& t = ts[i];
    int64_t n = t.numel();
    t.detach().copy_(buf.narrow(0, off, n).view(t.sizes()));
    off += n;
  }
}

// The group's timeout as Go writes a duration: "30s", or "1500ms".
std::string timeout_text(ddpm_dist d) {
  auto ms = d->timeout.count();
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
}

void wait(ddpm_dist d, const c10::intrusive_ptr<c10d::Work>& w) {
  bool done = false;
  try {
    done = w->wait(d->timeout);
  } catch (const c10::Error& e) {
    d->broken = true;
    std::string msg = e.what_without_backtrace();
    if (msg.find("timed out") != std::string::npos)
      msg += " (no answer from every other rank within " + timeout_text(d) + "; a peer is dead or stuck)";
    throw std::runtime_error(msg);
  } catch (...) {
    d->broken = true;
    throw;
  }
  if (!done) {
    d->broken = true;
    throw std::runtime_error("timed out waiting for the other ranks");
  }
}

// Every rank adds itself to a counter in the store, then waits until all
// world ranks have, or fails at deadline naming how many came.
void wait_for_ranks(ddpm_dist d, const std::string& at, std::chrono::steady_clock::time_point deadline) {
  const std::string key = "ddpm/joined";
  int64_t joined = d->store->add(key, 1);
  while (joined < d->world) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string who = "rank " + std::to_string(d->rank) + ": ";
      if (joined <= 1)
        throw std::runtime_error(who + "no peer joined at " + at + " within " + timeout_text(d) + " (world size " +
                                 std::to_string(d->world) + ")");
      throw std::runtime_error(who + "only " + std::to_string(joined) + " of " + std::to_string(d->world) +
                               " ranks joined at " + at + " within " + timeout_text(d));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    joined = d->store->add(key, 0);
  }
}

void check(ddpm_dist d) {
  TORCH_CHECK(d != nullptr, "null process group handle");
  TORCH_CHECK(!d->broken, "the process group failed earlier (a peer is gone or timed out)");
}

std::string where(ddpm_dist d, const char* op) {
  return "rank " + std::to_string(d->rank) + " of " + std::to_string(d->world) + ": " + op + ": ";
}

// Runs body, prefixing any error with the rank and operation and marking the
// group broken.
template <typename F>
void collective(ddpm_dist d, const char* op, F body) {
  check(d);
  try {
    body();
  } catch (const c10::Error& e) {
    d->broken = true;
    throw std::runtime_error(where(d, op) + e.what_without_backtrace());
  } catch (const std::exception& e) {
    d->broken = true;
    throw std::runtime_error(where(d, op) + e.what());
  }
}

// Starts the all-reduce (sum over the ranks) of one flat buffer.
c10::intrusive_ptr<c10d::Work> start_sum(ddpm_dist d, std::vector<at::Tensor>& one) {
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = d->timeout;
  return d->pg->allreduce(one, o);
}

// Sum (or mean) over ranks of every tensor, in place, bucket by bucket: all
// buckets are handed to Gloo at once, so flattening one overlaps the
// transfer of the previous ones.
void allreduce(ddpm_dist d, const std::vector<at::Tensor>& ts, bool mean) {
  auto bs = buckets(ts);
  std::vector<at::Tensor> bufs;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (const auto& b : bs) {
    std::vector<at::Tensor> one{flatten(ts, b)};
    works.push_back(start_sum(d, one));
    bufs.push_back(one[0]);
  }
  for (size_t k = 0; k < bs.size(); k++) {
    wait(d, works[k]);
    if (mean) bufs[k].div_(static_cast<double>(d->world));
    unflatten(bufs[k], ts, bs[k]);
  }
}

}  // namespace

// Gradient averaging overlapped with backward, as DistributedDataParallel
// does it: a post hook on each parameter's gradient accumulator counts the
// gradients of its bucket as backward produces them, and a complete bucket
// is handed to Gloo (which reduces on its own threads) while backward goes
// on. Buckets are filled from the last parameter back, the order backward
// produces gradients in, and started strictly in bucket order, because
// every rank must issue its collectives in the same order.
struct ddpm_grad_sync_s {
  ddpm_dist d = nullptr;
  std::vector<at::Tensor> params;              // in bucket order (reversed)
  std::vector<std::vector<size_t>> buckets;    // indices into params
  std::vector<size_t> bucket_of;               // param -> bucket
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hooks;                // keys of our post hooks

  std::mutex mu;
  std::vector<size_t> waiting;                 // per bucket: gradients still to come
  size_t next = 0;                             // the next bucket to start
  std::vector<at::Tensor> bufs;                // started buckets' buffers
  std::vector<c10::intrusive_ptr<c10d::Work>> works;

  void reset_locked() {
    waiting.clear();
    for (const auto& b : buckets) waiting.push_back(b.size());
    next = 0;
    bufs.clear();
    works.clear();
  }

  // Starts the all-reduce (sum) of bucket k; a parameter without a gradient
  // takes part with zeros.
  void start_locked(size_t k) {
    at::NoGradGuard no_grad;
    for (size_t i : buckets[k]) {
      if (!params[i].grad().defined()) params[i].mutable_grad() = at::zeros_like(params[i]);
    }
    std::vector<at::Tensor> grads;
    for (const auto& p : params) grads.push_back(p.grad());
    std::vector<at::Tensor> one{flatten(grads, buckets[k])};
    collective(d, "gradient all-reduce", [&] { works.push_back(start_sum(d, one)); });
    bufs.push_back(one[0]);
  }

  // Called by the hook of parameter i once its gradient is final.
  void ready(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    size_t b = bucket_of[i];
    if (waiting[b] > 0) waiting[b]--;
    while (next < buckets.size() && waiting[next] == 0) start_locked(next++);
  }

  // Returns how many buckets had started during backward.
  size_t finish() {
    std::lock_guard<std::mutex> lock(mu);
    const size_t early = next;
    try {
      while (next < buckets.size()) start_locked(next++);
      at::NoGradGuard no_grad;
      std::vector<at::Tensor> grads;
      for (const auto& p : params) grads.push_back(p.grad());
      for (size_t k = 0; k < buckets.size(); k++) {
        collective(d, "gradient all-reduce", [&] { wait(d, works[k]); });
        bufs[k].div_(static_cast<double>(d->world));
        unflatten(bufs[k], grads, buckets[k]);
      }
    } catch (...) {
      reset_locked();
      throw;
    }
    reset_locked();
    return early;
  }
};

extern "C" {

ddpm_error ddpm_dist_available(int32_t* out) {
  if (out != nullptr) *out = 1;
  return nullptr;
}

ddpm_error ddpm_dist_init(const char* master_addr, int32_t port, int32_t rank, int32_t world,
                          double timeout_s, ddpm_dist* out) {
  DDPM_TRY_PLAIN({
    TORCH_CHECK(master_addr != nullptr && *master_addr != '\0', "empty master address");
    TORCH_CHECK(port > 0 && port < 65536, "master port ", port, " out of range [1, 65535]");
    TORCH_CHECK(world >= 1, "world size ", world, " must be at least 1");
    TORCH_CHECK(rank >= 0 && rank < world, "rank ", rank, " out of range [0, ", world, ")");
    TORCH_CHECK(timeout_s > 0, "timeout must be positive");
    TORCH_CHECK(out != nullptr, "null out-parameter");
    auto d = std::make_unique<ddpm_dist_s>();
    d->rank = rank;
    d->world = world;
    d->timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    std::string host(master_addr);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = rank == 0;
    so.numWorkers = static_cast<std::size_t>(world);
    // The store's own wait for the workers gives up silently after the
    // timeout (and Gloo's rendezvous then waits as long again to say only
    // "Socket Timeout"), so the ranks count themselves in instead.
    so.waitWorkers = false;
    so.timeout = d->timeout;
    const auto deadline = std::chrono::steady_clock::now() + d->timeout;
    const std::string at = host + ":" + std::to_string(port);
    try {
      d->store = c10::make_intrusive<c10d::TCPStore>(host, so);
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(rank) + " of " + std::to_string(world) +
                               ": rendezvous at " + at + " failed: " + e.what());
    }
    wait_for_ranks(d.get(), at, deadline);
    auto opts = c10d::ProcessGroupGloo::Options::create(d->timeout);
    opts->devices.push_back(make_device(host));
    d->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(d->store, rank, world, opts);
    *out = d.release();
  });
}

void ddpm_dist_free(ddpm_dist d) {
  if (d == nullptr) return;
  if (d->broken) {
    // Leak the group on purpose: its destructor would wait for operations
    // stuck on a dead peer.
    d->pg.release();
    d->store.release();
  }
  try {
    delete d;
  } catch (...) {
  }
}

ddpm_error ddpm_dist_rank(ddpm_dist d, int32_t* rank, int32_t* world) {
  DDPM_TRY_PLAIN({
    TORCH_CHECK(d != nullptr, "null process group handle");
    if (rank != nullptr) *rank = d->rank;
    if (world != nullptr) *world = d->world;
  });
}

ddpm_error ddpm_dist_allreduce(ddpm_dist d, const ddpm_tensor* ts, int64_t n, int32_t op) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    TORCH_CHECK(op == DDPM_DIST_SUM || op == DDPM_DIST_MEAN, "unknown reduction ", op);
    auto v = tensor_list(ts, n);
    collective(d, "all-reduce", [&] { allreduce(d, v, op == DDPM_DIST_MEAN); });
  });
}

ddpm_error ddpm_dist_grad_sync_new(ddpm_dist d, const ddpm_tensor* params, int64_t n,
                                   ddpm_grad_sync* out) {
  DDPM_TRY(DDPM_MODE_GRAD, {
    check(d);
    TORCH_CHECK(out != nullptr, "null out-parameter");
    auto g = std::make_unique<ddpm_grad_sync_s>();
    g->d = d;
    g->params = tensor_list(params, n);
    std::reverse(g->params.begin(), g->params.end());
    int64_t total = 0;
    for (const auto& p : g->params) {
      TORCH_CHECK(p.defined() && p.is_leaf() && p.requires_grad(),
                  "gradient sync: every parameter must be a leaf that requires grad");
      total += p.numel() * static_cast<int64_t>(p.element_size());
    }
    // About 16 buckets: small enough that the first ones start early in
    // backward, few enough that per-call latency stays negligible.
    g->buckets = buckets(g->params, std::clamp<int64_t>(total / 16, 256 << 10, kBucketBytes));
    g->bucket_of.resize(g->params.size());
    for (size_t k = 0; k < g->buckets.size(); k++)
      for (size_t i : g->buckets[k]) g->bucket_of[i] = k;
    g->reset_locked();
    ddpm_grad_sync raw = g.get();
    for (size_t i = 0; i < g->params.size(); i++) {
      auto acc = torch::autograd::impl::grad_accumulator(g->params[i]);
      TORCH_CHECK(acc != nullptr, "gradient sync: parameter ", i, " has no gradient accumulator");
      g->hooks.push_back(acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [raw, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
            raw->ready(i);
            return outputs;
          })));
      g->accumulators.push_back(std::move(acc));
    }
    *out = g.release();
  });
}

ddpm_error ddpm_dist_grad_sync_finish(ddpm_grad_sync g, int64_t* buckets, int64_t* early) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    TORCH_CHECK(g != nullptr, "null gradient sync handle");
    check(g->d);
    const size_t started = g->finish();
    if (buckets != nullptr) *buckets = static_cast<int64_t>(g->buckets.size());
    if (early != nullptr) *early = static_cast<int64_t>(started);
  });
}

void ddpm_dist_grad_sync_free(ddpm_grad_sync g) {
  if (g == nullptr) return;
  try {
    for (size_t i = 0; i < g->hooks.size(); i++) g->accumulators[i]->del_post_hook(g->hooks[i]);
    if (g->d != nullptr && g->d->broken) {
      // Work stuck on a dead peer could block in its destructor.
      for (auto& w : g->works) w.release();
    }
    delete g;
  } catch (...) {
  }
}

ddpm_error ddpm_dist_broadcast(ddpm_dist d, const ddpm_tensor* ts, int64_t n, int32_t root) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    auto v = tensor_list(ts, n);
    TORCH_CHECK(d != nullptr, "null process group handle");
    TORCH_CHECK(root >= 0 && root < d->world, "root ", root, " out of range [0, ", d->world, ")");
    collective(d, "broadcast", [&] {
      auto bs = buckets(v);
      std::vector<at::Tensor> bufs;
      std::vector<c10::intrusive_ptr<c10d::Work>> works;
      for (const auto& b : bs) {
        std::vector<at::Tensor> one{flatten(v, b)};
        c10d::BroadcastOptions o;
        o.rootRank = root;
        o.rootTensor = 0;
        o.timeout = d->timeout;
        works.push_back(d->pg->broadcast(one, o));
        bufs.push_back(one[0]);
      }
      for (size_t k = 0; k < bs.size(); k++) {
        wait(d, works[k]);
        if (d->rank != root) unflatten(bufs[k], v, bs[k]);
      }
    });
  });
}

ddpm_error ddpm_dist_barrier(ddpm_dist d) {
  DDPM_TRY_PLAIN({
    collective(d, "barrier", [&] {
      c10d::BarrierOptions o;
      o.timeout = d->timeout;
      wait(d, d->pg->barrier(o));
    });
  });
}

}  // extern "C"

#else  // no c10d with Gloo in this build

struct ddpm_dist_s {};
struct ddpm_grad_sync_s {};

namespace {
constexpr const char* kNoDist =
    "this build has no distributed support (install libgloo-dev and rebuild)";
}

extern "C" {

ddpm_error ddpm_dist_available(int32_t* out) {
  if (out != nullptr) *out = 0;
  return nullptr;
}

ddpm_error ddpm_dist_init(const char*, int32_t, int32_t, int32_t, double, ddpm_dist*) {
  return ddpm::dup_error(kNoDist);
}

void ddpm_dist_free(ddpm_dist) {}

ddpm_error ddpm_dist_rank(ddpm_dist, int32_t*, int32_t*) { return ddpm::dup_error(kNoDist); }

ddpm_error ddpm_dist_allreduce(ddpm_dist, const ddpm_tensor*, int64_t, int32_t) {
  return ddpm::dup_error(kNoDist);
}

ddpm_error ddpm_dist_grad_sync_new(ddpm_dist, const ddpm_tensor*, int64_t, ddpm_grad_sync*) {
  return ddpm::dup_error(kNoDist);
}

ddpm_error ddpm_dist_grad_sync_finish(ddpm_grad_sync, int64_t*, int64_t*) {
  return ddpm::dup_error(kNoDist);
}

void ddpm_dist_grad_sync_free(ddpm_grad_sync) {}

ddpm_error ddpm_dist_broadcast(ddpm_dist, const ddpm_tensor*, int64_t, int32_t) {
  return ddpm::dup_error(kNoDist);
}

ddpm_error ddpm_dist_barrier(ddpm_dist) { return ddpm::dup_error(kNoDist); }

}  // extern "C"

#endif
