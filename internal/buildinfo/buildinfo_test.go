package buildinfo_test

import (
	"strings"
	"testing"

	"github.com/speechgate/speechgate/internal/buildinfo"
)

func TestString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		info buildinfo.Info
		want string
	}{
		{buildinfo.Info{Version: "v1.2.0", Commit: "0123456789abcdef0123", CommitTime: "2026-12-01T10:00:00Z", GoVersion: "go1.26.8"},
			"v1.2.0, commit 0123456789ab (2026-12-01T10:00:00Z), go1.26.8"},
		{buildinfo.Info{Version: "(devel)", Commit: "abc", Modified: true, GoVersion: "go1.26.8"}, "(devel), commit abc (modified), go1.26.8"},
		{buildinfo.Info{GoVersion: "go1.26.8"}, "(unknown version), go1.26.8"},
	}
	for _, tt := range tests {
		if got := tt.info.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	// A test binary has build info: the version set at build time wins.
	if got := buildinfo.Read("ci").Version; got != "ci" {
		t.Errorf("Read(ci).Version = %q", got)
	}
	if got := buildinfo.Read("dev").String(); !strings.Contains(got, "go1.") {
		t.Errorf("Read(dev) = %q", got)
	}
}
