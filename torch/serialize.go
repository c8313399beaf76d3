package torch

import (
	"fmt"
	"sort"

	"github.com/ddpm-go/ddpm/torch/safetensors"
)

var toSafetensors = map[DType]safetensors.DType{
	Float32: safetensors.F32, Float64: safetensors.F64, Float16: safetensors.F16,
	BFloat16: safetensors.BF16, Int64: safetensors.I64, Bool: safetensors.Bool, Uint8: safetensors.U8,
}

func fromSafetensors(d safetensors.DType) (DType, bool) {
	for k, v := range toSafetensors {
		if v == d {
			return k, true
		}
	}
	return 0, false
}

// SaveSafetensors writes named tensors (from any device) and string metadata
// to path in the safetensors format, atomically: a crash leaves either the old
// file or the new one.
func SaveSafetensors(path string, tensors map[string]*Tensor, metadata map[string]string) error {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]safetensors.Tensor, 0, len(names))
	for _, n := range names {
		m, err := tensors[n].Meta()
		if err != nil {
			return fmt.Errorf("save %s: tensor %q: %w", path, n, err)
		}
		dt, ok := toSafetensors[m.DType]
		if !ok {
			return fmt.Errorf("save %s: tensor %q has dtype %s, which safetensors cannot hold", path, n, m.DType)
		}
		data, err := tensors[n].Bytes()
		if err != nil {
			return fmt.Errorf("save %s: tensor %q: %w", path, n, err)
		}
		out = append(out, safetensors.Tensor{Name: n, DType: dt, Shape: m.Shape, Data: data})
	}
	return safetensors.Write(path, out, metadata)
}

// LoadSafetensors reads every tensor of a safetensors file into the scope, on
// dev, and returns them by name with the file's metadata.
func (s *Scope) LoadSafetensors(path string, dev Device) (map[string]*Tensor, map[string]string, error) {
	if err := s.Err(); err != nil {
		return nil, nil, err
	}
	h, data, err := safetensors.Read(path)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*Tensor, len(h.Entries))
	for _, e := range h.Entries {
		dt, ok := fromSafetensors(e.DType)
		if !ok {
			return nil, nil, fmt.Errorf("load %s: tensor %q has dtype %s, which is not supported", path, e.Name, e.DType)
		}
		if len(e.Shape) > maxDims {
			return nil, nil, fmt.Errorf("load %s: tensor %q has %d dimensions, more than the %d supported", path, e.Name, len(e.Shape), maxDims)
		}
		if dt == Bool {
			for _, b := range data[e.Name] {
				if b > 1 {
					return nil, nil, fmt.Errorf("load %s: tensor %q is bool but holds the byte %d (a bool is 0 or 1)", path, e.Name, b)
				}
			}
		}
		t := s.FromBytes(data[e.Name], dt, e.Shape...)
		if dev != CPU {
			t = s.To(t, dev)
		}
		if err := s.Err(); err != nil {
			return nil, nil, fmt.Errorf("load %s: tensor %q: %w", path, e.Name, err)
		}
		out[e.Name] = t
	}
	return out, h.Metadata, nil
}
