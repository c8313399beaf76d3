// Package enum is the one way the project parses the names of its
// enumerations (schedule kinds, samplers, spacings, targets, ...): matching
// ignores case and surrounding space, and treats '_' and ' ' like '-', so
// "Scaled_Linear" names "scaled-linear". Aliases (diffusers' names, short
// forms) are matched the same way. The empty string is never a valid name:
// a zero-valued option field means "the default", a parsed name never does.
package enum

import (
	"fmt"
	"strings"
)

// Normalize is the form names are compared in.
func Normalize(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.NewReplacer("_", "-", " ", "-").Replace(s)
}

// Parse returns the value of valid, or of aliases, whose name matches s.
// what names the enumeration in the error ("sampler", "schedule kind"),
// which lists the valid names.
func Parse[T ~string](what, s string, valid []T, aliases map[string]T) (T, error) {
	norm := Normalize(s)
	if norm != "" {
		for _, v := range valid {
			if Normalize(string(v)) == norm {
				return v, nil
			}
		}
		for a, v := range aliases {
			if Normalize(a) == norm {
				return v, nil
			}
		}
	}
	var zero T
	return zero, fmt.Errorf("unknown %s %q (valid: %s)", what, s, List(valid))
}

// Valid reports whether v is one of valid.
func Valid[T ~string](v T, valid []T) bool {
	for _, w := range valid {
		if v == w {
			return true
		}
	}
	return false
}

// List joins the names of valid with ", ".
func List[T ~string](valid []T) string {
	names := make([]string, len(valid))
	for i, v := range valid {
		names[i] = string(v)
	}
	return strings.Join(names, ", ")
}
