// Package buildinfo says which build of a speechgate binary is running:
// its version, the commit it was built from and that commit's date, as the
// Go toolchain records them in the binary.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Info is a binary's build.
type Info struct {
	// Version is the version set at build time (-ldflags "-X main.version=…"),
	// else the module's version ("(devel)" for a build from a checkout).
	Version string
	// Commit and CommitTime identify the source; Modified says the checkout
	// had uncommitted changes. Empty when built outside version control.
	Commit, CommitTime string
	Modified           bool
	GoVersion          string
}

// Read returns the running binary's build; version is the one set at build
// time, or "" or "dev" when none was.
func Read(version string) Info {
	info := Info{Version: version, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if info.Version == "" || info.Version == "dev" {
		info.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.time":
			info.CommitTime = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the line --version prints: "speechgate v0.1.0, commit 1a2b3c4d5e6f
// (2026-12-01T10:00:00Z, modified), go1.26.8".
func (i Info) String() string {
	s := i.Version
	if s == "" {
		s = "(unknown version)"
	}
	if i.Commit != "" {
		commit := i.Commit
		if len(commit) > 12 {
			commit = commit[:12]
		}
		s += ", commit " + commit
		var extra []string
		if i.CommitTime != "" {
			extra = append(extra, i.CommitTime)
		}
		if i.Modified {
			extra = append(extra, "modified")
		}
		if len(extra) > 0 {
			s += " (" + strings.Join(extra, ", ") + ")"
		}
	}
	return fmt.Sprintf("%s, %s", s, i.GoVersion)
}
