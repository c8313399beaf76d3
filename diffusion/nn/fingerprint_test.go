package nn

import (
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

// The fingerprint is the same for equal parameters and changes with any
// value, name or shape, and with another parameter.
func TestFingerprint(t *testing.T) {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	a := s.FromFloat32s([]float32{1, 2, 3, 4}, 2, 2)
	b := s.FromFloat32s([]float32{1, 2, 3, 4}, 2, 2)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	fp := func(ps ...Param) string {
		t.Helper()
		f, err := Fingerprint(ps)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	base := fp(Param{"w", a})
	if len(base) != 64 || fp(Param{"w", b}) != base {
		t.Fatalf("fingerprints %s and %s of equal parameters", base, fp(Param{"w", b}))
	}
	for what, other := range map[string]string{
		"a value": fp(Param{"w", s.FromFloat32s([]float32{1, 2, 3, 5}, 2, 2)}),
		"a name":  fp(Param{"v", a}),
		"a shape": fp(Param{"w", s.Reshape(a, 4)}),
		"a param": fp(Param{"w", a}, Param{"v", b}),
	} {
		if other == base {
			t.Errorf("%s changed, the fingerprint did not", what)
		}
	}
}
