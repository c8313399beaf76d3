package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadAndDraw(t *testing.T) {
	dir := t.TempDir()
	tsv := filepath.Join(dir, "e.tsv")
	os.WriteFile(tsv, []byte("run\tsteps\tminutes\tfid_classifier\tsamples\tnote\n"+
		"a\t1000\t10.5\t5.2\t256\tx\n\na\t2000\t20\t2.5\t1000\t\nb\t4000\t44\t2.35\t1000\n"), 0o644)
	pts, err := readPoints(tsv)
	if err != nil || len(pts) != 3 || pts[1] != (point{run: "a", steps: 2000, minutes: 20, fid: 2.5, samples: 1000}) {
		t.Fatalf("points %+v, %v", pts, err)
	}
	out := filepath.Join(dir, "p.png")
	if err := draw(pts, 0.47, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if img, err := png.Decode(f); err != nil || img.Bounds().Dx() < 500 {
		t.Fatalf("plot: %v", err)
	}
	os.WriteFile(tsv, []byte("run\tsteps\tminutes\tfid_classifier\tsamples\na\tmany\t1\t1\t1\n"), 0o644)
	if _, err := readPoints(tsv); err == nil || !strings.Contains(err.Error(), "e.tsv:2") {
		t.Errorf("a bad row: %v, want its line named", err)
	}
}

// The table in the repository parses, and its plot is drawn from it.
func TestExperimentsTable(t *testing.T) {
	pts, err := readPoints("experiments.tsv")
	if err != nil || len(pts) == 0 {
		t.Fatalf("experiments.tsv: %d points, %v", len(pts), err)
	}
	if _, err := os.Stat("fid-vs-time.png"); err != nil {
		t.Errorf("the plot is missing: go run ./docs/experiments")
	}
}

// Whatever the table holds, readPoints returns points or an error naming
// the file, never panics.
func FuzzReadPoints(f *testing.F) {
	f.Add([]byte("run\tsteps\tminutes\tfid_classifier\tsamples\na\t1\t2\t3\t4\n"))
	f.Add([]byte("h\nx\t\t\t\t\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "e.tsv")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readPoints(path); err != nil && !strings.Contains(err.Error(), "e.tsv") {
			t.Errorf("error %q does not name the file", err)
		}
	})
}
