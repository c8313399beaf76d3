package pipeline

import "github.com/ddpm-go/ddpm/diffusion"

// Model is the network the pipeline samples with, for code that drives
// the sampler steps itself (package serve batches the steps of many
// requests into one forward). The pipeline keeps owning it: it stays valid
// until Close. It runs in the pipeline's Precision and returns float32.
func (p *Pipeline) Model() diffusion.Model { return p.model }
