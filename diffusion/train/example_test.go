package train_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// Training with the library alone: a tiny U-Net, a schedule, a trainer and a
// batch source; the checkpoint it writes describes the model by itself.
func ExampleTrainer_Run() {
	dir, _ := os.MkdirTemp("", "train-example-")
	defer os.RemoveAll(dir)
	ds := &data.Dataset{N: 8, C: 1, H: 16, W: 16, Images: make([]float32, 8*16*16), Source: "zeros"}
	loader, err := data.NewLoader(ds, data.LoaderOptions{BatchSize: 4, Seed: 1, Shuffle: true})
	if err != nil {
		panic(err)
	}
	defer loader.Close()

	cfg, _ := unet.Preset("tiny")
	model, err := unet.NewForTraining(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		panic(err)
	}
	defer model.Close()
	sched, _ := diffusion.NewSchedule(diffusion.ScheduleConfig{T: 100})
	tr, err := train.New(model, sched, train.Config{Steps: 2, BatchSize: 4}, torch.CPU, []int64{1, 16, 16})
	if err != nil {
		panic(err)
	}
	defer tr.Close()
	tr.Dir = dir
	if err := tr.Run(context.Background(), loader); err != nil {
		panic(err)
	}
	meta, err := checkpoint.ReadMeta(tr.LastCheckpoint())
	if err != nil {
		panic(err)
	}
	fmt.Println(filepath.Base(tr.LastCheckpoint()), meta.Step, meta.Target, meta.Schedule.T, meta.Model.ImageSize)
	// Output: ckpt-00000002.safetensors 2 epsilon 100 16
}
