// Package npy writes NumPy's .npy format (version 1.0, C order,
// little-endian), the one way the project hands arrays to Python.
package npy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

const (
	magic = "\x93NUMPY"
	align = 64 // numpy pads the header so the data starts on a 64-byte boundary
)

// writeHeader writes the magic, version and header of an array of the
// given NumPy dtype ("<f4", "<f8") and shape.
func writeHeader(w io.Writer, descr string, shape []int) error {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	s := strings.Join(dims, ", ")
	if len(shape) == 1 {
		s += ","
	}
	header := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, s)
	// magic, 2 version bytes, 2 length bytes, header, padding, '\n'.
	pre := len(magic) + 4
	pad := (align - (pre+len(header)+1)%align) % align
	header += strings.Repeat(" ", pad) + "\n"
	if len(header) > math.MaxUint16 {
		return fmt.Errorf("npy: shape %v makes a header of %d bytes", shape, len(header))
	}
	b := make([]byte, 0, pre+len(header))
	b = append(b, magic...)
	b = append(b, 1, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(header)))
	b = append(b, header...)
	_, err := w.Write(b)
	return err
}

// checkShape checks that shape holds n values.
func checkShape(shape []int, n int) error {
	size := 1
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("npy: negative dimension in shape %v", shape)
		}
		size *= d
	}
	if size != n {
		return fmt.Errorf("npy: shape %v holds %d values, got %d", shape, size, n)
	}
	return nil
}

// WriteFloat32 writes data, of the given shape in C order, as a .npy
// array of float32.
func WriteFloat32(w io.Writer, shape []int, data []float32) error {
	return write(w, "<f4", shape, data, func(b []byte, v float32) []byte {
		return binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	})
}

// WriteFloat64 writes data, of the given shape in C order, as a .npy
// array of float64.
func WriteFloat64(w io.Writer, shape []int, data []float64) error {
	return write(w, "<f8", shape, data, func(b []byte, v float64) []byte {
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	})
}

// write writes the header for descr and the values, each appended
// little-endian by put.
func write[T any](w io.Writer, descr string, shape []int, data []T, put func([]byte, T) []byte) error {
	if err := checkShape(shape, len(data)); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	if err := writeHeader(bw, descr, shape); err != nil {
		return err
	}
	var buf [8]byte
	for _, v := range data {
		bw.Write(put(buf[:0], v))
	}
	return bw.Flush()
}
