package data

import (
	"slices"
	"testing"
)

// numbered returns a dataset of n 1×1×2 images whose first value encodes the
// index, labelled i%3.
func numbered(n int) *Dataset {
	d := &Dataset{N: n, C: 1, H: 1, W: 2, Images: make([]float32, 2*n), Labels: make([]int64, n), NumClasses: 3, ClassNames: []string{"a", "b", "c"}, Source: "numbers"}
	for i := range n {
		d.Images[2*i] = float32(i)
		d.Images[2*i+1] = -float32(i)
		d.Labels[i] = int64(i % 3)
	}
	return d
}

// ids returns the images' indices, as numbered encodes them.
func ids(images []float32, size int) []int {
	var out []int
	for i := 0; i < len(images); i += size {
		out = append(out, int(images[i]))
	}
	return out
}

func TestByteValue(t *testing.T) {
	if byteValue[0] != -1 || byteValue[255] != 1 {
		t.Errorf("0 → %v, 255 → %v, want -1 and 1", byteValue[0], byteValue[255])
	}
	for v := range 256 {
		if want := float32(float64(v)/127.5 - 1); byteValue[v] != want {
			t.Errorf("%d → %v, want %v", v, byteValue[v], want)
		}
		if b := valueByte(byteValue[v]); int(b) != v {
			t.Errorf("valueByte(byteValue[%d]) = %d", v, b)
		}
	}
}

func TestImage(t *testing.T) {
	d := numbered(4)
	img := d.Image(2)
	if len(img) != 2 || img[0] != 2 || img[1] != -2 || cap(img) != 2 {
		t.Errorf("Image(2) = %v (cap %d)", img, cap(img))
	}
}

func TestSplit(t *testing.T) {
	d := numbered(100)
	train, held := d.Split(10, 42)
	if train.N != 90 || held.N != 10 || len(train.Images) != 180 || len(held.Labels) != 10 {
		t.Fatalf("split into %d and %d", train.N, held.N)
	}
	a, b := ids(train.Images, 2), ids(held.Images, 2)
	all := append(slices.Clone(a), b...)
	slices.Sort(all)
	for i, v := range all {
		if v != i {
			t.Fatalf("train and held out do not partition the images: %v", all)
		}
	}
	if !slices.IsSorted(a) || !slices.IsSorted(b) {
		t.Errorf("split does not keep the order")
	}
	for j, i := range b {
		if held.Labels[j] != int64(i%3) || held.Image(j)[1] != -float32(i) {
			t.Errorf("held-out image %d lost its label or values", j)
		}
	}
	if held.NumClasses != 3 || held.ClassNames[2] != "c" || held.Source != "numbers" {
		t.Errorf("held out lost its metadata")
	}

	_, again := d.Split(10, 42)
	if !slices.Equal(ids(again.Images, 2), b) {
		t.Errorf("same seed, different split")
	}
	_, other := d.Split(10, 43)
	if slices.Equal(ids(other.Images, 2), b) {
		t.Errorf("different seeds, same split")
	}

	train, held = d.Split(-5, 1)
	if train.N != 100 || held.N != 0 {
		t.Errorf("holdout -5: %d and %d", train.N, held.N)
	}
	train, held = d.Split(500, 1)
	if train.N != 0 || held.N != 100 {
		t.Errorf("holdout 500: %d and %d", train.N, held.N)
	}
}
