package autoencoder

import (
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/internal/enum"
	"github.com/ddpm-go/ddpm/torch"
)

// Reconstruction names the reconstruction term of the training loss.
type Reconstruction string

const (
	// L1 is the mean absolute error |x - x̂| (latent diffusion's first
	// stage uses it).
	L1 Reconstruction = "l1"
	// L2 is the mean squared error (x - x̂)².
	L2 Reconstruction = "l2"
)

var reconstructions = []Reconstruction{L1, L2}

// ParseReconstruction parses "l1" or "l2".
func ParseReconstruction(s string) (Reconstruction, error) {
	r, err := enum.Parse("reconstruction loss", s, reconstructions, map[string]Reconstruction{"mae": L1, "mse": L2})
	if err != nil {
		return "", fmt.Errorf("autoencoder: %w", err)
	}
	return r, nil
}

// DefaultKLWeight is the KL weight the CLI starts from: small, so that
// the latents stay close to what the encoder finds and the KL term only
// keeps their scale in check (latent diffusion's KL-f8 models use 1e-6 on
// summed terms).
const DefaultKLWeight = 1e-6

// Loss is the autoencoder's training objective:
//
//	loss = rec(x, Decode(z)) + KLWeight * KL(N(mean, exp(logVar)) || N(0, I))
//
// with z = Sample(mean, logVar) for (mean, logVar) = Encode(x). Both terms
// are means over their elements: rec over every pixel and channel of the
// batch, KL over every latent element of the batch (see KL), so the
// weight does not depend on the batch or image size.
type Loss struct {
	// Reconstruction is L1 or L2; "" means L1.
	Reconstruction Reconstruction `json:"reconstruction"`
	// KLWeight weighs the KL term; it must be finite and >= 0.
	KLWeight float64 `json:"kl_weight"`
}

// Validate reports a bad field.
func (l Loss) Validate() error {
	if l.Reconstruction != "" && l.Reconstruction != L1 && l.Reconstruction != L2 {
		return fmt.Errorf("autoencoder: reconstruction loss %q is not l1 or l2", l.Reconstruction)
	}
	if !(l.KLWeight >= 0) || math.IsInf(l.KLWeight, 0) {
		return fmt.Errorf("autoencoder: kl_weight must be finite and >= 0, got %g", l.KLWeight)
	}
	return nil
}

// LossTerms are the scalar terms of one evaluation of the loss, owned by
// the scope they were computed in.
type LossTerms struct {
	Total, Reconstruction, KL *torch.Tensor
}

// KL is the Kullback-Leibler divergence of the diagonal Gaussian N(mean,
// exp(logVar)) from N(0, I), per element and averaged over all of them:
//
//	KL = mean( (mean² + exp(logVar) - 1 - logVar) / 2 )
//
// (diffusers' DiagonalGaussianDistribution.kl sums the same terms over
// each latent instead). The result is a scalar owned by s.
func KL(s *torch.Scope, mean, logVar *torch.Tensor) *torch.Tensor {
	terms := s.Sub(s.Add(s.Square(mean), s.Exp(logVar)), s.AddScalar(logVar, 1))
	return s.MulScalar(s.Mean(terms, nil, false), 0.5)
}

// Loss evaluates the training objective l on images x (see Loss), drawing
// the posterior sample from gen. Failures are recorded in s.
func (m *Model) Loss(s *torch.Scope, x *torch.Tensor, gen *torch.Generator, l Loss) LossTerms {
	if err := l.Validate(); err != nil {
		s.Fail(err)
		return LossTerms{}
	}
	mean, logVar := m.Encode(s, x)
	y := m.Decode(s, m.Sample(s, mean, logVar, gen))
	if s.Err() != nil {
		return LossTerms{}
	}
	var rec *torch.Tensor
	if l.Reconstruction == L2 {
		rec = s.MSELoss(y, x, torch.ReduceMean)
	} else {
		rec = s.Mean(s.Abs(s.Sub(y, x)), nil, false)
	}
	kl := KL(s, mean, logVar)
	return LossTerms{Total: s.Add(rec, s.MulScalar(kl, l.KLWeight)), Reconstruction: rec, KL: kl}
}
