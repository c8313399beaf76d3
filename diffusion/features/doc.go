// Package features turns images into feature vectors for sample-quality
// metrics, and computes those metrics against a reference set.
//
// Two feature networks are provided, behind the Extractor interface:
//
//   - Inception-v3 as a TorchScript file (inception-2015-12-05.pt, the network
//     of StyleGAN's metrics and clean-fid), loaded with LoadInception. Its
//     2048 pool features give the usual FID and KID, its 1008 class
//     probabilities the Inception Score. The file is never downloaded: it is
//     looked for where the caller says and in the cache directory, and the
//     error for a missing file says where to get it.
//   - A small classifier that this package trains itself on a labelled
//     dataset (Classifier), cached on disk under a hash of the data
//     (ClassifierFor). Its features (256 at the default width) give an
//     offline FID that needs no external weights. Scores in its feature
//     space are called "fid-classifier" and the like and are not comparable
//     with Inception FID, nor between different datasets or classifier
//     versions: they are for following one model's training and for
//     comparing models trained on the same data.
//
// Evaluate extracts the features of generated images and compares them with
// a Reference: the Fréchet distance of Gaussian fits (FID), the kernel
// distance (KID, when the reference's features are at hand, not only its
// statistics), the Inception Score and a histogram of predicted classes
// (when the extractor gives class probabilities). The arithmetic is that of
// package metrics.
//
// Images are float32 NCHW in [-1, 1], as everywhere in this module.
package features
