package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoServerDeps keeps the promise of the package doc: a program that
// only talks to a cluster links no server code.
func TestNoServerDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the dependencies with")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	// The server packages, and what only they need.
	forbidden := []string{
		"github.com/kvdb/kvdb/node", "github.com/kvdb/kvdb/store", "github.com/kvdb/kvdb/ring",
		"github.com/hashicorp/memberlist", "github.com/syndtr/goleveldb",
	}
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") && !strings.HasPrefix(dep, "github.com/kvdb/kvdb/node/client") {
				t.Errorf("node/client depends on %s", dep)
			}
		}
	}
}
