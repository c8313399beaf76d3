package metrics

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
	"gonum.org/v1/gonum/mat"
)

// testStats returns statistics of d dimensions with values that need all
// 64 bits to round-trip.
func testStats(d int) *Stats {
	rng := rand.New(rand.NewPCG(21, 22))
	mu := make([]float64, d)
	for i := range mu {
		mu[i] = rng.NormFloat64() / 3
	}
	return &Stats{Mu: mu, Sigma: randomSPD(rng, d), N: 100}
}

// statsJSON is how the python scripts report a pair of arrays.
type statsJSON struct {
	Mu    []float64 `json:"mu"`
	Sigma []float64 `json:"sigma"`
	D     int       `json:"d"`
}

func (r statsJSON) stats(t *testing.T) *Stats {
	t.Helper()
	if len(r.Mu) != r.D || len(r.Sigma) != r.D*r.D {
		t.Fatalf("python reported %d and %d values for d=%d", len(r.Mu), len(r.Sigma), r.D)
	}
	return &Stats{Mu: r.Mu, Sigma: mat.NewSymDense(r.D, r.Sigma)}
}

// sameStats fails t unless got and want hold exactly the same arrays.
func sameStats(t *testing.T, got, want *Stats) {
	t.Helper()
	if got.Dim() != want.Dim() {
		t.Fatalf("dimension %d, want %d", got.Dim(), want.Dim())
	}
	for i, v := range want.Mu {
		if got.Mu[i] != v {
			t.Fatalf("mu[%d] = %.17g, want %.17g", i, got.Mu[i], v)
		}
	}
	d := want.Dim()
	for i := range d {
		for j := range d {
			if g, w := got.Sigma.At(i, j), want.Sigma.At(i, j); g != w {
				t.Fatalf("sigma[%d,%d] = %.17g, want %.17g", i, j, g, w)
			}
		}
	}
}

const numpyLoadScript = `
import json, sys
import numpy as np
with np.load(sys.argv[1]) as f:
    files = sorted(f.files)
    mu, sigma = f["mu"], f["sigma"]
json.dump({"files": files, "mu_dtype": mu.dtype.str, "sigma_dtype": sigma.dtype.str,
           "mu_shape": list(mu.shape), "sigma_shape": list(sigma.shape),
           "mu": mu.tolist(), "sigma": sigma.ravel().tolist(), "d": int(mu.shape[0])}, sys.stdout)
`

func TestWriteNPZReadByNumPy(t *testing.T) {
	want := testStats(9)
	path := filepath.Join(t.TempDir(), "ref.npz")
	if err := WriteNPZ(path, want); err != nil {
		t.Fatal(err)
	}
	var got struct {
		statsJSON
		Files      []string `json:"files"`
		MuDtype    string   `json:"mu_dtype"`
		SigmaDtype string   `json:"sigma_dtype"`
		MuShape    []int    `json:"mu_shape"`
		SigmaShape []int    `json:"sigma_shape"`
	}
	pyref.Run(t, numpyLoadScript, nil, &got, path)
	if fmt.Sprint(got.Files) != "[mu sigma]" || got.MuDtype != "<f8" || got.SigmaDtype != "<f8" ||
		fmt.Sprint(got.MuShape) != "[9]" || fmt.Sprint(got.SigmaShape) != "[9 9]" {
		t.Fatalf("numpy sees files %v, dtypes %s %s, shapes %v %v", got.Files, got.MuDtype, got.SigmaDtype, got.MuShape, got.SigmaShape)
	}
	sameStats(t, got.stats(t), want)
}

func TestWriteNPZRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ref.npz")
	want := testStats(5)
	if err := os.WriteFile(path, []byte("old contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteNPZ(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadNPZ(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.N != 0 {
		t.Errorf("N = %d, want 0 (not stored)", got.N)
	}
	sameStats(t, got, want)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d files after the write, want only ref.npz", len(entries))
	}
	// Equal statistics give identical files.
	again := filepath.Join(dir, "again.npz")
	if err := WriteNPZ(again, want); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(path)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Error("two writes of the same statistics differ")
	}
}

func TestWriteNPZErrors(t *testing.T) {
	dir := t.TempDir()
	if err := WriteNPZ(filepath.Join(dir, "bad.npz"), &Stats{Mu: []float64{1}}); err == nil || !strings.Contains(err.Error(), "no covariance") {
		t.Errorf("invalid stats: error = %v", err)
	}
	if err := WriteNPZ(filepath.Join(dir, "missing", "x.npz"), testStats(2)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: error = %v, want fs.ErrNotExist", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed writes left %d files behind", len(entries))
	}
}

// numpySaveScript writes the same statistics in several ways numpy can:
// np.savez, np.savez_compressed, .npy format versions 2.0 and 3.0, float32,
// and Fortran order. It prints the arrays as float64.
const numpySaveScript = `
import json, sys, zipfile
import numpy as np
d, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(7)
mu = rng.standard_normal(d) / 3
a = rng.standard_normal((d, d))
sigma = a @ a.T / d + 0.1 * np.eye(d)
sigma = (sigma + sigma.T) / 2
np.savez(out + "/savez.npz", mu=mu, sigma=sigma)
np.savez_compressed(out + "/savez_compressed.npz", mu=mu, sigma=sigma)
for version in [(2, 0), (3, 0)]:
    with zipfile.ZipFile(out + "/v%d.npz" % version[0], "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, arr in [("mu", mu), ("sigma", sigma)]:
            with z.open(name + ".npy", "w") as f:
                np.lib.format.write_array(f, arr, version=version)
np.savez(out + "/fortran.npz", mu=mu, sigma=np.asfortranarray(sigma), extra=np.arange(3))
mu32, sigma32 = mu.astype(np.float32), sigma.astype(np.float32)
np.savez(out + "/float32.npz", mu=mu32, sigma=sigma32)
json.dump({"float64": {"mu": mu.tolist(), "sigma": sigma.ravel().tolist(), "d": d},
           "float32": {"mu": mu32.astype(np.float64).tolist(),
                       "sigma": sigma32.astype(np.float64).ravel().tolist(), "d": d}}, sys.stdout)
`

func TestReadNPZWrittenByNumPy(t *testing.T) {
	dir := t.TempDir()
	var ref map[string]statsJSON
	pyref.Run(t, numpySaveScript, nil, &ref, "7", dir)
	for _, c := range []struct{ file, kind string }{
		{"savez.npz", "float64"},
		{"savez_compressed.npz", "float64"},
		{"v2.npz", "float64"},
		{"v3.npz", "float64"},
		{"fortran.npz", "float64"},
		{"float32.npz", "float32"},
	} {
		t.Run(c.file, func(t *testing.T) {
			got, err := ReadNPZ(filepath.Join(dir, c.file))
			if err != nil {
				t.Fatal(err)
			}
			sameStats(t, got, ref[c.kind].stats(t))
		})
	}
}

// A non-symmetric matrix in Fortran order comes back in C order.
func TestDecodeNPYFortranOrder(t *testing.T) {
	dir := t.TempDir()
	var want struct {
		Data  []float64 `json:"data"`
		Shape []int     `json:"shape"`
	}
	pyref.Run(t, `
import json, sys
import numpy as np
a = np.arange(12, dtype=np.float64).reshape(3, 4) * 1.5 - 2
np.save(sys.argv[1], np.asfortranarray(a))
json.dump({"data": a.ravel().tolist(), "shape": list(a.shape)}, sys.stdout)
`, nil, &want, filepath.Join(dir, "f.npy"))
	b, err := os.ReadFile(filepath.Join(dir, "f.npy"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("'fortran_order': True")) {
		t.Fatal("numpy did not write a Fortran-order array")
	}
	got, err := decodeNPY("f.npy", b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.shape) != fmt.Sprint(want.Shape) || fmt.Sprint(got.data) != fmt.Sprint(want.Data) {
		t.Errorf("decoded %v %v, want %v %v", got.shape, got.data, want.Shape, want.Data)
	}
}

// npyBytes builds a .npy version 1.0 file with the given header fields and
// little-endian float64 values (or raw bytes when raw is not nil).
func npyBytes(descr, shape string, values []float64, raw []byte) []byte {
	header := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape)
	header += strings.Repeat(" ", (64-(10+len(header)+1)%64)%64) + "\n"
	var b bytes.Buffer
	b.WriteString(npyMagic)
	b.Write([]byte{1, 0})
	binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	b.WriteString(header)
	if raw != nil {
		b.Write(raw)
	}
	for _, v := range values {
		binary.Write(&b, binary.LittleEndian, math.Float64bits(v))
	}
	return b.Bytes()
}

type zipEntry struct {
	name string
	data []byte
}

// zipBytes builds a zip archive of stored entries.
func zipBytes(t *testing.T, entries ...zipEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, e := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestReadNPZErrors(t *testing.T) {
	dir := t.TempDir()
	mu2 := zipEntry{"mu.npy", npyBytes("<f8", "(2,)", []float64{1, 2}, nil)}
	sigma2 := zipEntry{"sigma.npy", npyBytes("<f8", "(2, 2)", []float64{1, 0, 0, 1}, nil)}
	good := zipBytes(t, mu2, sigma2)
	corrupt := bytes.Clone(good)
	// Flip a byte of mu's data, after its 128-byte header: the CRC fails.
	corrupt[bytes.Index(corrupt, []byte(npyMagic))+130] ^= 0xff

	tests := []struct {
		name      string
		data      []byte
		want      string
		truncated bool
	}{
		{"not a zip", []byte("this is not an archive"), "not a zip archive", false},
		{"empty file", nil, "not a zip archive", false},
		{"truncated archive", good[:len(good)/2], "not a zip archive", false},
		{"missing mu", zipBytes(t, sigma2), "missing mu.npy (entries: sigma.npy)", false},
		{"missing sigma", zipBytes(t, mu2), "missing sigma.npy (entries: mu.npy)", false},
		{"empty archive", zipBytes(t), "missing mu.npy (the archive is empty)", false},
		{"bad magic", zipBytes(t, zipEntry{"mu.npy", []byte("PK\x03\x04 not numpy at all")}, sigma2), `mu.npy: bad npy magic "PK\x03\x04 n"`, false},
		{"short magic", zipBytes(t, zipEntry{"mu.npy", []byte("\x93NUM")}, sigma2), "mu.npy: truncated data", true},
		{"bad version", zipBytes(t, zipEntry{"mu.npy", []byte("\x93NUMPY\x04\x00\x10\x00")}, sigma2), "unsupported npy format version 4.0", false},
		{"truncated header", zipBytes(t, zipEntry{"mu.npy", npyBytes("<f8", "(2,)", nil, nil)[:40]}, sigma2), "mu.npy: truncated data: the npy header claims 118 bytes", true},
		{"truncated data", zipBytes(t, mu2, zipEntry{"sigma.npy", npyBytes("<f8", "(2, 2)", []float64{1, 0, 0}, nil)}), "sigma.npy: truncated data: shape (2, 2) needs 32 bytes, the entry holds 24", true},
		{"unsupported dtype", zipBytes(t, zipEntry{"mu.npy", npyBytes("<i8", "(2,)", []float64{1, 2}, nil)}, sigma2), `mu.npy: bad npy header: unsupported dtype "<i8" (want '<f8' or '<f4')`, false},
		{"bad header", zipBytes(t, zipEntry{"mu.npy", npyBytes("<f8", "(2,", []float64{1, 2}, nil)}, sigma2), "mu.npy: bad npy header", false},
		{"shape mismatch", zipBytes(t, zipEntry{"mu.npy", npyBytes("<f8", "(3,)", []float64{1, 2, 3}, nil)}, sigma2), "shape mismatch: mu.npy has shape (3,) but sigma.npy has shape (2, 2), want (3, 3)", false},
		{"sigma not square", zipBytes(t, mu2, zipEntry{"sigma.npy", npyBytes("<f8", "(2, 1)", []float64{1, 2}, nil)}), "shape mismatch", false},
		{"mu not a vector", zipBytes(t, zipEntry{"mu.npy", npyBytes("<f8", "(1, 2)", []float64{1, 2}, nil)}, sigma2), "mu.npy has shape (1, 2), want (d,)", false},
		{"not symmetric", zipBytes(t, mu2, zipEntry{"sigma.npy", npyBytes("<f8", "(2, 2)", []float64{1, 0.5, 0, 1}, nil)}), "sigma.npy is not symmetric", false},
		{"non-finite", zipBytes(t, zipEntry{"mu.npy", npyBytes("<f8", "(2,)", []float64{1, math.NaN()}, nil)}, sigma2), "mu.npy holds non-finite values", false},
		{"checksum", corrupt, "mu.npy: corrupt entry (checksum mismatch)", false},
		{"inflates past the limit", bombNPZ(t), "sigma.npy: 2147483648 bytes uncompressed, more than the 1073741824 accepted", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".npz")
			if err := os.WriteFile(path, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadNPZ(path)
			var fe *FileError
			if !errors.As(err, &fe) || fe.Path != path {
				t.Fatalf("error = %v, want a *FileError for %s", err, path)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "metrics: "+path+": ") || !strings.Contains(msg, tt.want) {
				t.Errorf("error = %q, want one containing %q", msg, tt.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %v does not match ErrFormat", err)
			}
			if errors.Is(err, ErrTruncated) != tt.truncated {
				t.Errorf("errors.Is(%v, ErrTruncated) = %v, want %v", err, !tt.truncated, tt.truncated)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "nope.npz")
		_, err := ReadNPZ(path)
		if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrFormat) {
			t.Errorf("error = %v, want fs.ErrNotExist", err)
		}
		if want := "metrics: " + path + ": no such file or directory"; err == nil || err.Error() != want {
			t.Errorf("error = %v, want %q", err, want)
		}
	})

	t.Run("good archive", func(t *testing.T) {
		path := filepath.Join(dir, "good.npz")
		if err := os.WriteFile(path, good, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := ReadNPZ(path)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(s.Mu) != "[1 2]" || s.Sigma.At(0, 0) != 1 || s.Sigma.At(0, 1) != 0 {
			t.Errorf("read %v %v", s.Mu, s.Sigma)
		}
	})
}

// bombNPZ is an archive whose sigma.npy claims 2 GiB uncompressed (its
// data is a few bytes): it must be refused before anything inflates.
func bombNPZ(t *testing.T) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, err := zw.Create("mu.npy")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(npyBytes("<f8", "(2,)", []float64{1, 2}, nil))
	raw, err := zw.CreateRaw(&zip.FileHeader{Name: "sigma.npy", Method: zip.Store, CompressedSize64: 4, UncompressedSize64: 2 << 30})
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("\x93NUM"[:4]))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestParseNPYHeader(t *testing.T) {
	tests := []struct {
		header string
		want   string
	}{
		{"{'descr': '<f8', 'fortran_order': False, 'shape': (2048,), }     \n", "8 false [2048]"},
		{`{"descr": "<f4", "fortran_order": True, "shape": (3, 4)}`, "4 true [3 4]"},
		{"{'descr': '<f8', 'fortran_order': False, 'shape': (2048L, 2048L), }", "8 false [2048 2048]"},
		{"{'descr': '>f8', 'fortran_order': False, 'shape': (), }", "8 false []"},
	}
	for _, tt := range tests {
		h, err := parseNPYHeader(tt.header)
		if err != nil {
			t.Errorf("%q: %v", tt.header, err)
			continue
		}
		if got := fmt.Sprint(h.size, h.fortran, h.shape); got != tt.want {
			t.Errorf("%q: got %s, want %s", tt.header, got, tt.want)
		}
	}
	for _, bad := range []string{
		"", "[1, 2]", "{'descr': '<f8'}", "{'descr': '<f8', 'fortran_order': 1, 'shape': (2,)}",
		"{'descr': '<f8', 'fortran_order': False, 'shape': (-1,)}", "{'descr': '<f8' 'shape': (2,)}",
		"{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,)}",
		"{'descr': '<f8', 'fortran_order': False, 'shape': (2,)} trailing",
	} {
		if _, err := parseNPYHeader(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
