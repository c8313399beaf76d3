package torch

// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"strconv"
	"strings"
)

// DeviceType is the kind of device a tensor lives on.
type DeviceType int32

// Device types.
const (
	DeviceCPU  DeviceType = C.DDPM_CPU
	DeviceCUDA DeviceType = C.DDPM_CUDA
)

// Device is where a tensor lives: the CPU or one CUDA device.
type Device struct {
	Type  DeviceType
	Index int // CUDA device ordinal; ignored for the CPU
}

// CPU is the host device.
var CPU = Device{Type: DeviceCPU}

// CUDA returns the CUDA device with the given ordinal.
func CUDA(index int) Device { return Device{Type: DeviceCUDA, Index: index} }

func (d Device) String() string {
	if d.Type == DeviceCUDA {
		return fmt.Sprintf("cuda:%d", d.Index)
	}
	return "cpu"
}

func (d Device) cType() C.int32_t { return C.int32_t(d.Type) }

func (d Device) cIndex() C.int32_t {
	if d.Type == DeviceCPU {
		return -1
	}
	return C.int32_t(d.Index)
}

// ParseDevice accepts "cpu", "cuda", "cuda:N" and "auto" (the first CUDA
// device when one is available, the CPU otherwise). It checks that a CUDA
// device exists, so a bad request fails here with a clear message.
func ParseDevice(s string) (Device, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "auto":
		return BestDevice(), nil
	case s == "cpu":
		return CPU, nil
	case s == "cuda" || strings.HasPrefix(s, "cuda:"):
		idx := 0
		if s != "cuda" {
			n, err := strconv.Atoi(s[len("cuda:"):])
			if err != nil || n < 0 {
				return Device{}, fmt.Errorf("bad device %q: the CUDA ordinal must be a non-negative integer", s)
			}
			idx = n
		}
		d := CUDA(idx)
		if err := d.Check(); err != nil {
			return Device{}, err
		}
		return d, nil
	}
	return Device{}, fmt.Errorf("unknown device %q (want cpu, cuda, cuda:N or auto)", s)
}

// Check reports whether the device can be used with this libtorch.
func (d Device) Check() error {
	if d.Type == DeviceCPU {
		return nil
	}
	n := CUDADeviceCount()
	if n == 0 {
		return fmt.Errorf("device %s requested, but this libtorch has no CUDA support or no GPU is present (use cpu)", d)
	}
	if d.Index >= n {
		return fmt.Errorf("device %s requested, but only %d CUDA device(s) present", d, n)
	}
	return nil
}

// BestDevice is cuda:0 when a GPU is usable and the CPU otherwise.
func BestDevice() Device {
	if CUDAAvailable() {
		return CUDA(0)
	}
	return CPU
}
