package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// runVersion prints what this binary is: the module version, the VCS
// revision it was built from (and whether the tree had local changes),
// and the Go version and platform.
func runVersion(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			fmt.Fprint(stderr, "Usage: kvdb version (or kvdb --version)\n\nPrints the module version, the VCS revision and time of the build, and the Go\nversion and platform, on one line.\n")
			return nil
		}
		fmt.Fprintln(stderr, "kvdb version: takes no arguments")
		return errUsage
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("no build information in this binary")
	}
	_, err := fmt.Fprintln(stdout, versionLine(bi))
	return err
}

// versionLine is "kvdb VERSION (REVISION[, modified], TIME) GOVERSION
// OS/ARCH"; the parenthesis is left out when the build has no VCS stamp
// (go build -buildvcs=false, or a build outside a repository).
func versionLine(bi *debug.BuildInfo) string {
	version := bi.Main.Version
	if version == "" {
		version = "(unknown)"
	}
	var rev, when string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	line := "kvdb " + version
	if rev != "" {
		line += " (" + rev
		if modified {
			line += ", modified"
		}
		if when != "" {
			line += ", " + when
		}
		line += ")"
	}
	goVersion := bi.GoVersion
	if goVersion == "" {
		goVersion = runtime.Version()
	}
	return line + " " + goVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}
