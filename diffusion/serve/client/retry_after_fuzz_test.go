package client

import (
	"testing"
	"time"
)

// FuzzRetryAfter reads any Retry-After header as a wait in [0, a day],
// never a negative or overflowed one, and never panics.
func FuzzRetryAfter(f *testing.F) {
	for _, h := range []string{"", "0", "120", "99999999999", "-5", "soon", "Mon, 01 Jan 2001 00:00:00 GMT", "1e3", " 7"} {
		f.Add(h)
	}
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, h string) {
		if d := retryAfter(h, now); d < 0 || d > maxRetryAfter {
			t.Fatalf("Retry-After %q: %v", h, d)
		}
	})
}
