package nn

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Fingerprint is the SHA-256, in hex, of params' names, dtypes, shapes and
// values in their order: two modules of the same fingerprint compute the
// same function. A checkpoint that depends on another model's weights (a
// latent diffusion model on its autoencoder's) records it, so that other
// weights under the same path are noticed rather than silently used.
func Fingerprint(params []Param) (string, error) {
	h := sha256.New()
	var n [8]byte
	for _, p := range params {
		m, err := p.T.Meta()
		if err != nil {
			return "", fmt.Errorf("nn: fingerprint of %s: %w", p.Name, err)
		}
		b, err := p.T.Bytes()
		if err != nil {
			return "", fmt.Errorf("nn: fingerprint of %s: %w", p.Name, err)
		}
		fmt.Fprintf(h, "%s\x00%v\x00%v\x00", p.Name, m.DType, m.Shape)
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
