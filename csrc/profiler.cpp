// profiler.cpp: time spent in each libtorch operator, the shim's counterpart
// of torch.profiler's key_averages() table.
//
// A global RecordFunction callback (global, not thread-local: Go runs the
// calls of one goroutine on whichever OS thread it is on) times every
// operator and autograd backward function on the thread that dispatches it.
// Nested operators (aten::conv2d calls aten::convolution, which calls the
// kernel's operator) are tracked with a per-thread stack, so each record has
// a total time and a self time (total less the time of the operators it
// called). Work that an operator hands to OpenMP's threads counts towards
// the operator that waits for it. Records are aggregated by name under a
// mutex; with the callback installed every operator call costs about a
// microsecond more.
#include <ATen/record_function.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

#include "shim.h"

namespace {

struct OpTotals {
  int64_t calls = 0;
  int64_t total_ns = 0;
  int64_t self_ns = 0;
};

struct Frame : at::ObserverContext {
  int64_t start_ns = 0;
  int64_t child_ns = 0;
  Frame* parent = nullptr;
};

std::mutex mu;
bool running = false;
at::CallbackHandle handle = 0;
std::unordered_map<std::string, OpTotals> totals;
thread_local Frame* top = nullptr;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) {
  auto f = std::make_unique<Frame>();
  f->parent = top;
  top = f.get();
  f->start_ns = now_ns();
  return f;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  int64_t end = now_ns();
  auto* f = static_cast<Frame*>(ctx);
  if (f == nullptr) return;
  int64_t total = end - f->start_ns;
  if (f->parent != nullptr) f->parent->child_ns += total;
  // Operators end on their thread in the reverse order they started (even
  // when one throws), so f is the top of this thread's stack.
  top = f->parent;
  std::lock_guard<std::mutex> lock(mu);
  OpTotals& t = totals[fn.name()];
  t.calls++;
  t.total_ns += total;
  t.self_ns += total - f->child_ns;
}

// The table's text: one line per operator, "name\tcalls\ttotal_ns\tself_ns".
std::string table() {
  std::ostringstream out;
  for (const auto& [name, t] : totals) {
    std::string n = name;
    for (char& c : n) {
      if (c == '\t' || c == '\n') c = ' ';
    }
    out << n << '\t' << t.calls << '\t' << t.total_ns << '\t' << t.self_ns << '\n';
  }
  return out.str();
}

}  // namespace

extern "C" {

ddpm_error ddpm_profiler_start(void) {
  DDPM_TRY_PLAIN({
    std::lock_guard<std::mutex> lock(mu);
    TORCH_CHECK(!running, "the operator profiler is already running");
    totals.clear();
    handle = at::addGlobalCallback(
        at::RecordFunctionCallback(on_start, on_end)
            .needsInputs(false)
            .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
    running = true;
  });
}

ddpm_error ddpm_profiler_stop(char** out) {
  DDPM_TRY_PLAIN({
    TORCH_CHECK(out != nullptr, "profiler: null output");
    at::CallbackHandle h;
    {
      std::lock_guard<std::mutex> lock(mu);
      TORCH_CHECK(running, "the operator profiler is not running");
      h = handle;
      running = false;
    }
    at::removeCallback(h);  // waits for nothing: calls in flight may still end
    std::lock_guard<std::mutex> lock(mu);
    std::string t = table();
    totals.clear();
    char* s = static_cast<char*>(std::malloc(t.size() + 1));
    TORCH_CHECK(s != nullptr, "profiler: out of memory");
    std::memcpy(s, t.c_str(), t.size() + 1);
    *out = s;
  });
}

}  // extern "C"
