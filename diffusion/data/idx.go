package data

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Magic numbers of the IDX files this package reads: two zero bytes, the
// element type (0x08, unsigned byte) and the number of dimensions.
const (
	idxImagesMagic = 0x00000803 // N×rows×cols unsigned bytes
	idxLabelsMagic = 0x00000801 // N unsigned bytes
)

// ReadIDX reads images, and labels unless labelsPath is "", in the IDX
// format of MNIST and Fashion-MNIST. Either file may be gzipped; that is
// detected from its first bytes, not its name. The images come out with one
// channel; NumClasses is one more than the largest label.
func ReadIDX(imagesPath, labelsPath string) (*Dataset, error) {
	raw, gz, err := readFile(imagesPath, idxImagesSize)
	if err != nil {
		return nil, err
	}
	n, rows, cols, pix, err := parseIDXImages(imagesPath, raw, gz)
	if err != nil {
		return nil, err
	}
	d := &Dataset{N: n, C: 1, H: rows, W: cols, Images: make([]float32, len(pix)), Source: imagesPath}
	for i, v := range pix {
		d.Images[i] = byteValue[v]
	}
	if labelsPath == "" {
		return d, nil
	}
	raw, gz, err = readFile(labelsPath, idxLabelsSize)
	if err != nil {
		return nil, err
	}
	labels, err := parseIDXLabels(labelsPath, raw, gz)
	if err != nil {
		return nil, err
	}
	if len(labels) != n {
		return nil, &FileError{Path: labelsPath, Err: ErrFormat,
			Detail: fmt.Sprintf("%d labels but %s has %d images; use the labels file of the same split", len(labels), imagesPath, n)}
	}
	d.Labels = make([]int64, n)
	for i, l := range labels {
		d.Labels[i] = int64(l)
		d.NumClasses = max(d.NumClasses, int(l)+1)
	}
	return d, nil
}

// idxImagesSize is the size an IDX images header claims: 16 bytes and N
// rows x cols pixels.
func idxImagesSize(h []byte) (int64, bool) {
	if len(h) < 16 || binary.BigEndian.Uint32(h) != idxImagesMagic {
		return 0, false
	}
	hi, n := bits.Mul64(uint64(binary.BigEndian.Uint32(h[4:])), uint64(binary.BigEndian.Uint32(h[8:]))*uint64(binary.BigEndian.Uint32(h[12:])))
	if hi != 0 || n > 1<<62 {
		return 1 << 62, true
	}
	return 16 + int64(n), true
}

// idxLabelsSize is the size an IDX labels header claims: 8 bytes and N labels.
func idxLabelsSize(h []byte) (int64, bool) {
	if len(h) < 8 || binary.BigEndian.Uint32(h) != idxLabelsMagic {
		return 0, false
	}
	return 8 + int64(binary.BigEndian.Uint32(h[4:])), true
}

// checkIDXMagic checks the magic number at the start of an IDX file.
func checkIDXMagic(path string, b []byte, gz bool, want uint32, what string) error {
	if len(b) < 4 {
		return &FileError{Path: path, Err: ErrTruncated,
			Detail: fmt.Sprintf("%s, too short for an IDX header; download it again", sizeNoun(len(b), gz))}
	}
	got := binary.BigEndian.Uint32(b)
	if got == want {
		return nil
	}
	detail := fmt.Sprintf("magic number is 0x%08x, want 0x%08x for an IDX %s file", got, want, what)
	switch got {
	case idxImagesMagic:
		detail += " (this is an images file; pass it as the images)"
	case idxLabelsMagic:
		detail += " (this is a labels file; pass it as the labels)"
	default:
		detail += "; pass an MNIST-style *-idx3-ubyte images file or *-idx1-ubyte labels file, plain or gzipped"
	}
	return &FileError{Path: path, Err: ErrFormat, Detail: detail}
}

// parseIDXImages checks an IDX images file and returns its dimensions and
// pixel bytes.
func parseIDXImages(path string, b []byte, gz bool) (n, rows, cols int, pix []byte, err error) {
	if err := checkIDXMagic(path, b, gz, idxImagesMagic, "images"); err != nil {
		return 0, 0, 0, nil, err
	}
	const header = 16
	if len(b) < header {
		return 0, 0, 0, nil, &FileError{Path: path, Err: ErrTruncated,
			Detail: fmt.Sprintf("%s, shorter than the %d-byte header of an IDX images file; download it again", sizeNoun(len(b), gz), header)}
	}
	un := uint64(binary.BigEndian.Uint32(b[4:]))
	ur := uint64(binary.BigEndian.Uint32(b[8:]))
	uc := uint64(binary.BigEndian.Uint32(b[12:]))
	if un == 0 || ur == 0 || uc == 0 {
		return 0, 0, 0, nil, &FileError{Path: path, Err: ErrFormat,
			Detail: fmt.Sprintf("header says %d images of %dx%d; every dimension must be positive", un, ur, uc)}
	}
	hi, want := bits.Mul64(un, ur*uc)
	have := uint64(len(b) - header)
	if hi != 0 || want > have {
		return 0, 0, 0, nil, &FileError{Path: path, Err: ErrTruncated,
			Detail: fmt.Sprintf("header says %d images of %dx%d but %s; download it again", un, ur, uc, sizeNoun(len(b), gz))}
	}
	if want < have {
		return 0, 0, 0, nil, &FileError{Path: path, Err: ErrFormat,
			Detail: fmt.Sprintf("header says %d images of %dx%d (%d bytes with the header) but %s; the file is damaged or not an IDX images file", un, ur, uc, want+header, sizeNoun(len(b), gz))}
	}
	return int(un), int(ur), int(uc), b[header:], nil
}

// parseIDXLabels checks an IDX labels file and returns its labels.
func parseIDXLabels(path string, b []byte, gz bool) ([]byte, error) {
	if err := checkIDXMagic(path, b, gz, idxLabelsMagic, "labels"); err != nil {
		return nil, err
	}
	const header = 8
	if len(b) < header {
		return nil, &FileError{Path: path, Err: ErrTruncated,
			Detail: fmt.Sprintf("%s, shorter than the %d-byte header of an IDX labels file; download it again", sizeNoun(len(b), gz), header)}
	}
	n := uint64(binary.BigEndian.Uint32(b[4:]))
	have := uint64(len(b) - header)
	switch {
	case n > have:
		return nil, &FileError{Path: path, Err: ErrTruncated,
			Detail: fmt.Sprintf("header says %d labels but %s; download it again", n, sizeNoun(len(b), gz))}
	case n < have:
		return nil, &FileError{Path: path, Err: ErrFormat,
			Detail: fmt.Sprintf("header says %d labels (%d bytes with the header) but %s; the file is damaged or not an IDX labels file", n, n+header, sizeNoun(len(b), gz))}
	}
	return b[header:], nil
}
