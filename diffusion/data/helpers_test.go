package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// idxImages encodes n images of rows×cols bytes as an IDX images file.
func idxImages(n, rows, cols int, pix []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, idxImagesMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = binary.BigEndian.AppendUint32(b, uint32(rows))
	b = binary.BigEndian.AppendUint32(b, uint32(cols))
	return append(b, pix...)
}

// idxLabels encodes labels as an IDX labels file.
func idxLabels(labels []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, idxLabelsMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(len(labels)))
	return append(b, labels...)
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pattern returns n bytes that differ from image to image and pixel to pixel.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/13)
	}
	return b
}

// solid returns a w×h NRGBA image of one colour.
func solid(w, h int, c color.NRGBA) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			m.SetNRGBA(x, y, c)
		}
	}
	return m
}

func writePNG(t *testing.T, path string, m image.Image) string {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, buf.Bytes())
}

func writeJPEG(t *testing.T, path string, m image.Image) string {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, buf.Bytes())
}

// checkErr checks that err matches target (unless nil), reads "data: ..."
// in lower case and contains every part.
func checkErr(t *testing.T, err, target error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one matching %v", target)
	}
	if target != nil && !errors.Is(err, target) {
		t.Errorf("error %q does not match %q", err, target)
	}
	checkLowercase(t, err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// checkLowercase checks that an error message starts "data: " and that what
// follows does not start with a capital letter.
func checkLowercase(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, "data: ")
	if !ok {
		t.Errorf("error %q does not start with \"data: \"", msg)
	}
	if r, _ := utf8.DecodeRuneInString(rest); unicode.IsUpper(r) {
		t.Errorf("error %q does not start in lower case", msg)
	}
}

// near reports whether a and b differ by at most tol.
func near(a, b, tol float32) bool {
	d := a - b
	return d <= tol && d >= -tol
}

// pngDeclaring is a 1x1 grey PNG whose header claims w x h pixels.
func pngDeclaring(t testing.TB, w, h uint32) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// IHDR: length (8..12), type (12..16), width (16..20), height (20..24), ..., CRC (29..33).
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}
