package unet

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/internal/benchcmp"
	"github.com/ddpm-go/ddpm/internal/pyref"
	"github.com/ddpm-go/ddpm/torch"
)

// The benchmarks in this file time the same work in Go and in PyTorch (the
// reference network of testdata/unet_reference.py with the same weights)
// with internal/benchcmp: in one run, on the same number of intra-op
// threads, taking turns round after round.

// The least number of sampling rounds each side runs (b.N if more): a
// round is 50 forward passes, long enough to average out short
// disturbances.
const sampleRounds = 3

// compareScript is the PyTorch side. It loads the weights and warms up;
// then it serves two requests: "sample" is one DDIM run from fresh noise,
// "train K" is K training steps.
//
// In "sample" mode the warm-up is a DDIM run from the Go side's x_T (the
// "x_T" input), whose result goes to the output file for comparison. In
// "train" mode it is one training step on the "x0" input batch, the batch
// of every step.
const compareScript = benchcmp.Serve + `
import math
import torch.nn.functional as F
from unet_reference import UNet, read_safetensors, write_safetensors

cfg_path, weights_path, inputs_path, out_path, threads, mode = sys.argv[1:7]
torch.set_num_threads(int(threads))
cfg = json.load(open(cfg_path))
model = UNet(cfg)
model.load_state_dict(read_safetensors(weights_path), strict=True)
inputs = read_safetensors(inputs_path)

# The linear schedule of Ho et al. 2020, in float64.
T = 1000
betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
alphas_cumprod = torch.cumprod(1 - betas, 0)
sqrt_alphas_cumprod = alphas_cumprod.sqrt()
sqrt_one_minus_alphas_cumprod = (1 - alphas_cumprod).sqrt()

def ddim_timesteps(n):
    # numpy's linspace(0, T-1, n), rounded half to even, noisiest first.
    step = (T - 1) / (n - 1)
    return [T - 1] + [round(i * step) for i in reversed(range(n - 1))]

def sample_ddim(x, steps):
    # Deterministic DDIM (Song et al. 2021, eq. 12 with eta = 0), no
    # clipping: x0 = (x_t - b eps) / a, x_prev = sqrt(abar_prev) x0 +
    # sqrt(1 - abar_prev) eps, abar_prev = 1 after the last step.
    ts = ddim_timesteps(steps)
    n = x.shape[0]
    for i, t in enumerate(ts):
        eps = model(x, torch.full((n,), t, dtype=torch.int64))
        a = torch.full((1,), sqrt_alphas_cumprod[t].item(), dtype=x.dtype)
        b = torch.full((1,), sqrt_one_minus_alphas_cumprod[t].item(), dtype=x.dtype)
        x0 = (x - b * eps) / a
        if i + 1 < len(ts):
            prev = ts[i + 1]
            c_x0 = math.sqrt(alphas_cumprod[prev].item())
            c_eps = sqrt_one_minus_alphas_cumprod[prev].item()
        else:
            c_x0, c_eps = 1.0, 0.0
        x = x0 * c_x0 + eps * c_eps
    return x

def gather(values, t):
    return values.index_select(0, t).reshape(-1, 1, 1, 1).float()

def make_train_step(x0):
    # One iteration of the trainer's loop: uniform t, epsilon MSE per
    # sample, backward, gradient clipping to norm 1, AdamW, EMA.
    params = list(model.parameters())
    try:
        opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=True)
    except TypeError:
        opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    ema = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(1)
    n = x0.shape[0]
    weights = torch.ones(n)

    def step():
        t = torch.randint(0, T, (n,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        xt = gather(sqrt_alphas_cumprod, t) * x0 + gather(sqrt_one_minus_alphas_cumprod, t) * eps
        per_sample = F.mse_loss(model(xt, t), eps, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * weights).mean()
        if not math.isfinite(loss.item()):
            raise RuntimeError("loss is not finite")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_mul_(ema, 0.9999)
            torch._foreach_add_(ema, params, alpha=1 - 0.9999)
        per_sample.detach().double().tolist()
    return step

def sample_request():
    with torch.inference_mode():
        sample_ddim(torch.randn(x_T.shape), 50)
    return 1

def train_request(k):
    for _ in range(int(k)):
        train_step()
    return int(k)

if mode == "sample":
    model.eval()
    x_T = inputs["x_T"]
    with torch.inference_mode():
        write_safetensors(out_path, {"x0": sample_ddim(x_T, 50)})
else:
    model.train()
    train_step = make_train_step(inputs["x0"])
    train_step()
serve({"sample": sample_request, "train": train_request}, int(threads))
`

// startCompareReference writes the model's configuration and weights and the
// inputs into a temporary folder and starts compareScript in mode ("sample"
// or "train") on threads intra-op threads. The output file, for "sample",
// is dir/out.safetensors.
func startCompareReference(b *testing.B, py, dir string, u *UNet, inputs map[string]*torch.Tensor, mode string, threads int) *benchcmp.Reference {
	b.Helper()
	cfgJSON, err := json.Marshal(u.Config())
	if err != nil {
		b.Fatal(err)
	}
	script, err := writeReference(dir, "compare.py", compareScript)
	if err != nil {
		b.Fatal(err)
	}
	paths := map[string]string{}
	for _, name := range []string{"config.json", "weights.safetensors", "inputs.safetensors", "out.safetensors"} {
		paths[name] = filepath.Join(dir, name)
	}
	if err := errors.Join(
		os.WriteFile(paths["config.json"], cfgJSON, 0o644),
		torch.SaveSafetensors(paths["weights.safetensors"], nn.StateDict(u.Params()), nil),
		torch.SaveSafetensors(paths["inputs.safetensors"], inputs, nil),
	); err != nil {
		b.Fatal(err)
	}
	return benchcmp.Start(b, py, dir, script, threads, paths["config.json"], paths["weights.safetensors"],
		paths["inputs.safetensors"], paths["out.safetensors"], strconv.Itoa(threads), mode)
}

func linearSchedule(b *testing.B) *diffusion.Schedule {
	b.Helper()
	sc, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		b.Fatal(err)
	}
	return sc
}

// BenchmarkSampleDDIMVsPyTorch compares sampling throughput: 50 steps of
// deterministic DDIM (η = 0, no clipping, linspace timesteps of the linear
// schedule) on a batch of 64 images of the "small" preset on the CPU, from
// Go's sampler.SampleShape and from the same loop in PyTorch eager float32
// under torch.inference_mode(), with the Go model in float32 and in bf16
// (diffusion.Precision.Wrap; skipped on a CPU without bfloat16
// instructions). Both sides first sample from the same x_T; their images
// must agree (to float32 rounding, or bf16's), which shows that the loops
// compute the same thing.
func BenchmarkSampleDDIMVsPyTorch(b *testing.B) {
	for _, p := range []diffusion.Precision{diffusion.Float32, diffusion.BF16} {
		b.Run(string(p), func(b *testing.B) { sampleDDIMVsPyTorch(b, p) })
	}
}

func sampleDDIMVsPyTorch(b *testing.B, precision diffusion.Precision) {
	const batch, steps = 64, 50
	if err := precision.Check(torch.CPU); err != nil {
		b.Skip(err)
	}
	py := pyref.Python(b)
	u, _ := benchModel(b, "small", nn.Inference)
	model := precision.Wrap(u)
	cfg := u.Config()
	shape := []int64{batch, int64(cfg.InChannels), int64(cfg.ImageSize), int64(cfg.ImageSize)}
	sc := linearSchedule(b)
	opts := sampler.Options{Sampler: sampler.DDIM, Steps: steps}
	// The thread count a user gets (every CPU), on both sides, before the
	// first case's trainer or sampler would set it half-way.
	if err := torch.UseDefaultThreads(); err != nil {
		b.Fatal(err)
	}
	threads := torch.NumThreads()

	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	xT := s.Randn(shape, torch.Float32, torch.CPU, newGen(b, 3))
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	ref := startCompareReference(b, py, dir, u, map[string]*torch.Tensor{"x_T": xT}, "sample", threads)

	// Go's warm-up: the same run from the same x_T.
	goOut, err := sampler.Sample(context.Background(), model, xT, sc, nil, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer goOut.Close()
	loaded, _, err := s.LoadSafetensors(filepath.Join(dir, "out.safetensors"), torch.CPU)
	if err != nil {
		b.Fatal(err)
	}
	got, want := floats(b, goOut), floats(b, loaded["x0"])
	if len(got) != len(want) {
		b.Fatalf("Go sampled %d values, PyTorch %d", len(got), len(want))
	}
	var diff, scale, d2, n2 float64
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		diff = max(diff, math.Abs(d))
		scale = max(scale, math.Abs(float64(want[i])))
		d2 += d * d
		n2 += float64(want[i]) * float64(want[i])
	}
	// The perturbed random weights give samples far outside [-1, 1], so the
	// bound is relative to their size, as in TestParityWithPyTorch. In bf16
	// every forward is ~1% off (TestBF16MatchesFloat32).
	b.Logf("samples from the same x_T: max |Go - PyTorch| = %.3g (max |x_0| = %.3g), relative L2 %.3g", diff, scale, math.Sqrt(d2/n2))
	if precision == diffusion.Float32 {
		if tol := 1e-5 * max(1, scale); !(diff <= tol) {
			b.Fatalf("Go and PyTorch samples differ by up to %g, want at most %g", diff, tol)
		}
	} else if r := math.Sqrt(d2 / n2); !(r < 0.05) {
		b.Fatalf("Go bf16 and PyTorch float32 samples differ by %g (relative L2), want under 0.05", r)
	}

	gen := newGen(b, 4)
	var goTimes, torchTimes []benchcmp.Cost
	for range max(b.N, sampleRounds) {
		goTimes = append(goTimes, benchcmp.Measure(b, 1, func() {
			out, err := sampler.SampleShape(context.Background(), model, shape, torch.Float32, sc, gen, opts)
			if err != nil {
				b.Fatal(err)
			}
			out.Close()
		}))
		torchTimes = append(torchTimes, ref.Run(b, "sample"))
	}
	benchcmp.Report(b, batch, "images", goTimes, torchTimes)
}

// BenchmarkTrainStepVsPyTorch compares training throughput: one step of
// the trainer (uniform timesteps, dropout, epsilon MSE, backward, gradient
// clipping to norm 1, AdamW at 2e-4, EMA 0.9999) on the CPU, from
// train.Trainer and from the same step in PyTorch (torch.optim.AdamW
// with foreach=True), for the "small" preset at batch 64 and the DDPM
// paper's "cifar10" network at batch 8, with the Go trainer in float32 and
// in bf16 (skipped on a CPU without bfloat16 instructions) against PyTorch
// eager float32. Every step sees the same batch of random images.
