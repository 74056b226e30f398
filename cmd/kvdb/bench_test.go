package main

import (
	"encoding/json"
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
