package unet

// Helpers of the internal tests that the external test package uses.
var (
	BenchModel            = benchModel
	StartCompareReference = startCompareReference
	LinearSchedule        = linearSchedule
)
