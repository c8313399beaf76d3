package main

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/serve/api"
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
		{"serve", "--model", "a=" + runDir, "--log", "xml"},
		// Limits that would run out of memory or never become ready, and
		// an address that would listen on every interface unasked.
		{"serve", "--model", "a=" + runDir, "--max-images", "100000000"},
		{"serve", "--model", "a=" + runDir, "--max-batch", "1000000"},
		{"serve", "--model", "a=" + runDir, "--workers", "100000"},
		{"serve", "--model", "a=" + runDir, "--threads", "100000"},
		{"serve", "--model", "a=" + runDir, "--addr", ""},
		{"serve", "--model", "a=" + runDir, "--addr", ":8080"},
	} {
		code, _, errOut := ddpm(t, args...)
		if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "ddpm: serve: ") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}

// The real command listens, warms each model up, says it is ready, answers,
// and on SIGTERM drains and exits 0 (a process, since it is about signals).
func TestServeCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	runDir := tinyRun(t)
	bin := filepath.Join(t.TempDir(), "bin", "ddpm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--model", "tiny="+runDir, "--addr", "127.0.0.1:0", "--max-batch", "4", "--log", "json")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(out.String(), "ddpm serve: ready") &&
		time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
	}
	m := regexp.MustCompile(`listening on (http://\S+)[^\n]*\nddpm serve: model tiny warmed up in [^\n]*\nddpm serve: ready\n`).
		FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("want listening, warmed up, ready:\n%s", out.String())
	}
	url := m[1]
	if resp, err := http.Get(url + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("readyz once ready: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	resp, err := http.Post(url+"/v1/images/generations", "application/json", strings.NewReader(`{"n": 1, "steps": 2}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("generation: %s", resp.Status)
	}
	// Its access log line (the probe's is at Debug, not logged).
	id := resp.Header.Get(api.RequestIDHeader)
	logged := regexp.MustCompile(`(?m)^\{"time":[^\n]*"msg":"request","id":"` + regexp.QuoteMeta(id) +
		`","method":"POST","path":"/v1/images/generations","status":200,[^\n]*"model":"tiny","n":1,`)
	for deadline := time.Now().Add(10 * time.Second); !logged.MatchString(out.String()) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !logged.MatchString(out.String()) || strings.Contains(out.String(), `"path":"/readyz"`) {
		t.Errorf("access log: want the generation's line (request ID %q) and no probe's:\n%s", id, out.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "ddpm serve: stopped") {
		t.Errorf("after SIGTERM: %v\n%s", err, out.String())
	}
}

// syncBuffer is a bytes.Buffer that a process's output and the test may
// use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
