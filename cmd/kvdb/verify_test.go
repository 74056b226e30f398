package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvdb/kvdb/node/client"
)

// TestVerifyCommand: exit 0 on a clean cluster (with or without --repair,
// --deep, --json), 1 once a stray file lies in a volume's blobs/ (orphan
// files are reported, never removed), 1 when the master is unreachable.
func TestVerifyCommand(t *testing.T) {
	u, dir := startClientCluster(t)
	for i := range 10 {
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/vk%d", u, i), strings.NewReader(fmt.Sprintf("value %d", i)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("PUT vk%d: %d", i, resp.StatusCode)
		}
	}
	out, _ := wantRun(t, 0, "verify", "--url", u)
	if !strings.Contains(out, "10 keys on 3 volumes") || !strings.HasSuffix(out, "clean\n") {
		t.Fatalf("verify output:\n%s", out)
	}
	wantRun(t, 0, "verify", "--url", u, "--deep", "--repair")
	out, _ = wantRun(t, 0, "verify", "--json", "--url", u)
	var rep client.VerifyReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Clean || rep.Keys != 10 {
		t.Fatalf("--json: clean %v, keys %d, err %v:\n%s", rep.Clean, rep.Keys, err, out)
	}

	stray := filepath.Join(dir, "vol2", "blobs", "stray")
	if err := os.WriteFile(stray, []byte("?"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut := wantRun(t, 1, "verify", "--url", u)
	if !strings.Contains(out, stray) || !strings.Contains(errOut, "1 problem found") {
		t.Fatalf("verify with a stray file:\nstdout: %s\nstderr: %s", out, errOut)
	}
	out, errOut = wantRun(t, 1, "verify", "--url", u, "--repair", "--json")
	var both map[string]client.VerifyReport
	if err := json.Unmarshal([]byte(out), &both); err != nil || both["after"].Counts.Orphans != 1 || both["repair"].Counts.Orphans != 1 {
		t.Fatalf("--repair --json with a stray file (err %v):\n%s", err, out)
	}
	if !strings.Contains(errOut, "1 problem left after the repair") {
		t.Fatalf("--repair with a stray file: stderr %q", errOut)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Fatalf("the stray file was touched: %v", err)
	}

	_, errOut = wantRun(t, 1, "verify", "--url", "http://127.0.0.1:1")
	if !strings.HasPrefix(errOut, "kvdb verify: ") {
		t.Fatalf("unreachable master: stderr %q", errOut)
	}
	wantRun(t, 1, "verify", "--url", u, "extra-argument")
}
