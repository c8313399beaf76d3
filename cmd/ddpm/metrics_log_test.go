package main

import (
	"bufio"
	"encoding/json"
	"os"

	"github.com/ddpm-go/ddpm/diffusion/train"
)

// readMetrics reads the records of a metrics log, skipping lines that are
// not one (a line cut short by a crash).
func readMetrics(path string) ([]train.Metrics, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []train.Metrics
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m train.Metrics
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}
