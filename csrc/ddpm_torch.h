/*
 * ddpm_torch.h: the plain-C contract between Go and libtorch.
 *
 * Rules that hold for every function below:
 *  - The return value is NULL on success. On failure it is a malloc'd,
 *    NUL-terminated message (libtorch's own text where libtorch failed) that
 *    the caller owns and releases with free(). The one exception: when even
 *    the message cannot be allocated, the error is the static string of
 *    ddpm_out_of_memory_error(), which is never NULL and must not be freed.
 *    No C++ exception crosses this boundary and no error is kept in
 *    thread-local state.
 *  - Results come back through out-parameters. Out-parameters are written only
 *    on success.
 *  - Every ddpm_tensor written to an out-parameter is a new handle owned by the
 *    caller, released with ddpm_tensor_free. Handles passed in are borrowed.
 *  - Functions whose behaviour depends on libtorch's per-thread modes (grad
 *    mode, inference mode) take a ddpm_mode as their first argument and set
 *    that mode for the duration of the call only. The caller's OS thread is
 *    never left in a different mode, so callers that hop between threads
 *    (goroutines) always get the mode they asked for.
 *
 * This header is plain C99: it must compile with `cc -x c`.
 */
#ifndef DDPM_TORCH_H
#define DDPM_TORCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ddpm_tensor_s* ddpm_tensor;       /* owns one at::Tensor */
typedef struct ddpm_generator_s* ddpm_generator; /* owns one at::Generator */
typedef char* ddpm_error;                         /* NULL = ok; else free() it */

/* Autograd mode applied for the duration of one call: one of the three
 * values below, optionally OR-ed with one autocast flag (mixed precision, as
 * torch.autocast). Under autocast, on every device and libtorch version:
 * matmul, bmm, linear, conv2d and the products of ddpm_attention run in the
 * lower precision (float32 inputs, weights included, are cast for the call);
 * group_norm, softmax, log_softmax, mse_loss, cross_entropy, the softmax of
 * ddpm_attention and the accumulating reductions of ddpm_reduce take their
 * bfloat16/float16 inputs in float32 and return float32. Elementwise ops
 * follow type promotion (bfloat16 + float32 is float32). */
typedef int32_t ddpm_mode;
enum {
  DDPM_MODE_GRAD = 0,      /* record operations for autograd */
  DDPM_MODE_NO_GRAD = 1,   /* like torch.no_grad() */
  DDPM_MODE_INFERENCE = 2, /* like torch.inference_mode() */
  DDPM_AUTOCAST_BF16 = 16, /* autocast to bfloat16 (CPU and CUDA) */
  DDPM_AUTOCAST_FP16 = 32  /* autocast to float16 (CUDA only) */
};

/* Element types; the values are c10::ScalarType's. */
typedef enum {
  DDPM_UINT8 = 0,
  DDPM_INT64 = 4,
  DDPM_FLOAT16 = 5,
  DDPM_FLOAT32 = 6,
  DDPM_FLOAT64 = 7,
  DDPM_BOOL = 11,
  DDPM_BFLOAT16 = 15
} ddpm_dtype;

typedef enum { DDPM_CPU = 0, DDPM_CUDA = 1 } ddpm_device_type;

#define DDPM_MAX_DIMS 16

/* What ddpm_tensor_meta reports about a tensor. */
typedef struct {
  int64_t ndim;
  int64_t shape[DDPM_MAX_DIMS];
  int32_t dtype;        /* ddpm_dtype */
  int32_t device_type;  /* ddpm_device_type */
  int32_t device_index; /* -1 for CPU */
  int32_t requires_grad;
  int32_t is_leaf;
  int32_t is_contiguous;
} ddpm_meta;

/* ---- library ----------------------------------------------------------- */

/* The error returned in place of a message that could not be allocated. It
 * points to static storage (the same pointer on every call): compare an
 * error with it before calling free(), and never write through it. */
ddpm_error ddpm_out_of_memory_error(void);

/* Writes libtorch's version ("1.13.1") into buf (always NUL-terminated). */
void ddpm_version(char* buf, size_t cap);
/* Number of usable CUDA devices (0 on a CPU-only libtorch). */
int64_t ddpm_cuda_device_count(void);
/* Whether the CUDA backend is compiled in and a device is present. */
int32_t ddpm_cuda_available(void);
/* Whether this CPU has bfloat16 arithmetic instructions (x86 AVX512_BF16 or
 * AMX-BF16, ARM BF16), checked at run time. Without them libtorch still
 * computes in bfloat16, by converting to float32 and back, which is slower
 * than float32 itself. */
int32_t ddpm_cpu_has_bf16(void);
/* Intra-op thread count (OpenBLAS follows it unless OPENBLAS_NUM_THREADS is
 * set). libtorch's OpenMP keeps it per OS thread; the shim
 * makes it process-wide by applying the last value set here on whichever
 * thread each later call runs. */
ddpm_error ddpm_set_num_threads(int32_t n);
int32_t ddpm_get_num_threads(void);
/* Writes how the BLAS under libtorch's CPU matrix products describes
 * itself into buf (always NUL-terminated): OpenBLAS's configuration line,
 * which names the kernels it runs ("OpenBLAS 0.3.21 ... DYNAMIC_ARCH ...
 * SkylakeX ..."), or nothing for another BLAS. */
void ddpm_blas_config(char* buf, size_t cap);

/* CPU tensor memory: blocks of 64 KiB and more are cached and reused by size
 * (see csrc/allocator.cpp). Sizes are in bytes, rounded up to pages. */
typedef struct {
  int64_t in_use_bytes;      /* held by live tensors */
  int64_t cached_bytes;      /* idle, kept for reuse */
  int64_t peak_in_use_bytes; /* the most ever in use at once */
  int64_t limit_bytes;       /* the most kept idle */
  int64_t hits;              /* allocations served from the cache */
  int64_t misses;            /* allocations that needed new memory */
} ddpm_cache_stats;
ddpm_error ddpm_cpu_cache_stats(ddpm_cache_stats* out);
/* Keeps at most bytes idle (0 turns caching off), freeing the excess now. */
ddpm_error ddpm_cpu_cache_set_limit(int64_t bytes);
/* Gives every idle block back to the system. */
ddpm_error ddpm_cpu_cache_empty(void);
/* Gives back the idle blocks not taken in the last idle_ms milliseconds
 * (their count of bytes in *freed, when not null), then malloc's free
 * pages. */
ddpm_error ddpm_cpu_cache_trim(int64_t idle_ms, int64_t* freed);

/* Forms the shim derives from float32 CPU weights and keeps while they live
 * unchanged, for calls without autograd: bfloat16 copies under bf16
 * autocast, and the forms ddpm_conv2d's kernels take (Winograd transforms,
 * 1x1 transposes, reordered taps; see csrc/weight_cache.cpp). bytes counts
 * those being made too. */
typedef struct {
  int64_t bytes;       /* held by the forms */
  int64_t forms;       /* forms kept (live weights' and, until swept, dead ones') */
  int64_t limit_bytes; /* the most they may hold: a form that would pass it is not made */
} ddpm_weight_forms;
ddpm_error ddpm_weight_cache_stats(ddpm_weight_forms* out);
/* Holds the forms to at most bytes (0: none kept), dropping dead weights'
 * forms and then others until they fit. */
ddpm_error ddpm_weight_cache_set_limit(int64_t bytes);

/* The operator profiler (see csrc/profiler.cpp): between start and stop,
 * every libtorch operator and autograd backward function called on any
 * thread is timed. Stop hands back one line per operator,
 * "name\tcalls\ttotal_ns\tself_ns\n", in a string the caller frees; self
 * time leaves out the operators it called. Starting twice, or stopping when
 * not started, is an error. */
ddpm_error ddpm_profiler_start(void);
ddpm_error ddpm_profiler_stop(char** table);

/* ---- tensor lifetime and inspection ------------------------------------ */

/* Releases the handle; NULL is accepted and ignored. */
void ddpm_tensor_free(ddpm_tensor t);
/* Shape, dtype, device and autograd flags. Fails if ndim > DDPM_MAX_DIMS. */
ddpm_error ddpm_tensor_meta(ddpm_tensor t, ddpm_meta* out);
/* New tensor of dtype/shape on device, filled from nbytes of host memory at
 * data (row-major). nbytes must equal numel * element size. */
ddpm_error ddpm_from_data(const void* data, int64_t nbytes, int32_t dtype,
                          const int64_t* shape, int64_t ndim,
                          int32_t device_type, int32_t device_index,
                          ddpm_tensor* out);
/* Copies the tensor's elements (moved to CPU, made contiguous, same dtype)
 * into dst, which holds nbytes; nbytes must equal numel * element size. */
ddpm_error ddpm_copy_to_host(ddpm_tensor t, void* dst, int64_t nbytes);
/* Value of a one-element tensor as a double. */
ddpm_error ddpm_item(ddpm_tensor t, double* out);

/* ---- creation ---------------------------------------------------------- */

/* Tensor of shape filled with value. */
ddpm_error ddpm_full(ddpm_mode mode, const int64_t* shape, int64_t ndim,
                     double value, int32_t dtype, int32_t device_type,
                     int32_t device_index, ddpm_tensor* out);
/* 0, 1, ..., n-1. */
ddpm_error ddpm_arange(ddpm_mode mode, int64_t n, int32_t dtype,
                       int32_t device_type, int32_t device_index,
                       ddpm_tensor* out);

/* ---- random numbers ---------------------------------------------------- */

/* A generator for device, seeded with seed. Same seed, same numbers. */
ddpm_error ddpm_generator_new(uint64_t seed, int32_t device_type,
                              int32_t device_index, ddpm_generator* out);
void ddpm_generator_free(ddpm_generator g);
/* The generator's full state as a uint8 CPU tensor (for checkpoints). */
ddpm_error ddpm_generator_get_state(ddpm_generator g, ddpm_tensor* out);
ddpm_error ddpm_generator_set_state(ddpm_generator g, ddpm_tensor state);

typedef enum {
  DDPM_RAND_NORMAL = 0,  /* N(0, 1) */
  DDPM_RAND_UNIFORM = 1  /* U[0, 1) */
} ddpm_rand_kind;
/* Random tensor of shape; g may be NULL for libtorch's default generator. */
ddpm_error ddpm_rand(ddpm_mode mode, int32_t kind, const int64_t* shape,
                     int64_t ndim, int32_t dtype, int32_t device_type,
                     int32_t device_index, ddpm_generator g, ddpm_tensor* out);
/* Integers uniform in [low, high), int64. */
ddpm_error ddpm_randint(ddpm_mode mode, int64_t low, int64_t high,
                        const int64_t* shape, int64_t ndim,
                        int32_t device_type, int32_t device_index,
                        ddpm_generator g, ddpm_tensor* out);
/* Bernoulli draws with per-element probabilities p (same shape/dtype). */
ddpm_error ddpm_bernoulli(ddpm_mode mode, ddpm_tensor p, ddpm_generator g,
                          ddpm_tensor* out);
/* Inverted dropout: zeroes elements with probability p and scales the rest
 * by 1/(1-p) when train != 0; returns a copy of x otherwise. */
ddpm_error ddpm_dropout(ddpm_mode mode, ddpm_tensor x, double p, int32_t train,
                        ddpm_generator g, ddpm_tensor* out);

/* ---- elementwise ------------------------------------------------------- */

typedef enum {
  DDPM_NEG = 0, DDPM_ABS, DDPM_SQRT, DDPM_RSQRT, DDPM_EXP, DDPM_LOG,
  DDPM_SIN, DDPM_COS, DDPM_SILU, DDPM_SIGMOID, DDPM_TANH, DDPM_SQUARE,
  DDPM_RELU, DDPM_ISFINITE, DDPM_LOGICAL_NOT, DDPM_GELU
} ddpm_unary_op;
ddpm_error ddpm_unary(ddpm_mode mode, int32_t op, ddpm_tensor a,
                      ddpm_tensor* out);

typedef enum {
  DDPM_ADD = 0, DDPM_SUB, DDPM_MUL, DDPM_DIV, DDPM_POW, DDPM_MAXIMUM,
  DDPM_MINIMUM, DDPM_EQ, DDPM_NE, DDPM_LT, DDPM_LE, DDPM_GT, DDPM_GE,
  DDPM_LOGICAL_AND, DDPM_LOGICAL_OR
} ddpm_binary_op;
/* a op b with broadcasting. */
ddpm_error ddpm_binary(ddpm_mode mode, int32_t op, ddpm_tensor a,
                       ddpm_tensor b, ddpm_tensor* out);
/* a op s for a scalar s. */
ddpm_error ddpm_binary_scalar(ddpm_mode mode, int32_t op, ddpm_tensor a,
                              double s, ddpm_tensor* out);
/* In place: a = a op b (arithmetic ops only). */
ddpm_error ddpm_binary_(ddpm_mode mode, int32_t op, ddpm_tensor a,
                        ddpm_tensor b);
/* In place: a = a op s (arithmetic ops only). */
ddpm_error ddpm_binary_scalar_(ddpm_mode mode, int32_t op, ddpm_tensor a,
                               double s);
/* In place: dst = src (broadcast, dtype/device converted). */
ddpm_error ddpm_copy_(ddpm_mode mode, ddpm_tensor dst, ddpm_tensor src);
/* In place: a = a + w * (b - a). */
ddpm_error ddpm_lerp_(ddpm_mode mode, ddpm_tensor a, ddpm_tensor b, double w);
/* Clamp to [lo, hi]; has_lo/has_hi = 0 leaves that side open. */
ddpm_error ddpm_clamp(ddpm_mode mode, ddpm_tensor a, int32_t has_lo, double lo,
                      int32_t has_hi, double hi, ddpm_tensor* out);
/* cond ? a : b, broadcast. */
ddpm_error ddpm_where(ddpm_mode mode, ddpm_tensor cond, ddpm_tensor a,
                      ddpm_tensor b, ddpm_tensor* out);

/* ---- reductions -------------------------------------------------------- */

typedef enum {
  DDPM_SUM = 0, DDPM_MEAN, DDPM_AMAX, DDPM_AMIN, DDPM_VAR, DDPM_VAR_POP,
  DDPM_STD, DDPM_NORM2, DDPM_ARGMAX
} ddpm_reduce_op;
/* Reduces over dims (all dims when ndims == 0). DDPM_VAR and DDPM_STD are
 * unbiased (n-1); DDPM_VAR_POP divides by n. DDPM_ARGMAX takes exactly one
 * dim (or none for the flattened tensor). */
ddpm_error ddpm_reduce(ddpm_mode mode, int32_t op, ddpm_tensor a,
                       const int64_t* dims, int64_t ndims, int32_t keepdim,
                       ddpm_tensor* out);

/* ---- shape ------------------------------------------------------------- */

ddpm_error ddpm_reshape(ddpm_mode mode, ddpm_tensor a, const int64_t* shape,
                        int64_t ndim, ddpm_tensor* out);
ddpm_error ddpm_expand(ddpm_mode mode, ddpm_tensor a, const int64_t* shape,
                       int64_t ndim, ddpm_tensor* out);
ddpm_error ddpm_permute(ddpm_mode mode, ddpm_tensor a, const int64_t* dims,
                        int64_t ndim, ddpm_tensor* out);
ddpm_error ddpm_transpose(ddpm_mode mode, ddpm_tensor a, int64_t d0,
                          int64_t d1, ddpm_tensor* out);
/* Elements dim[start : start+length]. */
ddpm_error ddpm_narrow(ddpm_mode mode, ddpm_tensor a, int64_t dim,
                       int64_t start, int64_t length, ddpm_tensor* out);
ddpm_error ddpm_unsqueeze(ddpm_mode mode, ddpm_tensor a, int64_t dim,
                          ddpm_tensor* out);
ddpm_error ddpm_squeeze(ddpm_mode mode, ddpm_tensor a, int64_t dim,
                        ddpm_tensor* out);

typedef enum { DDPM_CONTIGUOUS = 0, DDPM_CHANNELS_LAST = 1 } ddpm_memory_format;
/* A tensor laid out in format (returns an alias when it already is). */
ddpm_error ddpm_contiguous(ddpm_mode mode, ddpm_tensor a, int32_t format,
                           ddpm_tensor* out);

/* Joins n tensors along dim (stack = new dim). */
ddpm_error ddpm_cat(ddpm_mode mode, const ddpm_tensor* ts, int64_t n,
                    int64_t dim, int32_t stack, ddpm_tensor* out);
/* Splits a along dim into pieces of the given sizes (summing to the dim's
 * size). outs must have room for nsizes handles. */
ddpm_error ddpm_split(ddpm_mode mode, ddpm_tensor a, const int64_t* sizes,
                      int64_t nsizes, int64_t dim, ddpm_tensor* outs);
ddpm_error ddpm_index_select(ddpm_mode mode, ddpm_tensor a, int64_t dim,
                             ddpm_tensor index, ddpm_tensor* out);
ddpm_error ddpm_gather(ddpm_mode mode, ddpm_tensor a, int64_t dim,
                       ddpm_tensor index, ddpm_tensor* out);

/* ---- conversion and autograd ------------------------------------------- */

/* Converts dtype and/or device (dtype < 0 keeps the dtype). */
ddpm_error ddpm_to(ddpm_mode mode, ddpm_tensor a, int32_t dtype,
                   int32_t device_type, int32_t device_index,
                   ddpm_tensor* out);
ddpm_error ddpm_clone(ddpm_mode mode, ddpm_tensor a, ddpm_tensor* out);
/* Shares storage, cut from the graph. */
ddpm_error ddpm_detach(ddpm_tensor a, ddpm_tensor* out);
ddpm_error ddpm_set_requires_grad(ddpm_tensor a, int32_t requires_grad);
/* Backpropagates from t (grad may be NULL for a one-element t). Always runs
 * with grad mode on. */
ddpm_error ddpm_backward(ddpm_tensor t, ddpm_tensor grad, int32_t retain_graph);
/* The accumulated gradient; *defined = 0 (and *out untouched) when none. */
ddpm_error ddpm_grad(ddpm_tensor t, ddpm_tensor* out, int32_t* defined);
/* Drops the accumulated gradient (like zero_grad(set_to_none=True)). */
ddpm_error ddpm_zero_grad(ddpm_tensor t);

/* ---- linear algebra and neural-network ops ----------------------------- */

ddpm_error ddpm_matmul(ddpm_mode mode, ddpm_tensor a, ddpm_tensor b,
                       ddpm_tensor* out);
ddpm_error ddpm_bmm(ddpm_mode mode, ddpm_tensor a, ddpm_tensor b,
                    ddpm_tensor* out);
/* x W^T + b; bias may be NULL. */
ddpm_error ddpm_linear(ddpm_mode mode, ddpm_tensor x, ddpm_tensor w,
                       ddpm_tensor bias, ddpm_tensor* out);
/* 2-D convolution of x upsampled by upsample (nearest neighbour, as
 * ddpm_upsample_nearest2d to upsample times x's size; 1: x itself), plus
 * residual when it is not NULL (added to the output as ddpm_binary's
 * DDPM_ADD would); bias may be NULL; stride/padding/dilation are [h, w].
 * Without autograd or autocast, on a float32 channels-last x, on CPUs with
 * AVX-512 or AVX2 (see ddpm_vector_isa), the kernels named in kernels run
 * the convolutions they take: DDPM_CONV_WINOGRAD 3x3 ones with stride 1 and
 * padding 1 (upsampled or not) into channels in sixteens,
 * DDPM_CONV_POINTWISE 1x1 ones with stride 1 and no padding,
 * DDPM_CONV_NARROW 3x3 ones with stride 1 and padding 1 into 1 to 8
 * channels, DDPM_CONV_IM2COL the other 3x3 ones with stride 1 or 2 and
 * padding 1 into channels in sixteens; else libtorch's convolution. */
#define DDPM_CONV_WINOGRAD 1
#define DDPM_CONV_POINTWISE 2
#define DDPM_CONV_NARROW 4
#define DDPM_CONV_IM2COL 8
ddpm_error ddpm_conv2d(ddpm_mode mode, ddpm_tensor x, int64_t upsample,
                       ddpm_tensor w, ddpm_tensor bias, ddpm_tensor residual,
                       const int64_t* stride, const int64_t* padding,
                       const int64_t* dilation, int64_t groups,
                       int32_t kernels, ddpm_tensor* out);
/* The vectors the shim's hand-vectorised CPU kernels (ddpm_conv2d's
 * Winograd, 1x1, narrow and im2col kernels) use on this CPU and build, after
 * limiting them to limit when limit >= 0 (tests run the AVX2 kernels on
 * AVX-512 CPUs this way): one of the values below. */
#define DDPM_VECTORS_NONE 0
#define DDPM_VECTORS_AVX2 1
#define DDPM_VECTORS_AVX512 2
int32_t ddpm_vector_isa(int32_t limit);
/* GroupNorm over (N, C, ...) of x + shift, shift (N, C) added to each
 * channel's values (NULL for none), then SiLU when silu is non-zero;
 * weight/bias may be NULL. Under autocast it computes in float32 and
 * returns float32 (see ddpm_mode), except with silu under bf16 autocast on
 * the CPU, where the shim's kernel turns a bfloat16 x into a bfloat16
 * result. With kernel non-zero the shim's own kernel runs where it can
 * (CPU, no autograd), else libtorch's ops. */
ddpm_error ddpm_group_norm(ddpm_mode mode, ddpm_tensor x, ddpm_tensor shift,
                           int64_t groups, ddpm_tensor weight, ddpm_tensor bias,
                           double eps, int32_t silu, int32_t kernel,
                           ddpm_tensor* out);
ddpm_error ddpm_softmax(ddpm_mode mode, ddpm_tensor a, int64_t dim,
                        ddpm_tensor* out);
ddpm_error ddpm_log_softmax(ddpm_mode mode, ddpm_tensor a, int64_t dim,
                            ddpm_tensor* out);
/* softmax(q k^T * scale) v over the last two dims of (..., L, E) inputs;
 * scale <= 0 means 1/sqrt(E). Uses libtorch's fused kernel where it has one
 * (2.x), the plain composition otherwise; *fused reports which ran. */
ddpm_error ddpm_attention(ddpm_mode mode, ddpm_tensor q, ddpm_tensor k,
                          ddpm_tensor v, double scale, int32_t allow_fused,
                          ddpm_tensor* out, int32_t* fused);
/* Nearest-neighbour resize of (N, C, H, W) to (out_h, out_w). */
ddpm_error ddpm_upsample_nearest2d(ddpm_mode mode, ddpm_tensor x,
                                   int64_t out_h, int64_t out_w,
                                   ddpm_tensor* out);
/* Averages kernel x kernel windows of (N, C, H, W), moved by stride. */
ddpm_error ddpm_avg_pool2d(ddpm_mode mode, ddpm_tensor x, int64_t kernel,
                           int64_t stride, ddpm_tensor* out);

typedef enum { DDPM_REDUCE_NONE = 0, DDPM_REDUCE_MEAN = 1, DDPM_REDUCE_SUM = 2 } ddpm_reduction;
ddpm_error ddpm_mse_loss(ddpm_mode mode, ddpm_tensor a, ddpm_tensor b,
                         int32_t reduction, ddpm_tensor* out);
/* Cross entropy of logits (N, C) against int64 class targets (N). */
ddpm_error ddpm_cross_entropy(ddpm_mode mode, ddpm_tensor logits,
                              ddpm_tensor targets, int32_t reduction,
                              ddpm_tensor* out);


/* ---- optimizer steps (always without autograd recording) -------------- */

/* Hyper-parameters of one AdamW step (Loshchilov & Hutter 2019, as in
 * torch.optim.AdamW): decoupled weight decay, bias-corrected moments. */
typedef struct {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step; /* 1 for the first step */
} ddpm_adamw;

/* One AdamW step over n parameters with their first and second moment
 * buffers (same shapes). Parameters without a gradient are skipped.
 * foreach != 0 uses libtorch's multi-tensor kernels, 0 a per-tensor loop
 * (same arithmetic; kept for the benchmark that justifies the choice). */
ddpm_error ddpm_adamw_step(const ddpm_tensor* params, const ddpm_tensor* exp_avg,
                           const ddpm_tensor* exp_avg_sq, int64_t n,
                           const ddpm_adamw* hp, int32_t foreach);
/* Global L2 norm of the gradients of n parameters, written to *total_norm;
 * when max_norm > 0 and the norm exceeds it, every gradient is scaled by
 * max_norm / (norm + 1e-6) (torch.nn.utils.clip_grad_norm_). */
ddpm_error ddpm_clip_grad_norm(const ddpm_tensor* params, int64_t n,
                               double max_norm, double* total_norm);
/* Exponential moving average: avg = decay * avg + (1 - decay) * value, for
 * n pairs of tensors. */
ddpm_error ddpm_ema_update(const ddpm_tensor* avg, const ddpm_tensor* value,
                           int64_t n, double decay);

/* ---- TorchScript modules ----------------------------------------------- */

typedef struct ddpm_module_s* ddpm_module; /* owns one torch::jit::Module */

/* Loads a TorchScript file (torch.jit.save) onto the device; the module is
 * put in eval mode. A missing file or one that is not a TorchScript archive
 * is an error with libtorch's message. */
ddpm_error ddpm_module_load(const char* path, int32_t device_type,
                            int32_t device_index, ddpm_module* out);
/* Releases the module; NULL is accepted and ignored. */
void ddpm_module_free(ddpm_module m);
/* Calls the module's forward (or the named method when method != NULL) with
 * n tensor arguments (args may be NULL when n == 0). A method of a submodule
 * is named by its path: "layers.forward". The result must be a tensor, or a
 * tuple/list of tensors, whose elements are written to outs in order; outs
 * has room for max_outs handles and *nouts tells how many were written. A
 * result with more than max_outs tensors is an error (saying how many) and
 * writes nothing. When the method fails, the message starts with the failing
 * operation's own error, followed by TorchScript's traceback. */
ddpm_error ddpm_module_forward(ddpm_mode mode, ddpm_module m,
                               const char* method, const ddpm_tensor* args,
                               int64_t n, ddpm_tensor* outs, int64_t max_outs,
                               int64_t* nouts);

/* ---- Data-parallel collectives (c10d) ----------------------------------- */

/* A process group: one of world cooperating processes, joined through a
 * TCPStore at master_addr:port (rank 0 serves it), communicating through
 * Gloo. Collectives must be called by every rank in the same order with
 * tensors of the same shapes. Builds without c10d/Gloo support have every
 * function below, and all but ddpm_dist_available and ddpm_dist_free fail
 * with a message saying so. */
typedef struct ddpm_dist_s* ddpm_dist;

enum { DDPM_DIST_SUM = 0, DDPM_DIST_MEAN = 1 };

/* *out = 1 when this build has distributed support, else 0. */
ddpm_error ddpm_dist_available(int32_t* out);
/* Joins the group as rank (0 <= rank < world). Waits up to timeout_s for all
 * ranks to arrive, then fails with one line naming the rank, the address and
 * how many ranks came ("rank 0: no peer joined at ADDR:PORT within 30s (world
 * size 2)"); the same timeout bounds every later collective, so a dead or
 * stuck peer makes calls fail instead of hanging. */
ddpm_error ddpm_dist_init(const char* master_addr, int32_t port, int32_t rank,
                          int32_t world, double timeout_s, ddpm_dist* out);
/* Leaves the group; NULL is accepted. After a failed collective the group's
 * resources are not reclaimed (that could wait on a dead peer). */
void ddpm_dist_free(ddpm_dist d);
/* This process's rank and the world size (either pointer may be NULL). */
ddpm_error ddpm_dist_rank(ddpm_dist d, int32_t* rank, int32_t* world);
/* Sum (op DDPM_DIST_SUM) or mean (DDPM_DIST_MEAN) over the ranks of each of
 * n tensors, in place. Tensors are packed into buckets of up to 25 MB of one
 * dtype and device, reduced together. */
ddpm_error ddpm_dist_allreduce(ddpm_dist d, const ddpm_tensor* ts, int64_t n,
                               int32_t op);
/* Gradient averaging overlapped with backward. ddpm_dist_grad_sync_new puts
 * a hook on the gradient accumulator of each of n parameters (leaves that
 * require grad); in every later backward, a bucket of gradients (about a
 * sixteenth of the parameters' bytes, between 256 KiB and 25 MB, filled from
 * the last parameter back, the order backward produces them) starts its
 * all-reduce as soon as all its gradients are final, while backward goes on.
 * ddpm_dist_grad_sync_finish, called after backward, starts what is left (a
 * parameter without a gradient takes part with zeros), waits, and writes the
 * means over the ranks into the gradients; it reports the number of buckets
 * and how many of them had started during backward (either pointer may be
 * NULL). The process group must outlive the sync; every rank must make the
 * same calls. */
typedef struct ddpm_grad_sync_s* ddpm_grad_sync;
ddpm_error ddpm_dist_grad_sync_new(ddpm_dist d, const ddpm_tensor* params,
                                   int64_t n, ddpm_grad_sync* out);
ddpm_error ddpm_dist_grad_sync_finish(ddpm_grad_sync g, int64_t* buckets,
                                      int64_t* early);
/* Removes the hooks; NULL is accepted. */
void ddpm_dist_grad_sync_free(ddpm_grad_sync g);
/* Copies rank root's values of n tensors into the same tensors of every other
 * rank (in place; parameters may be passed directly). */
ddpm_error ddpm_dist_broadcast(ddpm_dist d, const ddpm_tensor* ts, int64_t n,
                               int32_t root);
/* Returns once every rank has called it (or fails after the timeout). */
ddpm_error ddpm_dist_barrier(ddpm_dist d);

#ifdef __cplusplus
}
#endif
#endif /* DDPM_TORCH_H */
