package main

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzCheckEnvironment: any value of the variables either passes or is one
// line naming the variable, and a thread count passes only when every
// count of the list is a positive integer.
func FuzzCheckEnvironment(f *testing.F) {
	for _, v := range []string{"4", "4,2", " 4 ", "", "0", "-3", "x", "4,", "1e3", "99999999999999999999"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, name := range []string{"OMP_NUM_THREADS", "DDPM_CPU_CACHE_MB"} {
			err := checkEnvironment(func(k string) (string, bool) {
				if k != name {
					return "", false
				}
				return v, true
			})
			if err != nil && (!strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n")) {
				t.Fatalf("%s=%q: %q is not one line naming the variable", name, v, err)
			}
			if name == "OMP_NUM_THREADS" && err == nil && strings.TrimSpace(v) != "" {
				for _, c := range strings.Split(v, ",") {
					if n, perr := strconv.Atoi(strings.TrimSpace(c)); perr != nil || n < 1 {
						t.Fatalf("%s=%q passed with the count %q", name, v, c)
					}
				}
			}
		}
	})
}
