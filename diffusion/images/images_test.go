package images

import (
	"image/png"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestToImageScaling(t *testing.T) {
	img, err := ToImage([]float32{-1, 0, 1, 2, -3, 0.5}, 1, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint8{0, 128, 255, 255, 0, 191}
	for i, v := range want {
		r, _, _, _ := img.At(i%3, i/3).RGBA()
		if uint8(r>>8) != v {
			t.Errorf("pixel %d = %d, want %d", i, r>>8, v)
		}
	}
	if _, err := ToImage(make([]float32, 5), 1, 2, 3); err == nil {
		t.Error("wrong length accepted")
	}
	if _, err := ToImage(make([]float32, 12), 2, 2, 3); err == nil {
		t.Error("2 channels accepted")
	}
}

func TestGridLayoutAndPNG(t *testing.T) {
	// Three RGB 2x2 images: red, green, blue.
	var pix []float32
	for c := range 3 {
		for p := range 3 {
			for range 4 {
				if p == c {
					pix = append(pix, 1)
				} else {
					pix = append(pix, -1)
				}
			}
		}
	}
	g, err := Grid(pix, 3, 3, 2, 2, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if b := g.Bounds(); b.Dx() != 2*3+1 || b.Dy() != 2*3+1 {
		t.Fatalf("grid is %v", b)
	}
	for i, at := range [][2]int{{1, 1}, {4, 1}, {1, 4}} {
		r, gr, b, _ := g.At(at[0], at[1]).RGBA()
		got := [3]uint32{r >> 8, gr >> 8, b >> 8}
		want := [3]uint32{0, 0, 0}
		want[i] = 255
		if got != want {
			t.Errorf("image %d at %v is %v, want %v", i, at, got, want)
		}
	}
	path := filepath.Join(t.TempDir(), "sub", "grid.png")
	if err := SavePNG(path, g); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	back, err := png.Decode(f)
	if err != nil || back.Bounds() != g.Bounds() {
		t.Fatalf("decoded %v, %v", back.Bounds(), err)
	}
	if err := SavePNG(filepath.Join(string([]byte{0}), "x.png"), g); err == nil {
		t.Error("saving to an impossible path succeeded")
	}
}

// PNGs are created like any other file (0644 less the umask), not 0600 as
// temporary files are.
func TestSavePNGMode(t *testing.T) {
	mask := syscall.Umask(0o022)
	defer syscall.Umask(mask)
	path := filepath.Join(t.TempDir(), "a.png")
	img, err := ToImage([]float32{0, 0.5, -1, 1}, 1, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := SavePNG(path, img); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v (%v), want 0644", fi.Mode().Perm(), err)
	}
}
