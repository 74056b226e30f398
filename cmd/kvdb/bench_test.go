package main

import (
	"encoding/json"
	"runtime"
	"testing"

	"github.com/kvdb/kvdb/bench"
)

// kvdb bench --url with several masters, the first down: --retries rides
// it out, and the report counts the retried operations.
func TestBenchSeveralMasters(t *testing.T) {
	u, _ := startClientCluster(t)
	out, errOut := wantRun(t, 0, "bench", "--url", closedPort(t)+","+u, "--size", "4KiB", "--count", "12",
		"--concurrency", "2", "--ops", "put,get,delete", "--retries", "2", "--verify", "--json")
	var res bench.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("report: %v\n%s\n%s", err, out, errOut)
	}
	var retried int64
	for _, r := range res.Ops {
		retried += r.Retried
		if r.Errors != 0 {
			t.Errorf("%s: %d errors, first %q", r.Op, r.Errors, r.FirstErr)
		}
	}
	if retried == 0 {
		t.Errorf("nothing retried: the master that is down was not met\n%s", out)
	}
	wantRun(t, 2, "bench", "--url", u+",", "--count", "1")
}

// kvdb bench drives the server from the Ps --procs names (its report says
// how many), gives the process's back when it returns, and takes 0 as Go's
// own choice; a negative count is a usage error. The baseline alone runs
// on Go's own choice (it is a server and its load in one process).
func TestBenchProcs(t *testing.T) {
	u, _ := startClientCluster(t)
	before := runtime.GOMAXPROCS(0)
	procs := func(args ...string) int {
		t.Helper()
		out, errOut := wantRun(t, 0, append([]string{"bench", "--size", "1KiB", "--count", "4", "--concurrency", "2", "--json"}, args...)...)
		var res bench.Result
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("report: %v\n%s\n%s", err, out, errOut)
		}
		if now := runtime.GOMAXPROCS(0); now != before {
			t.Fatalf("bench %q left GOMAXPROCS at %d, was %d", args, now, before)
		}
		return res.Config.Procs
	}
	if got := procs("--url", u, "--procs", "1"); got != 1 {
		t.Errorf("--procs 1: the report says %d", got)
	}
	if got := procs("--url", u, "--procs", "3"); got != 3 {
		t.Errorf("--procs 3: the report says %d", got)
	}
	if got := procs("--url", u, "--procs", "0"); got != before {
		t.Errorf("--procs 0: the report says %d, want Go's %d", got, before)
	}
	if got := procs("--baseline-only", "--baseline-dir", t.TempDir(), "--procs", "1"); got != before {
		t.Errorf("--baseline-only --procs 1: the report says %d, want Go's %d", got, before)
	}
	wantRun(t, 2, "bench", "--procs", "-1", "--count", "1")
}
