package auth_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/gatewaytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSetKeys(t *testing.T) {
	t.Parallel()
	keys := []auth.ClientKey{{Name: "svc", Key: "k_0123456789abcdef"}}
	tests := []struct {
		name    string
		mode    auth.Mode
		keys    []auth.ClientKey
		wantErr string
	}{
		{name: "new keys", mode: auth.ModeKeys, keys: []auth.ClientKey{{Name: "other", Key: "k_fedcba9876543210"}}},
		{name: "no keys", mode: auth.ModeKeys, wantErr: "lock every caller out"},
		{name: "passthrough mode", mode: auth.ModePassthrough, keys: keys, wantErr: "only used with --auth=keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var initial []auth.ClientKey
			if tt.mode == auth.ModeKeys {
				initial = keys
			}
			a, err := auth.New(tt.mode, upstream, initial)
			if err != nil {
				t.Fatal(err)
			}
			err = a.SetKeys(tt.keys)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SetKeys = %v, want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Authenticate(incoming(t.Context(), "Bearer "+keys[0].Key)); err == nil {
				t.Error("the replaced key still authenticates")
			}
			ctx, err := a.Authenticate(incoming(t.Context(), "Bearer "+tt.keys[0].Key))
			if err != nil || auth.Caller(ctx) != tt.keys[0].Name {
				t.Errorf("the new key: caller %q, %v", auth.Caller(ctx), err)
			}
		})
	}
}

// TestWatchKeysFile rewrites a keys file as the kubelet does when its Secret
// changes, and checks that the gateway follows: a new key is let in, a
// removed one is not, and a broken file leaves the keys in use.
func TestWatchKeysFile(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "k_old_0123456789abcdef", "k_new_0123456789abcdef"
	path := filepath.Join(t.TempDir(), "keys")
	write := func(content string) {
		t.Helper()
		// Write beside it and rename: a reader never sees half a file.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("billing " + oldKey + "\n")
	keys, err := auth.ReadKeysFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.ModeKeys, upstream, keys)
	if err != nil {
		t.Fatal(err)
	}
	var logs gatewaytest.Logs
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.WatchKeysFile(ctx, path, 5*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done })

	allowed := func(key string) bool {
		_, err := a.Authenticate(incoming(t.Context(), "Bearer "+key))
		return err == nil
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s; log:\n%s", what, logs.String())
			}
		}
	}

	write("billing " + newKey + "\n")
	eventually("the new key is let in", func() bool { return allowed(newKey) })
	if allowed(oldKey) {
		t.Error("the removed key is still let in")
	}

	write("billing " + oldKey + " and more\n") // not a keys file
	eventually("the broken file is reported", func() bool { return strings.Contains(logs.String(), "is not valid") })
	if !allowed(newKey) || allowed(oldKey) {
		t.Error("a broken file changed the keys in use")
	}
	if strings.Contains(logs.String(), oldKey) || strings.Contains(logs.String(), newKey) {
		t.Errorf("the log holds a key:\n%s", logs.String())
	}
}
