package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

// Data-parallel training: `ddpm train` started as N processes by a launcher
// of PyTorch jobs (torchrun, or anything that sets RANK, WORLD_SIZE,
// MASTER_ADDR and MASTER_PORT) trains one model together. --batch is the
// batch of each rank, so the global batch is --batch x WORLD_SIZE. Rank 0
// writes the run directory (configuration, checkpoints, metrics, sample
// grids); the other ranks only train. With none of the variables set,
// training is single-process.

// joinProcessGroup joins the job described by the launch environment, or
// returns nil when there is none. dev is adjusted to the rank's GPU
// (LOCAL_RANK) when the device was not pinned to one.
func joinProcessGroup(c *cli.Context, dev *torch.Device, out io.Writer) (*torch.ProcessGroup, error) {
	timeout := c.Duration("dist-timeout")
	if timeout <= 0 {
		return nil, fmt.Errorf("--dist-timeout %v must be positive", timeout)
	}
	env, ok, err := torch.DistEnv()
	if err != nil || !ok {
		return nil, err
	}
	if dev.Type == torch.DeviceCUDA && !strings.Contains(c.String("device"), ":") {
		local, err := localDevice(env.LocalRank)
		if err != nil {
			return nil, err
		}
		*dev = local
	}
	pg, err := torch.NewProcessGroup(env.Addr, env.Port, env.Rank, env.World, timeout)
	if err != nil {
		// The shim's message names the rank, the rendezvous address and
		// what it waited for.
		var te *torch.Error
		if errors.As(err, &te) {
			first, _, _ := strings.Cut(te.Msg, "\n")
			return nil, errors.New(first)
		}
		return nil, fmt.Errorf("joining the distributed job: %w", err)
	}
	fmt.Fprintf(out, "ddpm: rank %d of %d (local rank %d, rendezvous %s:%d), device %s\n",
		env.Rank, env.World, env.LocalRank, env.Addr, env.Port, *dev)
	return pg, nil
}

// cudaDevices counts the GPUs; tests replace it.
var cudaDevices = torch.CUDADeviceCount

// localDevice is the GPU of the rank with LOCAL_RANK localRank, one GPU a
// rank. It is checked before joining: a rank past the machine's last GPU
// would otherwise fail at its first CUDA call, deep inside training.
func localDevice(localRank int) (torch.Device, error) {
	if n := cudaDevices(); localRank >= n {
		return torch.Device{}, fmt.Errorf("LOCAL_RANK %d asks for cuda:%d, but this machine has %d CUDA device(s): start at most %d ranks on it, or give --device cuda:N",
			localRank, localRank, n, n)
	}
	return torch.CUDA(localRank), nil
}

// reportComm tells how much of the training time this rank spent waiting
// for the gradient all-reduce after backward, and how much of it overlapped
// backward.
func reportComm(out io.Writer, pg *torch.ProcessGroup, tr *train.Trainer, total time.Duration) {
	if pg == nil || total <= 0 {
		return
	}
	comm := tr.CommTime()
	buckets, early := tr.GradOverlap()
	fmt.Fprintf(out, "ddpm: rank %d: %.2f s of %.2f s training waiting for the gradient all-reduce (%.1f%%); %d of %d buckets started during backward\n",
		pg.Rank(), comm.Seconds(), total.Seconds(), 100*comm.Seconds()/total.Seconds(), early, buckets)
}

// shardOptions gives a rank its part of every epoch. Every batch must be
// full (DropLast), so that each step averages equal shares of one global
// batch.
func shardOptions(o data.LoaderOptions, pg *torch.ProcessGroup) data.LoaderOptions {
	if pg != nil {
		o.Shard, o.NumShards, o.DropLast = pg.Rank(), pg.World(), true
	}
	return o
}

// trainRank is the training loop of a rank other than 0: the same model,
// trainer and (on resume) checkpoint as rank 0, its own shard of the data,
// and no output but errors.
func trainRank(c *cli.Context, cfg runConfig, dir, resume string, dev torch.Device, trainSet *data.Dataset, pg *torch.ProcessGroup) error {
	rt, err := newRunTrainer(cfg, dir, resume != "", dev, trainSet, pg)
	if err != nil {
		return err
	}
	defer rt.close()
	tr := rt.tr
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	err = tr.Run(ctx, rt.loader)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	if err != nil {
		return err
	}
	reportComm(c.App.Writer, pg, tr, time.Since(start))
	return nil
}
