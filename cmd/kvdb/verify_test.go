package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node"
)

// startVerifyCluster runs a master and three volumes in this process and
// returns the master's URL, once it is ready, and the data directory
// (volumes in vol1, vol2, vol3 below it).
func startVerifyCluster(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	label := fmt.Sprintf("cmd-verify-%d-%d", os.Getpid(), clientClusterSeq.Add(1))
	log := slog.New(slog.DiscardHandler)
	m, err := node.NewMaster(node.MasterConfig{
		Addr: "127.0.0.1:0", Dir: filepath.Join(dir, "master"), Replicas: 2, Logger: log,
		Gossip: node.GossipConfig{Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Kill)
	for i := 1; i <= 3; i++ {
		v, err := node.NewVolume(node.VolumeConfig{
			Name: fmt.Sprintf("vvol%d", i), Addr: "127.0.0.1:0", Dir: filepath.Join(dir, fmt.Sprintf("vol%d", i)),
			MetaInterval: 200 * time.Millisecond, Logger: log,
			Gossip: node.GossipConfig{
				Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest,
				Join: []string{m.GossipAddr()},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Kill)
	}
	u := "http://" + m.Addr()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(u + "/_kvdb/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && m.LiveVolumes() == 3 {
				return u, dir
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master is not ready with 3 volumes after 15 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestVerifyCommand: exit 0 on a clean cluster (with or without --repair,
// --deep, --json), 1 once a stray file lies in a volume's blobs/ (orphan
// files are reported, never removed), 1 when the master is unreachable.
func TestVerifyCommand(t *testing.T) {
	u, dir := startVerifyCluster(t)
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
	var rep node.VerifyReport
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
	var both map[string]node.VerifyReport
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
