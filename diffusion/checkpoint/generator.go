package checkpoint

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/ddpm-go/ddpm/torch"
)

// KeyRNGDevice is the metadata key of the kind of device ("cpu", "cuda")
// whose generator state RNGState holds: libtorch's CPU and CUDA generator
// states differ in form (5,056 bytes against a seed and an offset), and
// neither takes the other's.
const KeyRNGDevice = "rng_device"

// DeviceKind is dev's kind as KeyRNGDevice records it.
func DeviceKind(dev torch.Device) string {
	kind, _, _ := strings.Cut(dev.String(), ":")
	return kind
}

// reseedStream tells the seeds of reseeded generators from the other
// streams drawn from a run's seed.
const reseedStream = 0x3c6ef372fe94f82b

// Generator makes the generator on dev that resumes a checkpoint's:
// state, saved on a device of the kind saved ("" in files that do not
// say, taken to be dev's). A state of another kind cannot be set (a run
// moved between a GPU and a CPU): the generator is then seeded from (seed,
// step) instead and reseeded is true; the run goes on with other noise
// than an uninterrupted run would draw, the same noise at every such
// resume. The caller closes the generator.
func Generator(state []byte, saved string, dev torch.Device, seed uint64, step int64) (gen *torch.Generator, reseeded bool, err error) {
	if saved != "" && saved != DeviceKind(dev) {
		s := rand.New(rand.NewPCG(seed^reseedStream, uint64(step))).Uint64()
		gen, err := torch.NewGenerator(s, dev)
		return gen, true, err
	}
	gen, err = torch.NewGenerator(0, dev)
	if err != nil {
		return nil, false, err
	}
	if err := gen.SetState(state); err != nil {
		gen.Close()
		return nil, false, fmt.Errorf("generator state: %w", err)
	}
	return gen, false, nil
}
