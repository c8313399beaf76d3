package torch

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// keepers are the functions that keep their tensor arguments alive up to
// the point where they run (see keepAlive).
var keepers = map[string]bool{"keepAlive": true, "KeepAlive": true, "wrap": true, "check": true, "draw": true}

// handleFuncs may take tensor handles without keeping the tensors alive:
// they only check or hand out handles, or free the tensor.
var handleFuncs = map[string]bool{"(*Tensor).Close": true, "(*Tensor).handle": true, "opt": true, "handles": true}

// unkeptHandles lists, for one file, every tensor whose C handle is taken
// (t.h, t.handle(), opt(t), handles(op, ts)) before a shim call (C.ddpm_*)
// without the tensor being passed to a keeper after the last such call.
func unkeptHandles(fset *token.FileSet, f *ast.File) []string {
	var bad []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Body == nil || handleFuncs[funcName(fn)] {
			continue
		}
		types := declaredTypes(fn)
		isTensor := func(e ast.Expr) (string, bool) {
			id, ok := e.(*ast.Ident)
			if !ok {
				return "", false
			}
			typ, declared := types[id.Name]
			return id.Name, !declared || strings.HasSuffix(typ, "*Tensor")
		}
		type take struct {
			name string
			pos  token.Pos
		}
		var takes []take
		var shimCalls []*ast.CallExpr
		kept := map[string][]token.Pos{}
		nilChecks := map[ast.Node]bool{}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BinaryExpr:
				if id, ok := n.Y.(*ast.Ident); ok && id.Name == "nil" {
					nilChecks[n.X] = true // t.handle() == nil only checks
				}
			case *ast.SelectorExpr:
				if n.Sel.Name == "h" {
					if name, ok := isTensor(n.X); ok {
						takes = append(takes, take{name, n.Pos()})
					}
				}
			case *ast.CallExpr:
				switch fun := n.Fun.(type) {
				case *ast.SelectorExpr:
					if pkg, ok := fun.X.(*ast.Ident); ok && pkg.Name == "C" && strings.HasPrefix(fun.Sel.Name, "ddpm_") {
						shimCalls = append(shimCalls, n)
					}
					if fun.Sel.Name == "handle" && len(n.Args) == 0 && !nilChecks[n] {
						if name, ok := isTensor(fun.X); ok {
							takes = append(takes, take{name, n.Pos()})
						}
					}
					if keepers[fun.Sel.Name] {
						addKept(kept, n.Args)
					}
				case *ast.Ident:
					switch {
					case fun.Name == "opt" && len(n.Args) == 1:
						if name, ok := isTensor(n.Args[0]); ok {
							takes = append(takes, take{name, n.Pos()})
						}
					case fun.Name == "handles" && len(n.Args) == 2:
						if name, ok := isTensor(n.Args[1]); ok {
							takes = append(takes, take{name, n.Pos()})
						}
					case keepers[fun.Name]:
						addKept(kept, n.Args)
					}
				}
			}
			return true
		})
		for _, tk := range takes {
			var last token.Pos
			for _, c := range shimCalls {
				if c.End() > tk.pos && c.End() > last {
					last = c.End()
				}
			}
			if last == token.NoPos {
				continue // no shim call uses the handle
			}
			ok := false
			for _, p := range kept[tk.name] {
				ok = ok || p > last
			}
			if !ok {
				bad = append(bad, fmt.Sprintf("%s: %s: %s is not kept alive after the shim call",
					fset.Position(tk.pos), funcName(fn), tk.name))
			}
		}
	}
	return bad
}

func addKept(kept map[string][]token.Pos, args []ast.Expr) {
	for _, a := range args {
		if id, ok := a.(*ast.Ident); ok {
			kept[id.Name] = append(kept[id.Name], id.Pos())
		}
	}
}

// declaredTypes maps the names of a function's receiver and parameters to
// their types as written.
func declaredTypes(fn *ast.FuncDecl) map[string]string {
	types := map[string]string{}
	var lists []*ast.FieldList
	if fn.Recv != nil {
		lists = append(lists, fn.Recv)
	}
	lists = append(lists, fn.Type.Params)
	for _, l := range lists {
		for _, f := range l.List {
			for _, n := range f.Names {
				types[n.Name] = exprString(f.Type)
			}
		}
	}
	return types
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return "*" + exprString(e.X)
	case *ast.ArrayType:
		return "[]" + exprString(e.Elt)
	case *ast.Ellipsis:
		return "..." + exprString(e.Elt)
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	}
	return fmt.Sprintf("%T", e)
}

func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	return "(" + exprString(fn.Recv.List[0].Type) + ")." + fn.Name.Name
}

// Every wrapper that hands tensor handles to the shim keeps the tensors
// alive until the call has returned (through wrap, check or keepAlive).
func TestShimCallsKeepTheirTensorsAlive(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var bad []string
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		bad = append(bad, unkeptHandles(fset, f)...)
		checked++
	}
	if checked < 10 {
		t.Fatalf("checked only %d files", checked)
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
}

// The source check finds a wrapper that forgets its input.
func TestKeepAliveCheckFindsAForgottenInput(t *testing.T) {
	const src = `package torch
func (s *Scope) good(a, b *Tensor) *Tensor {
	var out C.ddpm_tensor
	return s.wrap("x", C.ddpm_binary(s.mode, 0, a.h, b.h, &out), out, a, b)
}
func (s *Scope) bad(a, b *Tensor) *Tensor {
	var out C.ddpm_tensor
	return s.wrap("x", C.ddpm_binary(s.mode, 0, a.h, b.h, &out), out, a)
}
func (t *Tensor) badMethod() error {
	h := t.handle()
	if h == nil {
		return ErrClosed
	}
	return takeError("zero_grad", C.ddpm_zero_grad(h))
}
func (g *Generator) other() { C.ddpm_generator_free(g.h) }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "snippet.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := unkeptHandles(fset, f)
	want := []string{"(*Scope).bad: b ", "(*Tensor).badMethod: t "}
	if len(bad) != len(want) {
		t.Fatalf("found %d problems, want %d: %q", len(bad), len(want), bad)
	}
	for i, w := range want {
		if !strings.Contains(bad[i], w) {
			t.Errorf("problem %d is %q, want one about %q", i, bad[i], w)
		}
	}
}
