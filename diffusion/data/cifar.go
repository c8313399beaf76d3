package data

import "fmt"

// cifar10Classes are the CIFAR-10 class names, indexed by label.
var cifar10Classes = []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

const (
	cifarSide   = 32
	cifarPixels = 3 * cifarSide * cifarSide // planar R, G, B
	cifarRecord = 1 + cifarPixels           // label byte, then pixels
)

// ReadCIFAR10 reads CIFAR-10 binary batches (data_batch_1.bin ... or
// test_batch.bin) and returns their images, 3×32×32, in the order given.
// Each file is a sequence of records of one label byte (0-9) and 3072 pixel
// bytes, the red, green and blue planes of a 32×32 image.
func ReadCIFAR10(paths ...string) (*Dataset, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("data: no CIFAR-10 batch files given")
	}
	var files [][]byte
	total := 0
	for _, p := range paths {
		b, gz, err := readFile(p, nil)
		if err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return nil, &FileError{Path: p, Err: ErrNoImages, Detail: "the file is empty; download the CIFAR-10 binary version again"}
		}
		if len(b)%cifarRecord != 0 {
			return nil, &FileError{Path: p, Err: ErrFormat,
				Detail: fmt.Sprintf("%s, not a multiple of %d (a CIFAR-10 record is 1 label byte and %d pixel bytes); use the CIFAR-10 binary version, not the python one, or download it again",
					sizeNoun(len(b), gz), cifarRecord, cifarPixels)}
		}
		for r := 0; r < len(b); r += cifarRecord {
			if l := b[r]; int(l) >= len(cifar10Classes) {
				return nil, &FileError{Path: p, Err: ErrFormat,
					Detail: fmt.Sprintf("record %d has label %d, want 0-9; is this a CIFAR-100 file?", r/cifarRecord, l)}
			}
		}
		files = append(files, b)
		total += len(b) / cifarRecord
	}
	d := &Dataset{
		N: total, C: 3, H: cifarSide, W: cifarSide,
		Images:     make([]float32, total*cifarPixels),
		Labels:     make([]int64, total),
		NumClasses: len(cifar10Classes),
		ClassNames: append([]string(nil), cifar10Classes...),
		Source:     paths[0],
	}
	if len(paths) > 1 {
		d.Source = fmt.Sprintf("%s and %d more", paths[0], len(paths)-1)
	}
	i := 0
	for _, b := range files {
		for r := 0; r < len(b); r += cifarRecord {
			d.Labels[i] = int64(b[r])
			img := d.Image(i)
			for j, v := range b[r+1 : r+cifarRecord] {
				img[j] = byteValue[v]
			}
			i++
		}
	}
	return d, nil
}
