// Package torch is the Go side of the project's libtorch shim (csrc/): tensors,
// scopes, devices and dtypes, operations with autograd, random generators,
// TorchScript modules, optimizer kernels, collectives and safetensors I/O. It
// is the only package of the module that uses cgo.
//
// # Scopes and tensor memory
//
// The garbage collector sees neither tensor memory nor GPU memory, so
// tensors are freed explicitly. Every operation that creates tensors is a
// method of a [Scope], and the tensors it returns belong to that scope:
//
//   - [Scope.Close] frees every tensor the scope still owns. It may be called
//     more than once; after it every operation of the scope fails with
//     [ErrClosed]. A training or sampling step runs in one scope.
//   - [Scope.Keep] takes tensors out of the scope (parameters, optimizer
//     state, EMA weights, a result to return): they survive Close and the
//     caller closes them, with [Tensor.Close] or by adopting them into
//     another scope. Tensors of other scopes are ignored.
//   - [Scope.Adopt] makes the scope own tensors created elsewhere. A tensor
//     owned by another scope leaves that scope, whose Close then no longer
//     frees it. Adopting into a closed scope frees the tensors at once.
//   - [Tensor.Close] frees one tensor now (idempotent; nil is fine) and
//     removes it from its scope, so a long-lived scope does not grow.
//   - [Scope.Detach] is autograd's detach, not an ownership rule: it returns
//     a new tensor of the scope that shares the storage without the history.
//     Keep it to hold it beyond the scope.
//
// Errors are sticky, as with bufio.Scanner: the first failing operation
// records its error (a [*Error] with libtorch's message, or ErrClosed) and
// returns nil, and every later operation of the scope returns nil without
// calling libtorch. Check [Scope.Err] after a block of operations;
// [Scope.Fail] lets code built on a scope report its own errors the same
// way. A Scope may be shared by goroutines. A Tensor may be read by many
// goroutines, but must not be closed while another one uses it.
//
// A tensor that is never closed is freed by a runtime.AddCleanup backstop
// when the garbage collector finds it unreachable (generators and modules
// have the same backstop); each one is a leak in the caller, counted by
// [CollectedTensors]. [LiveTensors] is the number of tensor handles alive,
// so a test can assert that a loop of many steps leaks nothing. Every shim
// call keeps its tensor arguments reachable until it returns, so the
// backstop never frees a tensor that a running call uses.
//
// # CPU memory: the caching allocator
//
// The shim installs a caching allocator for libtorch's CPU tensor memory.
// Blocks of 64 KiB and more are kept when their tensors are freed and handed
// out again for the next tensor of the same size (rounded up to a 4 KiB
// page), so a loop that repeats its shapes, as training and sampling do,
// takes no fresh memory from the system after its first iteration. Smaller
// blocks go to malloc directly. The idle bytes are capped by a limit: a
// quarter of the machine's memory (or of the cgroup's, when that is less),
// unless the environment variable DDPM_CPU_CACHE_MB set another figure when
// the library loaded; over the limit, the sizes asked for least recently
// are freed first. [SetCPUCacheLimit] changes the limit at run time (0 turns
// caching off), [EmptyCPUCache] gives every idle block back to the system,
// and [CPUCache] reports the figures. GPU memory is libtorch's own CUDA
// caching allocator's.
//
// What the shim derives from float32 CPU weights for calls without
// autograd (Winograd transforms of 3x3 convolutions, bfloat16 copies under
// bf16 autocast) is kept while the weights live unchanged, within a limit
// of its own (a quarter of the memory, or DDPM_WEIGHT_CACHE_MB):
// [WeightCache] and [SetWeightCacheLimit].
//
// # Threads
//
// [SetNumThreads] sets libtorch's intra-op thread count for the whole
// process; OpenBLAS's own pool follows it unless OPENBLAS_NUM_THREADS is
// set. A program that calls it has made its choice. [DefaultThreads] is the
// count the library picks otherwise: 0 (keep libtorch's, which follows the
// variable) when OMP_NUM_THREADS is set, the CPUs divided by
// LOCAL_WORLD_SIZE (or 1 without it) in a distributed job (RANK set), and
// runtime.NumCPU() else. [UseDefaultThreads] applies it once per process and
// does nothing when the program has already called SetNumThreads
// successfully or DefaultThreads is 0; library packages (the sampling
// pipeline, the trainer) call it, so a program opts out by calling
// SetNumThreads first.
//
// libtorch keeps grad mode, inference mode, autocast and OpenMP's thread
// count per OS thread, and Go moves a goroutine between OS threads between
// two cgo calls, so a mode set by one call could be missing, or a stale one
// present, in the next. Therefore no mode is set on a thread and left there:
// a scope's [Mode] (and its autocast dtype, [NewAutocastScope]) is passed
// explicitly with every call, the shim sets it for that call only and
// restores the thread's previous state, and each call first brings its
// thread to the count last set with SetNumThreads. No goroutine needs runtime.LockOSThread.
// For the same reason errors come back as each call's return value, never
// as thread-local "last error" state.
package torch
