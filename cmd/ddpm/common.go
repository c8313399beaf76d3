package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/ddpm-go/ddpm/torch"
)

// setupDevice parses --device and applies --threads (0: torch.DefaultThreads).
func setupDevice(name string, threads int) (torch.Device, error) {
	dev, err := torch.ParseDevice(name)
	if err != nil {
		return dev, err
	}
	if threads < 0 {
		return dev, fmt.Errorf("--threads %d must be non-negative", threads)
	}
	if threads == 0 {
		threads = torch.DefaultThreads()
	}
	if threads > 0 {
		if err := torch.SetNumThreads(threads); err != nil {
			return dev, err
		}
	}
	return dev, nil
}

func joinNames(names []string) string { return strings.Join(names, ", ") }

// humanCount writes 35746307 as "35.7M".
func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fG", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// gridColumns makes grids as square as possible (64 images: 8x8).
func gridColumns(n int) int { return int(math.Ceil(math.Sqrt(float64(n)))) }

// printJSON writes v as one indented JSON object (what --json prints).
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
