package diffusers

import (
	"encoding/json"
	"reflect"
	"testing"
)

// Any bytes as an AutoencoderKL config.json: an error, or a configuration
// that validates and that writes out and parses back unchanged.
func FuzzParseAutoencoderConfig(f *testing.F) {
	addFiles(f, "vae/vae/config.json", "unet-ddpm/unet/config.json")
	f.Add([]byte(`{"_class_name":"AutoencoderKL","block_out_channels":[0],"shift_factor":1e309}`))
	f.Add([]byte(`{"_class_name":"AutoencoderKL","latents_mean":[0,1,2,3],"LATENT_CHANNELS":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseAutoencoderConfig(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("a config that parsed does not validate: %v", err)
		}
		out, err := json.Marshal(autoencoderFile{ClassName: AutoencoderClass, DiffusersVersion: Version, Config: c})
		if err != nil {
			t.Fatalf("a config that parsed does not encode: %v", err)
		}
		back, err := ParseAutoencoderConfig(out)
		if err != nil {
			t.Fatalf("%s does not parse back: %v", out, err)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("%s parses back as %+v, not %+v", out, back, c)
		}
	})
}
