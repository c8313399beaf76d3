package serve

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve/api"
)

// parseRequest turns a JSON request into the engine's, starting from the
// model's default sampling as ddpm sample does. Limits that depend on the
// engine (n, steps, guidance) are checked by Generate.
func parseRequest(req api.GenerationRequest, p *pipeline.Pipeline) (Request, string, error) {
	var r Request
	format := req.ResponseFormat
	switch {
	case format == "":
		format = api.FormatPNGBase64
	case !slices.Contains(api.Formats, format):
		return r, "", fmt.Errorf("response_format %q: want one of %s", format, strings.Join(api.Formats, ", "))
	}
	if req.Stream && !api.JSONFormat(format) {
		return r, "", fmt.Errorf("stream needs a JSON response_format (%s or %s), not %s", api.FormatPNGBase64, api.FormatF32Base64, format)
	}
	switch {
	case req.PreviewEvery < 0:
		return r, "", fmt.Errorf("preview_every %d: want 0 (none) or more steps", req.PreviewEvery)
	case req.PreviewEvery > 0 && !req.Stream:
		return r, "", errors.New("preview_every needs stream: true (previews come in progress events)")
	}
	r.PreviewEvery = req.PreviewEvery
	r.N = 1
	if req.N != nil {
		r.N = *req.N
	}
	if req.Seed != nil {
		r.Seed = *req.Seed
	} else {
		var b [8]byte
		crand.Read(b[:])
		r.Seed = binary.LittleEndian.Uint64(b[:])
	}
	so := p.DefaultSampling()
	if req.Sampler != "" {
		k, err := sampler.ParseKind(req.Sampler)
		if err != nil {
			return r, "", errors.New(strings.TrimPrefix(err.Error(), "sampler: "))
		}
		so.Sampler, so.Spacing = k, "" // the new sampler's default spacing
	}
	T := p.Schedule().T()
	if req.Steps != 0 && (req.Steps < 1 || req.Steps > T) {
		return r, "", fmt.Errorf("steps %d out of range [1, %d] (the model was trained with T=%d)", req.Steps, T, T)
	}
	if req.Steps != 0 {
		so.Steps = req.Steps
	}
	if req.Spacing != "" {
		sp, err := diffusion.ParseSpacing(req.Spacing)
		if err != nil {
			return r, "", errors.New(strings.TrimPrefix(err.Error(), "diffusion: "))
		}
		so.Spacing = sp
	}
	if !(req.Eta >= 0 && req.Eta <= 1) {
		return r, "", fmt.Errorf("eta %g out of range [0, 1]", req.Eta)
	}
	if req.Eta != 0 && so.Sampler != sampler.DDIM {
		return r, "", fmt.Errorf("eta %g is DDIM's, and the sampler is %s", req.Eta, so.Sampler)
	}
	so.Eta = req.Eta
	if req.Guidance != nil {
		if g := *req.Guidance; math.IsNaN(g) || g < 0 {
			return r, "", fmt.Errorf("guidance %g must be >= 0", g)
		}
		so.Guidance = *req.Guidance
	}
	info := p.Info()
	if req.Class != nil {
		class := *req.Class
		switch {
		case info.NumClasses == 0:
			return r, "", errors.New("class: the model is unconditional (trained without classes)")
		case class < -1 || class >= int64(info.NumClasses):
			return r, "", fmt.Errorf("class %d out of range [0, %d) (or -1 for none)", class, info.NumClasses)
		}
		// Generate checks n; the labels are only made for a sane one.
		if r.N >= 1 && r.N <= 1<<16 {
			r.Labels = make([]int64, r.N)
			for i := range r.Labels {
				r.Labels[i] = class
			}
		}
	} else if so.Guidance != 0 && so.Guidance != 1 && info.NumClasses > 0 {
		return r, "", errors.New("guidance needs a class")
	}
	r.Sampling = so
	return r, format, nil
}
