package metrics

import (
	"archive/zip"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ddpm-go/ddpm/internal/npy"

	"gonum.org/v1/gonum/mat"
)

// Entry names of reference statistics in the pytorch-fid .npz layout.
const (
	muEntry    = "mu.npy"
	sigmaEntry = "sigma.npy"
)

// symmetryTolerance is how far, relative to its largest entry, a stored
// covariance may be from symmetric; the two triangles are averaged.
const symmetryTolerance = 1e-5

// ReadNPZ reads reference statistics from a .npz archive in the layout of
// pytorch-fid: an entry mu.npy holding the mean, shape (d,), and sigma.npy
// holding the covariance, shape (d, d). Entries written by np.savez (stored)
// and np.savez_compressed (deflated) are read alike, and arrays may be
// float64 or float32, in C or Fortran order, in .npy format version 1, 2 or
// 3. Other entries are ignored. The sample count is not stored, so N is 0.
//
// Errors are *FileError values naming path; contents that are not usable
// statistics match ErrFormat (and ErrTruncated when an entry is cut short).
func ReadNPZ(path string) (*Stats, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, &FileError{Path: path, Err: openError(err)}
	}
	defer zr.Close()
	mu, err := readNPYEntry(&zr.Reader, muEntry)
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	sigma, err := readNPYEntry(&zr.Reader, sigmaEntry)
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	s, err := statsFromArrays(mu, sigma)
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	return s, nil
}

// openError turns an error from zip.OpenReader into the problem to report.
func openError(err error) error {
	var pe *fs.PathError
	switch {
	case errors.As(err, &pe):
		return pe.Err // the FileError already names the path
	case errors.Is(err, zip.ErrFormat):
		return errorf("not a zip archive")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return truncatedf("truncated data: the zip archive is cut short")
	}
	return errorf("cannot read the zip archive: %v", err)
}

// maxNPYEntry bounds an entry's uncompressed size (1 GiB: the covariance
// of 11,585 float64 features), so a small archive cannot inflate without
// limit.
const maxNPYEntry = 1 << 30

// readNPYEntry decodes the .npy entry name of an archive.
func readNPYEntry(zr *zip.Reader, name string) (*npyArray, error) {
	var f *zip.File
	var names []string
	for _, e := range zr.File {
		if e.Name == name {
			f = e
			break
		}
		names = append(names, e.Name)
	}
	if f == nil {
		slices.Sort(names)
		if len(names) == 0 {
			return nil, errorf("missing %s (the archive is empty)", name)
		}
		return nil, errorf("missing %s (entries: %s)", name, strings.Join(names, ", "))
	}
	if f.UncompressedSize64 > maxNPYEntry {
		return nil, errorf("%s: %d bytes uncompressed, more than the %d accepted", name, f.UncompressedSize64, maxNPYEntry)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, errorf("%s: %v", name, err)
	}
	defer rc.Close()
	// The size in the archive's directory can lie: read one byte past the
	// limit at most.
	b, err := io.ReadAll(io.LimitReader(rc, maxNPYEntry+1))
	if err == nil && len(b) > maxNPYEntry {
		return nil, errorf("%s: more than %d bytes uncompressed", name, maxNPYEntry)
	}
	if err != nil {
		var corrupt flate.CorruptInputError
		switch {
		case errors.Is(err, zip.ErrChecksum):
			return nil, errorf("%s: corrupt entry (checksum mismatch)", name)
		case errors.As(err, &corrupt):
			return nil, errorf("%s: corrupt compressed data", name)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, truncatedf("%s: truncated data", name)
		}
		return nil, errorf("%s: %v", name, err)
	}
	return decodeNPY(name, b)
}

// statsFromArrays checks the shapes and values of a mean and a covariance
// and builds Stats from them.
func statsFromArrays(mu, sigma *npyArray) (*Stats, error) {
	if len(mu.shape) != 1 || mu.shape[0] == 0 {
		return nil, errorf("%s has shape %s, want (d,) with d > 0", muEntry, shapeString(mu.shape))
	}
	d := mu.shape[0]
	if len(sigma.shape) != 2 || sigma.shape[0] != d || sigma.shape[1] != d {
		return nil, errorf("shape mismatch: %s has shape %s but %s has shape %s, want (%d, %d)",
			muEntry, shapeString(mu.shape), sigmaEntry, shapeString(sigma.shape), d, d)
	}
	for _, v := range mu.data {
		if !isFinite(v) {
			return nil, errorf("%s holds non-finite values", muEntry)
		}
	}
	var maxAbs float64
	for _, v := range sigma.data {
		if !isFinite(v) {
			return nil, errorf("%s holds non-finite values", sigmaEntry)
		}
		maxAbs = math.Max(maxAbs, math.Abs(v))
	}
	s := mat.NewSymDense(d, nil)
	for i := range d {
		for j := i; j < d; j++ {
			u, l := sigma.data[i*d+j], sigma.data[j*d+i]
			if math.Abs(u-l) > symmetryTolerance*maxAbs {
				return nil, errorf("%s is not symmetric: element (%d, %d) is %v, (%d, %d) is %v", sigmaEntry, i, j, u, j, i, l)
			}
			s.SetSym(i, j, 0.5*(u+l))
		}
	}
	return &Stats{Mu: mu.data, Sigma: s}, nil
}

// npzTime is the modification time written into archive entries; a fixed
// value makes equal statistics give identical files.
var npzTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// WriteNPZ writes s to path in the pytorch-fid .npz layout that ReadNPZ and
// numpy.load read: mu.npy and sigma.npy as .npy version 1.0 little-endian
// float64 in C order, stored uncompressed like np.savez. The file is written
// under a temporary name in the same directory and renamed into place, so
// path never holds a partial file. N is not stored.
func WriteNPZ(path string, s *Stats) error {
	if err := s.validate(); err != nil {
		return fmt.Errorf("metrics: %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return &FileError{Path: path, Err: err}
	}
	if err := writeNPZ(tmp, s); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return &FileError{Path: path, Err: err}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return &FileError{Path: path, Err: err}
	}
	return nil
}

// writeNPZ writes the archive to f, syncs and closes it.
func writeNPZ(f *os.File, s *Stats) error {
	zw := zip.NewWriter(f)
	d := s.Dim()
	sigma := mat.DenseCopyOf(s.Sigma)
	arrays := []struct {
		name  string
		shape []int
		data  []float64
	}{
		{muEntry, []int{d}, s.Mu},
		{sigmaEntry, []int{d, d}, sigma.RawMatrix().Data},
	}
	for _, a := range arrays {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: a.name, Method: zip.Store, Modified: npzTime})
		if err != nil {
			return err
		}
		if err := npy.WriteFloat64(w, a.shape, a.data); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}
