package serve

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/serve/api"
)

// A request ID header is kept when usable and replaced otherwise: what
// comes out is the header itself or a fresh 26-character ID, always 1 to 128
// characters of the allowed set (nothing a log line could be forged with).
func FuzzRequestID(f *testing.F) {
	for _, s := range []string{"", "client-7", "a b", "x\ny", strings.Repeat("z", 129), "uuid:1+2/3=", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r := &http.Request{Header: http.Header{api.RequestIDHeader: {h}}}
		id := requestID(r)
		if len(id) < 1 || len(id) > 128 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+/=") != "" {
			t.Fatalf("header %q gave request ID %q", h, id)
		}
		if id != h && len(id) != 26 {
			t.Fatalf("header %q replaced by %q, not a fresh ID", h, id)
		}
	})
}
