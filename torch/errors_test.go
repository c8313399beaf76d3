package torch

import (
	"errors"
	"strings"
	"testing"
)

// wantTorchError checks that err is a *Error for op whose message contains
// every fragment (libtorch's own words) and no C++ backtrace.
func wantTorchError(t *testing.T, err error, op string, fragments ...string) {
	t.Helper()
	var te *Error
	if !errors.As(err, &te) {
		t.Fatalf("want a *torch.Error, got %T: %v", err, err)
	}
	if te.Op != op {
		t.Errorf("op = %q, want %q (%v)", te.Op, op, err)
	}
	for _, f := range fragments {
		if !strings.Contains(te.Msg, f) {
			t.Errorf("message %q lacks %q", te.Msg, f)
		}
	}
	if strings.Contains(te.Msg, "Exception raised from") {
		t.Errorf("message carries a C++ backtrace: %q", te.Msg)
	}
}

func TestShapeMismatchIsAnError(t *testing.T) {
	s := NewScope(Grad)
	defer s.Close()
	a := s.Ones([]int64{2, 3}, Float32, CPU)
	if got := s.Matmul(a, a); got != nil {
		t.Fatal("matmul of 2x3 by 2x3 returned a tensor")
	}
	wantTorchError(t, s.Err(), "matmul", "cannot be multiplied", "2x3")
}

func TestBroadcastMismatchIsAnError(t *testing.T) {
	s := NewScope(Grad)
	defer s.Close()
	s.Add(s.Ones([]int64{2, 3}, Float32, CPU), s.Ones([]int64{4}, Float32, CPU))
	wantTorchError(t, s.Err(), "add", "must match the size")
}

func TestWrongDTypeIsAnError(t *testing.T) {
	t.Run("libtorch", func(t *testing.T) {
		s := NewScope(Grad)
		defer s.Close()
		a := s.Ones([]int64{2, 2}, Float32, CPU)
		idx := s.Ones([]int64{2}, Float32, CPU)
		s.IndexSelect(a, 0, idx)
		wantTorchError(t, s.Err(), "index_select", "int64")
	})
	t.Run("host copy", func(t *testing.T) {
		s := NewScope(Grad)
		defer s.Close()
		a := s.Ones([]int64{2}, Float64, CPU)
		_, err := a.Float32s()
		wantTorchError(t, err, "copy_to_host", "float64", "float32")
	})
	t.Run("matmul of mixed dtypes", func(t *testing.T) {
		s := NewScope(Grad)
		defer s.Close()
		s.Matmul(s.Ones([]int64{2, 2}, Float32, CPU), s.Ones([]int64{2, 2}, Float64, CPU))
		wantTorchError(t, s.Err(), "matmul", "expected scalar type")
	})
}

func TestCUDARequestOnCPUBuildIsAnError(t *testing.T) {
	if CUDAAvailable() {
		t.Skip("a GPU is present")
	}
	s := NewScope(Grad)
	defer s.Close()
	s.To(s.Ones([]int64{2}, Float32, CPU), CUDA(0))
	var te *Error
	if !errors.As(s.Err(), &te) || te.Msg == "" {
		t.Fatalf("want libtorch's error, got %v", s.Err())
	}
	if strings.Contains(s.Err().Error(), "\n") {
		t.Errorf("Error() is not one line: %q", s.Err())
	}
	if !strings.Contains(te.Msg, "CUDA") {
		t.Errorf("libtorch's message does not name CUDA: %q", te.Msg)
	}
	if _, err := ParseDevice("cuda:0"); err == nil || !strings.Contains(err.Error(), "no CUDA") {
		t.Errorf("ParseDevice(cuda:0) = %v, want an error naming CUDA", err)
	}
	if _, err := NewGenerator(1, CUDA(0)); err == nil {
		t.Error("a CUDA generator was made without CUDA")
	}
	s2 := NewScope(Grad)
	defer s2.Close()
	s2.Zeros([]int64{2}, Float32, CUDA(0))
	if s2.Err() == nil {
		t.Error("zeros on cuda:0 succeeded without CUDA")
	}
}

func TestParseDevice(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Device
		err  string
	}{
		{"cpu", CPU, ""},
		{"CPU", CPU, ""},
		{"tpu", Device{}, "unknown device"},
		{"cuda:x", Device{}, "non-negative integer"},
		{"cuda:-1", Device{}, "non-negative integer"},
	} {
		got, err := ParseDevice(c.in)
		if c.err == "" && (err != nil || got != c.want) {
			t.Errorf("ParseDevice(%q) = %v, %v", c.in, got, err)
		}
		if c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("ParseDevice(%q) error = %v, want %q", c.in, err, c.err)
		}
	}
	if d, err := ParseDevice("auto"); err != nil || d != BestDevice() {
		t.Errorf("auto = %v, %v", d, err)
	}
}

func TestErrorsAreStickyAndNothingCrashes(t *testing.T) {
	s := NewScope(Grad)
	defer s.Close()
	a := s.Ones([]int64{2, 3}, Float32, CPU)
	bad := s.Reshape(a, 4, 4)
	first := s.Err()
	wantTorchError(t, first, "reshape", "invalid for input of size 6")
	// Later operations, including ones fed the nil result, do nothing.
	n := s.Len()
	out := s.SiLU(s.Add(bad, a))
	if out != nil || s.Err() != first || s.Len() != n {
		t.Fatalf("scope kept working after an error: out=%v err=%v", out, s.Err())
	}
}

func TestNilAndClosedTensors(t *testing.T) {
	s := NewScope(Grad)
	defer s.Close()
	s.Add(nil, nil)
	wantTorchError(t, s.Err(), "add", "nil or closed")

	var nilT *Tensor
	nilT.Close()
	if nilT.Shape() != nil || nilT.Numel() != 1 && nilT.Numel() != 0 {
		t.Errorf("nil tensor reports shape %v", nilT.Shape())
	}
	if _, err := nilT.Float32s(); !errors.Is(err, ErrClosed) {
		t.Errorf("Float32s on nil tensor: %v", err)
	}

	s2 := NewScope(Grad)
	defer s2.Close()
	a := s2.Ones([]int64{2}, Float32, CPU)
	a.Close()
	a.Close() // idempotent
	if _, err := a.Item(); !errors.Is(err, ErrClosed) {
		t.Errorf("Item on closed tensor: %v", err)
	}
	s2.Neg(a)
	wantTorchError(t, s2.Err(), "neg", "nil or closed")

	s3 := NewScope(Grad)
	s3.Close()
	s3.Close()
	if s3.Ones([]int64{1}, Float32, CPU) != nil || !errors.Is(s3.Err(), ErrClosed) {
		t.Errorf("closed scope: %v", s3.Err())
	}
}

func TestFromSliceLengthMismatch(t *testing.T) {
	s := NewScope(Grad)
	defer s.Close()
	s.FromFloat32s([]float32{1, 2, 3}, 2, 2)
	wantTorchError(t, s.Err(), "from_float32s", "3 values", "[2 2]")
	s2 := NewScope(Grad)
	defer s2.Close()
	s2.FromBytes(make([]byte, 7), Float32, 2)
	wantTorchError(t, s2.Err(), "from_bytes", "7 bytes")
}

func TestSetNumThreads(t *testing.T) {
	before := NumThreads()
	defer SetNumThreads(before)
	if err := SetNumThreads(2); err != nil {
		t.Fatal(err)
	}
	if got := NumThreads(); got != 2 {
		t.Errorf("NumThreads = %d after SetNumThreads(2)", got)
	}
	wantTorchError(t, SetNumThreads(0), "set_num_threads", "at least 1")
	if Version() == "" {
		t.Error("empty libtorch version")
	}
}

// The shim's static out-of-memory error reads as a failure with its message
// and is never freed (freeing static storage would abort the process).
func TestOutOfMemoryErrorIsAnErrorAndNotFreed(t *testing.T) {
	if outOfMemory == nil {
		t.Fatal("the shim's out-of-memory error is NULL, which reads as success")
	}
	for range 3 {
		wantTorchError(t, takeError("conv2d", outOfMemory), "conv2d", "out of memory")
	}
}
