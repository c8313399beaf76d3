// Package metrics computes sample-quality scores for generative image models
// from features that a network extracted elsewhere: the Fréchet distance
// between Gaussian fits of two feature sets (FID, Heusel et al. 2017), the
// kernel distance (KID, Bińkowski et al. 2018) and the Inception Score
// (Salimans et al. 2016). It also reads and writes reference statistics in
// the .npz layout of pytorch-fid, so published statistics can be reused.
//
// Features are passed as a flat row-major []float64 of n rows (samples) and
// d columns; Flatten turns a [][]float64 into that layout. All arithmetic is
// float64 and pure Go (gonum's mat package).
//
// Errors are lower case and start "metrics: ". A reference file that cannot
// be used is reported as a *FileError naming the file; match it with
// errors.Is against ErrFormat or ErrTruncated, or fs.ErrNotExist for a
// missing file.
package metrics
