package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/serve/api"
	"github.com/ddpm-go/ddpm/diffusion/serve/client"
)

// Whatever a server streams, Stream returns a result, an *Error or an error,
// without a panic; progress gets only events it could decode.
func FuzzStream(f *testing.F) {
	for _, s := range []string{
		"event: progress\ndata: {\"step\":1,\"steps\":2,\"images\":0}\n\nevent: result\ndata: {\"model\":\"m\",\"seed\":1,\"data\":[]}\n\n",
		"event: error\ndata: {\"error\":{\"code\":\"internal_error\",\"message\":\"x\"}}\n\n",
		"event: progress\ndata: {\"step\":\n\n",
		"data: only\n\n",
		"",
	} {
		f.Add([]byte(s))
	}
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(body)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, client.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body = b
		resp, err := c.Stream(context.Background(), api.GenerationRequest{}, func(api.ProgressEvent) {})
		var e *client.Error
		if (resp == nil) == (err == nil) || (errors.As(err, &e) && e.Status != 200) {
			t.Fatalf("result %v, error %v", resp, err)
		}
	})
}
