package main

import (
	"fmt"

	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the versions of ddpm, libtorch and the BLAS, CUDA availability, the shim's kernels and threads",
	Action: func(c *cli.Context) error {
		w := c.App.Writer
		fmt.Fprintf(w, "ddpm      %s\n", version)
		fmt.Fprintf(w, "libtorch  %s\n", torch.Version())
		if torch.CUDAAvailable() {
			fmt.Fprintf(w, "cuda      available (%d device(s))\n", torch.CUDADeviceCount())
		} else {
			fmt.Fprintf(w, "cuda      not available\n")
		}
		if blas := torch.BLAS(); blas != "" {
			fmt.Fprintf(w, "blas      %s\n", blas)
		}
		if v := torch.ConvKernelVectors(); v != "" {
			fmt.Fprintf(w, "kernels   %s (the shim's Winograd, 1x1 and narrow convolutions in float32 sampling)\n", v)
		} else {
			fmt.Fprintf(w, "kernels   none (no AVX-512 or AVX2 here: libtorch's convolutions)\n")
		}
		threads := torch.NumThreads()
		if n := torch.DefaultThreads(); n > 0 {
			threads = n
		}
		fmt.Fprintf(w, "threads   %d (intra-op CPU threads the commands use without --threads; libtorch's default: %d)\n",
			threads, torch.NumThreads())
		return nil
	},
}
