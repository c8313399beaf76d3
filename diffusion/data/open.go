package data

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Open reads the dataset at path and brings it to size×size pixels with the
// given channels. What path is decides the reader:
//
//   - a directory with train-images-idx3-ubyte (or train-images.idx3-ubyte,
//     either maybe with .gz) holds MNIST-style IDX files: the training split
//     is read, with its labels if train-labels-idx1-ubyte is there too;
//   - a directory with data_batch_*.bin files, or with a
//     cifar-10-batches-bin subdirectory holding them, is CIFAR-10: the
//     training batches are read;
//   - a file whose name ends in .bin is a CIFAR-10 batch;
//   - any other file is an IDX images file, read with the labels file
//     beside it (the same name with "labels" for "images" and "idx1" for
//     "idx3") if there is one;
//   - any other directory is an image folder (see ReadImageFolder).
//
// An IDX dataset at most 4 pixels smaller than size is padded with
// background (-1) on every side rather than resized: 28×28 MNIST or
// Fashion-MNIST becomes 32×32 with a 2-pixel border, as in DDPM practice,
// which keeps the strokes sharp and lets a U-Net halve the resolution
// cleanly. Any other size difference is resized and centre-cropped like an
// image folder. Channels are converted by luma (3 to 1) or by repeating the
// gray plane (1 to 3).
//
// size 0 keeps the dataset's own size and channels 0 its own channels; an
// image folder needs a size and reads 3 channels when channels is 0.
func Open(path string, size, channels int) (*Dataset, error) {
	if size < 0 {
		return nil, fmt.Errorf("data: image size must not be negative, got %d", size)
	}
	if channels != 0 && channels != 1 && channels != 3 {
		return nil, fmt.Errorf("data: channels must be 1 or 3, got %d", channels)
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	var d *Dataset
	idx := false
	switch {
	case fi.IsDir():
		if images := findTrainIDX(path); images != "" {
			d, err = ReadIDX(images, siblingLabels(images))
			idx = true
			break
		}
		batches, err2 := cifarBatches(path)
		if err2 != nil {
			return nil, err2
		}
		if batches != nil {
			d, err = ReadCIFAR10(batches...)
			break
		}
		if size == 0 {
			return nil, fmt.Errorf("data: %s is a folder of images, which needs an image size", path)
		}
		if channels == 0 {
			channels = 3
		}
		d, err = ReadImageFolder(path, size, channels)
	case strings.EqualFold(filepath.Ext(path), ".bin"):
		d, err = ReadCIFAR10(path)
	default:
		d, err = ReadIDX(path, siblingLabels(path))
		idx = true
	}
	if err != nil {
		return nil, err
	}
	if idx && len(d.Labels) > 0 && inFashionMNISTDir(path) {
		d.ClassNames = append([]string(nil), fashionMNISTClasses...)
		d.NumClasses = len(fashionMNISTClasses)
	}
	d.Path = path
	return d.conform(size, channels, idx)
}

// findTrainIDX returns the training images file of an MNIST-style
// directory, or "".
func findTrainIDX(dir string) string {
	for _, name := range []string{"train-images-idx3-ubyte", "train-images.idx3-ubyte"} {
		if p := findIDX(dir, name); p != "" {
			return p
		}
	}
	return ""
}

// siblingLabels returns the labels file that belongs to an IDX images file,
// or "" if there is none.
func siblingLabels(images string) string {
	base := filepath.Base(images)
	if !strings.Contains(base, "images") {
		return ""
	}
	name := strings.Replace(strings.Replace(base, "images", "labels", 1), "idx3", "idx1", 1)
	name = strings.TrimSuffix(name, ".gz")
	return findIDX(filepath.Dir(images), name)
}

// cifarBatches returns the sorted data_batch_*.bin files of dir or of its
// cifar-10-batches-bin subdirectory, or nil if there are none.
func cifarBatches(dir string) ([]string, error) {
	for _, d := range []string{dir, filepath.Join(dir, "cifar-10-batches-bin")} {
		m, err := filepath.Glob(filepath.Join(d, "data_batch_*.bin"))
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		if len(m) > 0 {
			return m, nil // Glob sorts
		}
	}
	return nil, nil
}

func inFashionMNISTDir(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	return abs == FashionMNISTDir || filepath.Dir(abs) == FashionMNISTDir
}
