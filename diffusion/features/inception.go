package features

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/torch"
)

// The Inception-v3 network of FID, as StyleGAN2-ADA, StyleGAN3 and
// clean-fid use it: a TorchScript translation of TensorFlow's
// inception-2015-12-05 graph, published by NVIDIA.
const (
	InceptionFile = "inception-2015-12-05.pt"
	InceptionURL  = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + InceptionFile
	// InceptionEnv is the environment variable the ddpm command reads the
	// file's path from.
	InceptionEnv = "DDPM_INCEPTION"
	// InceptionDim is the number of pool features, the FID feature space.
	InceptionDim = 2048
	// InceptionSize is the input size of the network body.
	InceptionSize = 299
	// DefaultInceptionMethod gives the pool features: the network body of
	// the file, which its forward calls after resizing the images to
	// 299×299 and normalising them as (x − 128)/128.
	DefaultInceptionMethod = "layers.forward"
	// inceptionHead maps pool features to the logits of the 1008 classes.
	inceptionHead    = "output.forward"
	inceptionClasses = 1008
)

// ErrNoInception matches the error for an Inception file that was not given
// or is not there.
var ErrNoInception = errors.New("no Inception network")

// MissingInceptionError says which file to get and where to put it.
type MissingInceptionError struct {
	Path     string // the path given, "" if none was
	CacheDir string // the cache directory that was searched, "" if none
	Err      error  // the reason, when a given path failed
}

func (e *MissingInceptionError) Error() string {
	what := "no Inception network given"
	if e.Path != "" {
		what = fmt.Sprintf("the Inception network %s is missing", e.Path)
	}
	where := ""
	if e.CacheDir != "" {
		where = ", or put it at " + filepath.Join(e.CacheDir, InceptionFile)
	}
	return fmt.Sprintf("%s: get %s (the TorchScript Inception-v3 that clean-fid and StyleGAN's metrics use, published by NVIDIA at %s) "+
		"and pass --inception FILE or set %s=FILE%s", what, InceptionFile, InceptionURL, InceptionEnv, where)
}

// Is makes the error match ErrNoInception.
func (e *MissingInceptionError) Is(target error) bool { return target == ErrNoInception }

// Unwrap returns the reason, if any.
func (e *MissingInceptionError) Unwrap() error { return e.Err }

// FindInception returns path if it names an existing file; with path "",
// the InceptionFile in cacheDir if that exists. Otherwise the error is a
// *MissingInceptionError.
func FindInception(path, cacheDir string) (string, error) {
	if path == "" {
		if cacheDir == "" {
			return "", &MissingInceptionError{}
		}
		path = filepath.Join(cacheDir, InceptionFile)
		if _, err := os.Stat(path); err != nil {
			return "", &MissingInceptionError{CacheDir: cacheDir}
		}
		return path, nil
	}
	if _, err := os.Stat(path); err != nil {
		return "", &MissingInceptionError{Path: path, CacheDir: cacheDir, Err: err}
	}
	return path, nil
}

// InceptionOptions configure LoadInception. Zero values take the defaults.
type InceptionOptions struct {
	// Method gives the features [DefaultInceptionMethod]. With "forward"
	// the images go in as [0, 255] values at their own size and the first
	// result must be the features (a second one, if any, is taken as
	// logits); any other method is fed what the file's body expects:
	// 299×299 images normalised as (x − 128)/128.
	Method string
	// Dim is the number of features the method must give [InceptionDim].
	Dim int
	// Device runs the network (the zero value is the CPU).
	Device torch.Device
}

// LoadInception loads the TorchScript Inception network at path and checks,
// on one blank image, that it gives features of the expected width. A
// missing file (or path "") gives a *MissingInceptionError.
//
// Images are prepared as StyleGAN's metrics prepare them: gray repeated to
// RGB, quantised to 8 bits, resized bilinearly to 299×299 with the same
// sampling grid as its network's forward, normalised as (x − 128)/128. The
// features then match StyleGAN's up to floating-point rounding. clean-fid's
// default ("clean") mode resizes differently (PIL's bicubic filter), so its
// FID values agree with these only approximately for images that are not
// 299×299 already.
//
// The Inception Score uses the softmax of the 1008 logits of the file's
// output layer without its bias, as StyleGAN's metrics and the original
// implementation compute it; when the file has no output layer, there are
// no class probabilities.
func LoadInception(path string, o InceptionOptions) (*TorchScriptExtractor, error) {
	if path == "" {
		return nil, &MissingInceptionError{}
	}
	if o.Method == "" {
		o.Method = DefaultInceptionMethod
	}
	if o.Dim == 0 {
		o.Dim = InceptionDim
	}
	m, err := torch.LoadModule(path, o.Device)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &MissingInceptionError{Path: path, Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	e := &TorchScriptExtractor{Module: m, Device: o.Device, Method: o.Method, FeatureDim: o.Dim,
		RGB: true, Range255: true}
	probe := 64
	if o.Method != "forward" {
		e.Size, e.Normalize, e.Head = InceptionSize, true, inceptionHead
		probe = InceptionSize
	}
	if err := e.probe(probe); err != nil {
		m.Close()
		return nil, err
	}
	return e, nil
}

// probe runs the feature method on one blank size×size image, and the head
// on zero features to find its bias; a head that cannot be called is
// dropped.
func (e *TorchScriptExtractor) probe(size int) error {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := s.Zeros([]int64{1, 3, int64(size), int64(size)}, torch.Float32, torch.CPU)
	head := e.Head
	e.Head = ""
	e.Features(s, x)
	if err := s.Err(); err != nil {
		return fmt.Errorf("features: %s does not work as the Inception network: %w", e.Module.Path(), err)
	}
	if head == "" {
		return nil
	}
	hs := torch.NewScope(torch.Inference)
	defer hs.Close()
	out := e.call(hs, head, hs.Zeros([]int64{1, int64(e.FeatureDim)}, torch.Float32, e.Device))
	if hs.Err() != nil || len(out) == 0 {
		return nil
	}
	bias, err := hs.ToDType(hs.To(hs.Reshape(out[0], -1), torch.CPU), torch.Float32).Float32s()
	if err != nil {
		return nil
	}
	e.Head, e.HeadBias = head, bias
	return nil
}
