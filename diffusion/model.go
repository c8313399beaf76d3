package diffusion

import "github.com/ddpm-go/ddpm/torch"

// Model is a denoising network: for noisy images x (N, C, H, W) at integer
// timesteps t (int64, N) it predicts the Target it was trained on (epsilon,
// x0 or v), same shape as x. labels (int64, N) are class labels for a
// class-conditional model, nil for an unconditional one; the label equal to
// the model's class count is the "null" label of classifier-free guidance.
// Every tensor it creates belongs to s.
type Model interface {
	Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor
}
