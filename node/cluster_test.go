package node

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCluster runs a master and volumes as goroutines of the test process,
// on 127.0.0.1 with ephemeral ports, and can kill (no goodbye), stop and
// restart any of them.
type testCluster struct {
	t      testing.TB
	label  string
	mcfg   MasterConfig
	master *Master
	vcfgs  []VolumeConfig
	vols   []*Volume // nil while stopped
	client *http.Client
	token  string // when set, do sends it as "Authorization: Bearer"
}

var clusterSeq atomic.Int64

func testLogger() *slog.Logger {
	if os.Getenv("KVDB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newTestCluster starts a master and n volumes and waits until the master
// sees them all.
func newTestCluster(t testing.TB, n, replicas int) *testCluster {
	t.Helper()
	return newTestClusterWith(t, n, replicas, nil)
}

// newTestClusterWith is newTestCluster with opt (if not nil) called on the
// cluster before anything starts, to change c.mcfg (volumes take its
// Secret) or c.token.
func newTestClusterWith(t testing.TB, n, replicas int, opt func(c *testCluster)) *testCluster {
	t.Helper()
	dir := t.TempDir()
	c := &testCluster{
		t:      t,
		label:  fmt.Sprintf("test-%d-%d", os.Getpid(), clusterSeq.Add(1)),
		client: &http.Client{Timeout: 2 * time.Minute},
	}
	c.mcfg = MasterConfig{
		Addr:       "127.0.0.1:0",
		Dir:        filepath.Join(dir, "master"),
		Replicas:   replicas,
		GCInterval: 200 * time.Millisecond,
		// Repair quickly: tests kill volumes on purpose.
		RepairDelay:    500 * time.Millisecond,
		RepairInterval: 200 * time.Millisecond,
		RebalanceDelay: 300 * time.Millisecond,
		RebalanceRate:  -1,
		MoveGrace:      1500 * time.Millisecond,
		Logger:         testLogger(),
		Gossip:         GossipConfig{Bind: "127.0.0.1:0", Cluster: c.label, Profile: ProfileTest},
	}
	if opt != nil {
		opt(c)
	}
	c.startMaster()
	t.Cleanup(c.close)
	for i := 0; i < n; i++ {
		c.addVolume()
	}
	c.waitVolumes(n)
	return c
}

func (c *testCluster) startMaster() {
	c.t.Helper()
	m, err := NewMaster(c.mcfg)
	if err != nil {
		c.t.Fatalf("start master: %v", err)
	}
	c.master = m
	// Restarts keep the same ports, as a real node would.
	c.mcfg.Addr = m.Addr()
	c.mcfg.Gossip.Bind = m.GossipAddr()
	c.mcfg.Raft = m.raft.addr
}

// addVolume starts a new volume, its configuration changed by opts, and
// returns its index.
func (c *testCluster) addVolume(opts ...func(*VolumeConfig)) int {
	c.t.Helper()
	i := len(c.vcfgs)
	c.vcfgs = append(c.vcfgs, VolumeConfig{
		Name:         fmt.Sprintf("vol%d", i+1),
		Addr:         "127.0.0.1:0",
		Dir:          filepath.Join(filepath.Dir(c.mcfg.Dir), fmt.Sprintf("vol%d", i+1)),
		MetaInterval: 200 * time.Millisecond,
		Logger:       testLogger(),
		Secret:       c.mcfg.Secret,
		Gossip: GossipConfig{
			Bind: "127.0.0.1:0", Cluster: c.label, Profile: ProfileTest,
			Join: []string{c.mcfg.Gossip.Bind},
		},
	})
	for _, opt := range opts {
		opt(&c.vcfgs[i])
	}
	c.vols = append(c.vols, nil)
	c.startVolume(i)
	return i
}

func (c *testCluster) startVolume(i int) {
	c.t.Helper()
	v, err := NewVolume(c.vcfgs[i])
	if err != nil {
		c.t.Fatalf("start volume %d: %v", i, err)
	}
	c.vols[i] = v
	c.vcfgs[i].Addr = v.Addr()
	c.vcfgs[i].Gossip.Bind = v.GossipAddr()
}

// killVolume stops volume i as a crash would.
func (c *testCluster) killVolume(i int) {
	c.vols[i].Kill()
	c.vols[i] = nil
}

func (c *testCluster) close() {
	for _, v := range c.vols {
		if v != nil {
			v.Kill()
		}
	}
	if c.master != nil {
		c.master.Kill()
	}
}

// waitVolumes waits until the master's ring holds exactly n volumes.
func (c *testCluster) waitVolumes(n int) {
	c.t.Helper()
	waitFor(c.t, 15*time.Second, fmt.Sprintf("master to see %d volumes", n), func() bool {
		return c.master.LiveVolumes() == n
	})
}

func (c *testCluster) url(key string) string {
	return "http://" + c.master.Addr() + "/" + key
}

// do sends one request to the master and returns status, headers and body.
func (c *testCluster) do(method, key string, body io.Reader, hdr ...string) (int, http.Header, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url(key), body)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, key, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, key, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func (c *testCluster) put(key, value string) {
	c.t.Helper()
	if st, _, body := c.do("PUT", key, strings.NewReader(value)); st != 201 && st != 200 {
		c.t.Fatalf("PUT %s: status %d: %s", key, st, body)
	}
}

// get follows the redirect (net/http does for GET) and returns the value.
func (c *testCluster) get(key string) (int, string) {
	c.t.Helper()
	st, _, body := c.do("GET", key, nil)
	return st, body
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
