package features

import (
	"fmt"

	"github.com/ddpm-go/ddpm/torch"
)

// TorchScriptExtractor is a feature network in a TorchScript file. The
// images are prepared in this order (each step optional): gray images
// repeated to RGB, quantised to [0, 255] like 8-bit images, resized,
// normalised from [0, 255] as (x − 128)/128. Then Method is called; its
// first result, flattened per image, is the features, which must have Dim
// columns.
//
// Class probabilities, when there are any, are the softmax of logits that
// come from Head applied to the features when Head is set, else from the
// method's second result.
type TorchScriptExtractor struct {
	Module *torch.Module
	Device torch.Device // where Module lives
	// Method is the module's method that gives the features: "forward",
	// or a submodule's method such as "layers.forward". "" means "forward".
	Method string
	// FeatureDim is the number of features per image the method must give.
	FeatureDim int

	RGB       bool // repeat a single channel three times
	Range255  bool // quantise [-1, 1] to the integers 0..255 (as float32), as 8-bit images
	Size      int  // resize to Size×Size with StyleGAN's bilinear resampling; 0 keeps the size
	Normalize bool // map [0, 255] to (x − 128)/128 after resizing

	// Head is a method that maps the features (N, FeatureDim) to class
	// logits, "" if none. HeadBias, when set, is subtracted from its result:
	// Head's value at zero features, which removes the bias of a linear
	// head.
	Head     string
	HeadBias []float32
}

// Dim is FeatureDim.
func (e *TorchScriptExtractor) Dim() int { return e.FeatureDim }

// Close releases the module.
func (e *TorchScriptExtractor) Close() { e.Module.Close() }

// method is the name of the feature method.
func (e *TorchScriptExtractor) method() string {
	if e.Method == "" {
		return "forward"
	}
	return e.Method
}

// call runs a method of the module.
func (e *TorchScriptExtractor) call(s *torch.Scope, method string, x *torch.Tensor) []*torch.Tensor {
	if method == "forward" {
		return s.Forward(e.Module, x)
	}
	return s.CallMethod(e.Module, method, x)
}

// Features implements Extractor.
func (e *TorchScriptExtractor) Features(s *torch.Scope, x *torch.Tensor) (feats, probs *torch.Tensor) {
	if s.Err() != nil {
		return nil, nil
	}
	sh := x.Shape()
	if len(sh) != 4 {
		s.Fail(fmt.Errorf("features: images must be (N, C, H, W), got a batch shaped %v", sh))
		return nil, nil
	}
	n := sh[0]
	x = e.prepare(s, x)
	outs := e.call(s, e.method(), x)
	if s.Err() != nil {
		return nil, nil
	}
	if len(outs) == 0 {
		s.Fail(fmt.Errorf("features: method %s returned no tensor", e.method()))
		return nil, nil
	}
	feats = s.Reshape(outs[0], n, -1)
	if s.Err() != nil {
		return nil, nil
	}
	if cols := feats.Shape()[1]; cols != int64(e.FeatureDim) {
		s.Fail(e.widthError(cols))
		return nil, nil
	}
	var logits *torch.Tensor
	switch {
	case e.Head != "":
		out := e.call(s, e.Head, feats)
		if s.Err() != nil {
			return nil, nil
		}
		if len(out) == 0 {
			s.Fail(fmt.Errorf("features: method %s returned no tensor", e.Head))
			return nil, nil
		}
		logits = s.Reshape(out[0], n, -1)
		if e.HeadBias != nil {
			bias := s.FromFloat32s(e.HeadBias, 1, int64(len(e.HeadBias)))
			if e.Device != torch.CPU {
				bias = s.To(bias, e.Device)
			}
			logits = s.Sub(logits, bias)
		}
	case len(outs) > 1:
		logits = s.Reshape(outs[1], n, -1)
	default:
		return feats, nil
	}
	return feats, s.Softmax(s.ToDType(logits, torch.Float32), 1)
}

// prepare applies the image preparation steps to x.
func (e *TorchScriptExtractor) prepare(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	if x.Device() != e.Device {
		x = s.To(x, e.Device)
	}
	sh := x.Shape()
	if e.RGB && len(sh) == 4 && sh[1] == 1 {
		x = s.Expand(x, sh[0], 3, sh[2], sh[3])
	}
	if e.Range255 {
		// As (x·127.5 + 128).clamp(0, 255).to(uint8): truncation of
		// v + 0.5 rounds v = (x+1)·127.5 to the nearest integer.
		x = s.Clamp(s.AddScalar(s.MulScalar(x, 127.5), 128), 0, 255)
		x = s.ToDType(s.ToDType(x, torch.Uint8), torch.Float32)
	}
	if e.Size > 0 {
		x = resizeBilinear(s, x, e.Size)
	}
	if e.Normalize {
		x = s.MulScalar(s.AddScalar(x, -128), 1.0/128)
	}
	return s.Contiguous(x)
}

// widthError explains features of the wrong width.
func (e *TorchScriptExtractor) widthError(cols int64) error {
	msg := fmt.Sprintf("features: method %s of %s returned %d values per image, not the %d features expected",
		e.method(), e.Module.Path(), cols, e.FeatureDim)
	if e.method() == "forward" && cols == inceptionClasses {
		msg += fmt.Sprintf(" (these are class probabilities: the forward of %s gives features only when called with return_features=True, "+
			"which cannot be passed from here; use the method %s)", InceptionFile, DefaultInceptionMethod)
	}
	return fmt.Errorf("%s", msg)
}
