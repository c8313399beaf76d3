package torch

// #include "ddpm_torch.h"
import "C"

import "fmt"

// AdamWHyper are the hyper-parameters of one AdamW step.
type AdamWHyper struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	Step                               int64 // 1 for the first step
}

// handles returns the C handles of ts, failing on a nil or closed tensor.
// The caller keeps ts alive (keepAlive) until the call that uses the handles
// has returned.
func handles(op string, ts []*Tensor) ([]C.ddpm_tensor, error) {
	hs := make([]C.ddpm_tensor, len(ts))
	for i, t := range ts {
		if hs[i] = t.handle(); hs[i] == nil {
			return nil, &Error{Op: op, Msg: fmt.Sprintf("tensor %d is nil or closed", i)}
		}
	}
	return hs, nil
}

func first(hs []C.ddpm_tensor) *C.ddpm_tensor {
	if len(hs) == 0 {
		return nil
	}
	return &hs[0]
}

// AdamWStep updates params in place from their gradients, with the moment
// buffers expAvg and expAvgSq (as torch.optim.AdamW does). Parameters
// without a gradient are left alone. foreach selects libtorch's multi-tensor
// kernels (the default choice) over a per-tensor loop.
func AdamWStep(params, expAvg, expAvgSq []*Tensor, hp AdamWHyper, foreach bool) error {
	if len(expAvg) != len(params) || len(expAvgSq) != len(params) {
		return &Error{Op: "adamw", Msg: fmt.Sprintf("%d parameters but %d and %d moment buffers", len(params), len(expAvg), len(expAvgSq))}
	}
	p, err := handles("adamw", params)
	if err != nil {
		return err
	}
	m, err := handles("adamw", expAvg)
	if err != nil {
		return err
	}
	v, err := handles("adamw", expAvgSq)
	if err != nil {
		return err
	}
	c := C.ddpm_adamw{lr: C.double(hp.LR), beta1: C.double(hp.Beta1), beta2: C.double(hp.Beta2),
		eps: C.double(hp.Eps), weight_decay: C.double(hp.WeightDecay), step: C.int64_t(hp.Step)}
	e := C.ddpm_adamw_step(first(p), first(m), first(v), C.int64_t(len(p)), &c, cBool(foreach))
	keepAlive(params...)
	keepAlive(expAvg...)
	keepAlive(expAvgSq...)
	return takeError("adamw", e)
}

// ClipGradNorm returns the global L2 norm of the parameters' gradients and,
// when maxNorm > 0 and the norm exceeds it, scales the gradients down to
// maxNorm (torch.nn.utils.clip_grad_norm_).
func ClipGradNorm(params []*Tensor, maxNorm float64) (float64, error) {
	p, err := handles("clip_grad_norm", params)
	if err != nil {
		return 0, err
	}
	var norm C.double
	e := C.ddpm_clip_grad_norm(first(p), C.int64_t(len(p)), C.double(maxNorm), &norm)
	keepAlive(params...)
	if err := takeError("clip_grad_norm", e); err != nil {
		return 0, err
	}
	return float64(norm), nil
}

// EMAUpdate sets avg = decay avg + (1 - decay) value for each pair.
func EMAUpdate(avg, value []*Tensor, decay float64) error {
	if len(avg) != len(value) {
		return &Error{Op: "ema", Msg: fmt.Sprintf("%d averages for %d values", len(avg), len(value))}
	}
	a, err := handles("ema", avg)
	if err != nil {
		return err
	}
	v, err := handles("ema", value)
	if err != nil {
		return err
	}
	e := C.ddpm_ema_update(first(a), first(v), C.int64_t(len(a)), C.double(decay))
	keepAlive(avg...)
	keepAlive(value...)
	return takeError("ema", e)
}
