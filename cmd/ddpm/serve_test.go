package main

import (
	"bufio"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/pipeline"
)

// A client that sends half its headers and stalls is dropped after the
// read timeout, while another is served meanwhile.
func TestServeDropsSlowClient(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	srv := newHTTPServer(mux, 200*time.Millisecond)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	slow, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.Write([]byte("POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"))
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another client while one stalls: %v", err)
	}
	resp.Body.Close()
	t0 := time.Now()
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(slow).ReadString('\n')
	// The server answers 408 or just closes; either way, in about the timeout.
	if d := time.Since(t0); d > 2*time.Second || (err == nil && !strings.Contains(line, "408")) {
		t.Errorf("stalled client: %q, %v after %v", line, err, d)
	}
}

// A model is a checkpoint file or a run directory (its newest checkpoint).
func TestServeLoadsModels(t *testing.T) {
	runDir := tinyRun(t)
	for _, path := range []string{runDir, filepath.Join(runDir, "ckpt-00000012.safetensors")} {
		p, err := loadServedModel(path, pipeline.Options{})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if p.Info().Step != 12 {
			t.Errorf("%s: step %d", path, p.Info().Step)
		}
		p.Close()
	}
	if _, err := loadServedModel(filepath.Join(runDir, "missing"), pipeline.Options{}); err == nil {
		t.Error("a missing path loaded")
	}
	for _, args := range [][]string{
		{"serve"},
		{"serve", "--model", "nameonly"},
		{"serve", "--model", "a=" + runDir, "--model", "a=" + runDir},
		{"serve", "--model", "a=" + runDir, "--max-batch", "0"},
		{"serve", "--model", "a=" + runDir, "--workers", "-2"},
	} {
		code, _, errOut := ddpm(t, args...)
		if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "ddpm: serve: ") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}
