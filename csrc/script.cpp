// script.cpp: loading and calling TorchScript modules (for example a
// pretrained feature extractor for metrics). Everything that needs
// <torch/script.h>, a slow header to compile, stays in this file.
#include <torch/script.h>

#include <string>
#include <vector>

#include "shim.h"

struct ddpm_module_s {
  torch::jit::Module m;
};

namespace {

// The method named by path: "forward", "embed", or "child.grandchild.method"
// for a method of a submodule.
torch::jit::Method resolve_method(const torch::jit::Module& root, const std::string& path) {
  TORCH_CHECK(!path.empty(), "empty method name");
  torch::jit::Module m = root;
  size_t start = 0;
  for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', start)) {
    std::string name = path.substr(start, dot - start);
    bool found = false;
    for (const auto& child : m.named_children()) {
      if (child.name == name) {
        m = child.value;
        found = true;
        break;
      }
    }
    TORCH_CHECK(found, "module has no submodule '", path.substr(0, dot), "' (in method path '",
                path, "')");
    start = dot + 1;
  }
  std::string method = path.substr(start);
  auto found = m.find_method(method);
  TORCH_CHECK(found.has_value(), "module has no method '", path, "'");
  return *found;
}

// TorchScript's interpreter reports a failing operation as a TorchScript
// traceback followed by the original error. The original error is what the
// caller needs, so it is moved to the front and the traceback follows.
std::string interpreter_message(const std::string& msg) {
  static const std::string head = "The following operation failed in the TorchScript interpreter.";
  if (msg.compare(0, head.size(), head) != 0) return msg;
  size_t end = msg.find_last_not_of(" \n");
  if (end == std::string::npos) return msg;
  size_t line = msg.rfind('\n', end);
  if (line == std::string::npos) return msg;
  return msg.substr(line + 1, end - line) + "\n" + msg.substr(0, line);
}

}  // namespace

extern "C" {

ddpm_error ddpm_module_load(const char* path, int32_t device_type, int32_t device_index,
                            ddpm_module* out) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    TORCH_CHECK(path != nullptr, "null path");
    at::Device dev = ddpm::device(device_type, device_index);
    if (dev.is_cuda()) {
      TORCH_CHECK(at::hasCUDA(), "CUDA is not available in this libtorch build");
      if (!dev.has_index()) dev = at::Device(at::kCUDA, 0);
    }
    torch::jit::Module m = torch::jit::load(std::string(path), dev);
    m.eval();
    *out = new ddpm_module_s{std::move(m)};
  });
}

void ddpm_module_free(ddpm_module m) { delete m; }

ddpm_error ddpm_module_forward(ddpm_mode mode, ddpm_module m, const char* method,
                               const ddpm_tensor* args, int64_t n, ddpm_tensor* outs,
                               int64_t max_outs, int64_t* nouts) {
  DDPM_TRY(mode, {
    TORCH_CHECK(m != nullptr, "null module handle");
    TORCH_CHECK(n >= 0 && (n == 0 || args != nullptr), "bad argument list");
    TORCH_CHECK(max_outs >= 0 && (max_outs == 0 || outs != nullptr), "bad result buffer");
    std::string name = method == nullptr ? "forward" : method;
    torch::jit::Method fn = resolve_method(m->m, name);

    std::vector<c10::IValue> inputs;
    inputs.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) inputs.emplace_back(ddpm::ref(args[i]));

    c10::IValue result;
    try {
      result = fn(std::move(inputs));
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, interpreter_message(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      TORCH_CHECK(false, interpreter_message(e.what()));
    }

    std::vector<at::Tensor> ts;
    auto take = [&](const c10::IValue& v, size_t i) {
      TORCH_CHECK(v.isTensor(), "method '", name, "' returned a ", result.tagKind(),
                  " whose element ", i, " is of type ", v.tagKind(), ", not a tensor");
      ts.push_back(v.toTensor());
    };
    if (result.isTensor()) {
      ts.push_back(result.toTensor());
    } else if (result.isTuple()) {
      const auto& elems = result.toTupleRef().elements();
      for (size_t i = 0; i < elems.size(); i++) take(elems[i], i);
    } else if (result.isList()) {
      auto list = result.toListRef();
      for (size_t i = 0; i < list.size(); i++) take(list[i], i);
    } else {
      TORCH_CHECK(false, "method '", name, "' returned a value of type ", result.tagKind(),
                  ", not a tensor or a tuple or list of tensors");
    }
    TORCH_CHECK(static_cast<int64_t>(ts.size()) <= max_outs, "method '", name, "' returned ",
                ts.size(), " tensors, room for ", max_outs);
    // Handles are made only once nothing can fail, so none can leak.
    for (size_t i = 0; i < ts.size(); i++) outs[i] = ddpm::wrap(std::move(ts[i]));
    *nouts = static_cast<int64_t>(ts.size());
  });
}

}  // extern "C"
