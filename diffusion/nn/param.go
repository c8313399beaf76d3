// Package nn holds the building blocks of networks over package torch:
// named parameters, their initialisation, and layers.
package nn

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ddpm-go/ddpm/torch"
)

// Param is a named parameter tensor; the names are those of the equivalent
// PyTorch module's state_dict, so weights move between the two unchanged.
type Param struct {
	Name string
	T    *torch.Tensor
}

// Module is anything that owns parameters, in a fixed order.
type Module interface {
	Params() []Param
}

// NumParams is the total number of elements of ps.
func NumParams(ps []Param) int64 {
	var n int64
	for _, p := range ps {
		n += p.T.Numel()
	}
	return n
}

// CloseParams frees every parameter tensor.
func CloseParams(ps []Param) {
	for _, p := range ps {
		p.T.Close()
	}
}

// StateDict maps names to tensors (shared, not copied), for saving.
func StateDict(ps []Param) map[string]*torch.Tensor {
	m := make(map[string]*torch.Tensor, len(ps))
	for _, p := range ps {
		m[p.Name] = p.T
	}
	return m
}

// LoadStateDict copies tensors by name into ps (converting dtype and device),
// after checking that both hold exactly the same names and shapes
// (CheckStateDict), so a checkpoint of another configuration is reported as
// such instead of half-loaded.
func LoadStateDict(ps []Param, src map[string]*torch.Tensor) error {
	if err := CheckStateDict(ps, src); err != nil {
		return err
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	for _, p := range ps {
		s.CopyInPlace(p.T, src[p.Name])
	}
	return s.Err()
}

// CheckStateDict reports whether src holds exactly the names of ps with
// their shapes; the error lists the differences.
func CheckStateDict(ps []Param, src map[string]*torch.Tensor) error {
	var problems []string
	seen := make(map[string]bool, len(ps))
	for _, p := range ps {
		seen[p.Name] = true
		t, ok := src[p.Name]
		if !ok {
			problems = append(problems, "missing "+p.Name)
			continue
		}
		if want, got := p.T.Shape(), t.Shape(); fmt.Sprint(want) != fmt.Sprint(got) {
			problems = append(problems, fmt.Sprintf("%s has shape %v, model wants %v", p.Name, got, want))
		}
	}
	var extra []string
	for name := range src {
		if !seen[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		problems = append(problems, "unexpected "+name)
	}
	if len(problems) > 0 {
		const show = 5
		more := ""
		if len(problems) > show {
			more = fmt.Sprintf(" (and %d more)", len(problems)-show)
			problems = problems[:show]
		}
		return fmt.Errorf("weights do not fit this model: %s%s", strings.Join(problems, "; "), more)
	}
	return nil
}

// Tensors returns the tensors of ps, in order.
func Tensors(ps []Param) []*torch.Tensor {
	ts := make([]*torch.Tensor, len(ps))
	for i, p := range ps {
		ts[i] = p.T
	}
	return ts
}

// CheckDevice reports the first of params not on dev: a model built on one
// device and run on another would fail at its first operation with
// libtorch's "Expected all tensors to be on the same device".
func CheckDevice(params []Param, dev torch.Device) error {
	for _, p := range params {
		m, err := p.T.Meta()
		if err != nil {
			return fmt.Errorf("nn: parameter %s: %w", p.Name, err)
		}
		if m.Device.Type != dev.Type || (dev.Type == torch.DeviceCUDA && m.Device.Index != dev.Index) {
			return fmt.Errorf("nn: the model's parameter %s is on %s, not on %s, where it is to run", p.Name, m.Device, dev)
		}
	}
	return nil
}
