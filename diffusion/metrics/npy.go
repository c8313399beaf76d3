package metrics

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The NumPy .npy format: the magic "\x93NUMPY", a major and a minor version
// byte, the header length (uint16 little-endian in version 1, uint32 in
// versions 2 and 3), an ASCII (version 3: UTF-8) Python dict literal with
// the keys descr, fortran_order and shape, padded with spaces and ended with
// '\n' so that the data starts at a multiple of 64 bytes, then the raw data.

const npyMagic = "\x93NUMPY"

// npyAlign is the alignment of the data that numpy's writer pads to.
const npyAlign = 64

// npyArray is a decoded float array in C (row-major) order.
type npyArray struct {
	shape []int
	data  []float64
}

// shapeString formats a shape as numpy prints it: (3,) or (3, 4).
func shapeString(shape []int) string {
	parts := make([]string, len(shape))
	for i, n := range shape {
		parts[i] = strconv.Itoa(n)
	}
	if len(shape) == 1 {
		return "(" + parts[0] + ",)"
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// decodeNPY decodes the .npy file b, named name in errors. It accepts format
// versions 1.0, 2.0 and 3.0, the dtypes float64 and float32 in either byte
// order, and C or Fortran order; float32 is widened to float64.
func decodeNPY(name string, b []byte) (*npyArray, error) {
	if !bytes.HasPrefix(b, []byte(npyMagic)) {
		if len(b) < len(npyMagic) && strings.HasPrefix(npyMagic, string(b)) {
			return nil, truncatedf("%s: truncated data: %d bytes, shorter than the npy magic", name, len(b))
		}
		return nil, errorf("%s: bad npy magic %q (want %q)", name, b[:min(len(b), len(npyMagic))], npyMagic)
	}
	if len(b) < len(npyMagic)+2 {
		return nil, truncatedf("%s: truncated data: the npy header is cut short", name)
	}
	major, minor := b[6], b[7]
	var hlen, start int
	switch {
	case major == 1 && minor == 0:
		if len(b) < 10 {
			return nil, truncatedf("%s: truncated data: the npy header is cut short", name)
		}
		hlen, start = int(binary.LittleEndian.Uint16(b[8:10])), 10
	case (major == 2 || major == 3) && minor == 0:
		if len(b) < 12 {
			return nil, truncatedf("%s: truncated data: the npy header is cut short", name)
		}
		n := binary.LittleEndian.Uint32(b[8:12])
		if uint64(n) > uint64(len(b)) {
			return nil, truncatedf("%s: truncated data: the npy header claims %d bytes, the entry holds %d", name, n, len(b)-12)
		}
		hlen, start = int(n), 12
	default:
		return nil, errorf("%s: unsupported npy format version %d.%d (want 1.0, 2.0 or 3.0)", name, major, minor)
	}
	if start+hlen > len(b) {
		return nil, truncatedf("%s: truncated data: the npy header claims %d bytes, the entry holds %d", name, hlen, len(b)-start)
	}
	h, err := parseNPYHeader(string(b[start : start+hlen]))
	if err != nil {
		return nil, errorf("%s: bad npy header: %v", name, err)
	}
	count := 1
	for _, n := range h.shape {
		if n != 0 && count > math.MaxInt/8/n {
			return nil, errorf("%s: shape %s is too large", name, shapeString(h.shape))
		}
		count *= n
	}
	raw := b[start+hlen:]
	if need := count * h.size; len(raw) < need {
		return nil, truncatedf("%s: truncated data: shape %s needs %d bytes, the entry holds %d", name, shapeString(h.shape), need, len(raw))
	}
	data := make([]float64, count)
	for i := range data {
		switch h.size {
		case 8:
			data[i] = math.Float64frombits(h.order.Uint64(raw[8*i:]))
		case 4:
			data[i] = float64(math.Float32frombits(h.order.Uint32(raw[4*i:])))
		}
	}
	if h.fortran && len(h.shape) > 1 {
		data = fortranToC(data, h.shape)
	}
	return &npyArray{shape: h.shape, data: data}, nil
}

// fortranToC reorders an array stored first-axis-fastest into C order.
func fortranToC(src []float64, shape []int) []float64 {
	dst := make([]float64, len(src))
	idx := make([]int, len(shape))
	for k := range dst {
		off, stride := 0, 1
		for a, n := range shape {
			off += idx[a] * stride
			stride *= n
		}
		dst[k] = src[off]
		for a := len(shape) - 1; a >= 0; a-- {
			idx[a]++
			if idx[a] < shape[a] {
				break
			}
			idx[a] = 0
		}
	}
	return dst
}

// npyHeader is what decodeNPY needs from a header dict.
type npyHeader struct {
	order   binary.ByteOrder
	size    int // bytes per element: 8 or 4
	fortran bool
	shape   []int
}

// parseNPYHeader parses the header dict of a .npy file.
func parseNPYHeader(s string) (*npyHeader, error) {
	p := &pyParser{s: s}
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("unexpected %q after the dict", p.rest())
	}
	dict, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not a dict")
	}
	h := &npyHeader{}
	descr, ok := dict["descr"].(string)
	if !ok {
		return nil, fmt.Errorf("missing or non-string descr")
	}
	switch descr {
	case "<f8":
		h.order, h.size = binary.LittleEndian, 8
	case ">f8":
		h.order, h.size = binary.BigEndian, 8
	case "<f4":
		h.order, h.size = binary.LittleEndian, 4
	case ">f4":
		h.order, h.size = binary.BigEndian, 4
	default:
		return nil, fmt.Errorf("unsupported dtype %q (want '<f8' or '<f4')", descr)
	}
	if h.fortran, ok = dict["fortran_order"].(bool); !ok {
		return nil, fmt.Errorf("missing or non-boolean fortran_order")
	}
	shape, ok := dict["shape"].([]any)
	if !ok {
		return nil, fmt.Errorf("missing or non-tuple shape")
	}
	for _, n := range shape {
		k, ok := n.(int)
		if !ok || k < 0 {
			return nil, fmt.Errorf("bad shape entry %v", n)
		}
		h.shape = append(h.shape, k)
	}
	return h, nil
}

// pyParser reads the Python literals a .npy header holds: dicts, tuples,
// strings, integers (a Python 2 "L" suffix allowed), True, False and None.
type pyParser struct {
	s string
	i int
}

func (p *pyParser) space() {
	for p.i < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *pyParser) rest() string {
	r := p.s[p.i:]
	if len(r) > 20 {
		r = r[:20] + "…"
	}
	return r
}

func (p *pyParser) value() (any, error) {
	p.space()
	if p.i == len(p.s) {
		return nil, fmt.Errorf("unexpected end")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.dict()
	case c == '(' || c == '[':
		return p.sequence()
	case c == '\'' || c == '"':
		return p.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.integer()
	}
	for _, w := range []struct {
		word string
		v    any
	}{{"True", true}, {"False", false}, {"None", nil}} {
		if strings.HasPrefix(p.s[p.i:], w.word) {
			p.i += len(w.word)
			return w.v, nil
		}
	}
	return nil, fmt.Errorf("unexpected %q", p.rest())
}

// items parses comma-separated elements up to the closing byte end, a
// trailing comma allowed, calling item for each.
func (p *pyParser) items(end byte, item func() error) error {
	p.i++ // the opening bracket
	for {
		p.space()
		if p.i < len(p.s) && p.s[p.i] == end {
			p.i++
			return nil
		}
		if err := item(); err != nil {
			return err
		}
		p.space()
		if p.i == len(p.s) {
			return fmt.Errorf("unexpected end")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case end:
		default:
			return fmt.Errorf("unexpected %q", p.rest())
		}
	}
}

func (p *pyParser) dict() (any, error) {
	d := map[string]any{}
	err := p.items('}', func() error {
		k, err := p.value()
		if err != nil {
			return err
		}
		key, ok := k.(string)
		if !ok {
			return fmt.Errorf("non-string dict key %v", k)
		}
		p.space()
		if p.i == len(p.s) || p.s[p.i] != ':' {
			return fmt.Errorf("missing ':' after %q", key)
		}
		p.i++
		v, err := p.value()
		if err != nil {
			return err
		}
		d[key] = v
		return nil
	})
	return d, err
}

func (p *pyParser) sequence() (any, error) {
	end := byte(')')
	if p.s[p.i] == '[' {
		end = ']'
	}
	seq := []any{}
	err := p.items(end, func() error {
		v, err := p.value()
		seq = append(seq, v)
		return err
	})
	return seq, err
}

func (p *pyParser) str() (any, error) {
	q := p.s[p.i]
	j := strings.IndexByte(p.s[p.i+1:], q)
	if j < 0 {
		return nil, fmt.Errorf("unterminated string")
	}
	v := p.s[p.i+1 : p.i+1+j]
	p.i += j + 2
	return v, nil
}

func (p *pyParser) integer() (any, error) {
	j := p.i
	if p.s[j] == '-' {
		j++
	}
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(p.s[p.i:j])
	if err != nil {
		return nil, fmt.Errorf("bad integer %q", p.s[p.i:j])
	}
	if j < len(p.s) && p.s[j] == 'L' {
		j++
	}
	p.i = j
	return n, nil
}
