package data

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// FashionMNISTDir is where Debian's dataset-fashion-mnist package installs
// Fashion-MNIST.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// fashionMNISTClasses are the Fashion-MNIST class names, indexed by label.
var fashionMNISTClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

// FashionMNIST reads the "train" (60000 images) or "test" (10000 images)
// split of Fashion-MNIST from FashionMNISTDir, with its labels and class
// names. The images are 1×28×28.
func FashionMNIST(split string) (*Dataset, error) {
	return readFashionMNIST(FashionMNISTDir, split)
}

func readFashionMNIST(dir, split string) (*Dataset, error) {
	var prefix string
	switch split {
	case "train":
		prefix = "train"
	case "test":
		prefix = "t10k"
	default:
		return nil, fmt.Errorf("data: unknown fashion-mnist split %q (want \"train\" or \"test\")", split)
	}
	images := findIDX(dir, prefix+"-images-idx3-ubyte")
	labels := findIDX(dir, prefix+"-labels-idx1-ubyte")
	if images == "" || labels == "" {
		return nil, &FileError{Path: filepath.Join(dir, prefix+"-images-idx3-ubyte.gz"), Err: ErrNotFound,
			Detail: "install Fashion-MNIST with apt-get install dataset-fashion-mnist, or pass --data with the path of a dataset"}
	}
	d, err := ReadIDX(images, labels)
	if err != nil {
		return nil, err
	}
	d.ClassNames = append([]string(nil), fashionMNISTClasses...)
	d.NumClasses = len(fashionMNISTClasses)
	return d, nil
}

// findIDX returns the path of the IDX file dir/name, gzipped (name.gz) or
// not, or "" if neither exists.
func findIDX(dir, name string) string {
	for _, n := range []string{name + ".gz", name} {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err == nil {
			return p
		} else if !errors.Is(err, os.ErrNotExist) {
			return p // let the reader report the problem
		}
	}
	return ""
}
