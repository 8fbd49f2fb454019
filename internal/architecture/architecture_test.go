package architecture_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/speechgate/speechgate"

// pkg is what `go list -json` says of a package.
type pkg struct {
	ImportPath string
	Dir        string
	Imports    []string
	Deps       []string
	GoFiles    []string
}

func list(t *testing.T) map[string]*pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]*pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")] = &p
	}
	return pkgs
}

// ours returns the module's own packages among paths, relative to the module.
func ours(paths []string) []string {
	var out []string
	for _, p := range paths {
		if rel, ok := strings.CutPrefix(p, module+"/"); ok {
			out = append(out, rel)
		}
	}
	return out
}

func TestPackageRules(t *testing.T) {
	t.Parallel()
	pkgs := list(t)
	get := func(name string) *pkg {
		p, ok := pkgs[name]
		if !ok {
			t.Fatalf("no package %s", name)
		}
		return p
	}
	dependsOn := func(name, dep string) bool {
		return slices.ContainsFunc(get(name).Deps, func(d string) bool { return d == dep || strings.HasPrefix(d, dep+"/") })
	}

	rules := []struct {
		rule string
		ok   bool
	}{
		{"the upstream client imports neither gRPC nor gen/", !dependsOn("internal/smallest", "google.golang.org/grpc") && !dependsOn("internal/smallest", module+"/gen")},
		{"the upstream client imports only wire formats of the module's",
			isSubset(ours(get("internal/smallest").Deps), []string{"internal/sse", "internal/audio"})},
		{"the services never import the emulator", !dependsOn("internal/speech", module+"/internal/emulator") && !dependsOn("internal/contract", module+"/internal/emulator")},
		{"the services never import the transport", !dependsOn("internal/speech", module+"/server") && !dependsOn("internal/contract", module+"/server")},
		{"the transport never imports the services", !slices.Contains(get("server").Imports, module+"/internal/speech")},
		{"speechctl never imports the upstream client", !dependsOn("cmd/speechctl", module+"/internal/smallest")},
		{"rpcerror is a leaf", len(ours(get("internal/rpcerror").Deps)) == 0},
		{"auth depends on nothing of the module's but rpcerror", isSubset(ours(get("internal/auth").Deps), []string{"internal/rpcerror"})},
		{"config depends on nothing of the module's but auth and rpcerror", isSubset(ours(get("internal/config").Deps), []string{"internal/auth", "internal/rpcerror"})},
		{"the fleet's state depends on nothing of the module's but metrics", isSubset(ours(get("internal/fleet").Deps), []string{"internal/metrics"})},
		{"admission knows the fleet, not the upstream client it gates", isSubset(ours(get("internal/admission").Deps), []string{"internal/fleet", "internal/metrics", "internal/rpcerror"})},
		{"quotas know callers and the fleet, not the upstream", !dependsOn("internal/quota", module+"/internal/smallest") && !dependsOn("internal/quota", module+"/internal/speech")},
		{"config and auth stay small (under 200 packages with the standard library)", len(get("internal/config").Deps) < 200 && len(get("internal/auth").Deps) < 200},
	}
	for _, r := range rules {
		if !r.ok {
			t.Errorf("broken: %s", r.rule)
		}
	}

	// Only the interceptor chain translates upstream errors.
	for name, p := range pkgs {
		if slices.Contains(p.Imports, module+"/internal/translate") && name != "server" {
			t.Errorf("broken: %s imports internal/translate, which only the server's interceptor chain may", name)
		}
	}
}

// TestGenHoldsOnlyGeneratedCode: buf generate empties gen/ before writing,
// so anything written there by hand would be lost.
func TestGenHoldsOnlyGeneratedCode(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..", "gen")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		generated := false
		for i := 0; i < 5 && sc.Scan(); i++ {
			if strings.HasPrefix(sc.Text(), "// Code generated") && strings.Contains(sc.Text(), "DO NOT EDIT") {
				generated = true
			}
		}
		if !generated {
			t.Errorf("%s is not generated code: nothing may be written by hand under gen/", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func isSubset(got, allowed []string) bool {
	for _, g := range got {
		if !slices.Contains(allowed, g) {
			return false
		}
	}
	return true
}
