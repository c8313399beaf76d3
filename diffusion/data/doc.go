// Package data reads image datasets for training diffusion models and serves
// them in shuffled, prefetched batches.
//
// A Dataset holds every image in memory as float32 in [-1, 1], the range a
// DDPM is trained on: a pixel byte v becomes v/127.5 - 1, so 0 maps to -1 and
// 255 to 1. Images are stored planar (NCHW), one C×H×W block per image.
//
// Datasets come from MNIST-style IDX files (ReadIDX), CIFAR-10 binary batches
// (ReadCIFAR10) or a folder of PNG, JPEG, GIF, BMP or WebP files
// (ReadImageFolder). Open picks the reader from a path and brings the result
// to the size and channel count a model expects.
//
// A Loader turns a Dataset into an endless stream of batches. Batch k of a
// loader is a function of the loader's options and k alone, so a trainer that
// resumes from a checkpoint calls Skip with the number of batches it has
// already consumed and goes on with the same data it would have seen.
//
// A missing path or a file whose contents are wrong is reported as a
// *FileError naming the path; match it with errors.Is against ErrNotFound
// (which also matches fs.ErrNotExist), ErrFormat, ErrTruncated or
// ErrNoImages. Other I/O errors are passed on wrapped. Every message starts
// "data: " and is lower case.
package data
