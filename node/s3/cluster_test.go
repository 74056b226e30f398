package s3

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

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kvdb/kvdb/node"
)

// The tests of this package run a real cluster in the test process: a
// master and volumes from package node on 127.0.0.1 with ephemeral ports,
// and a gateway in front of them, driven by real S3 clients (minio-go
// here; aws cli, boto3 and rclone in cli_test.go when installed).

// Test credentials: a read-write and a read-only key.
const (
	testID       = "KVDBTESTKEY"
	testSecret   = "kvdb-test-secret-0123456789abcdef"
	testROID     = "KVDBREADONLY"
	testROSecret = "kvdb-readonly-secret-0123456789ab"
)

type testEnv struct {
	t      testing.TB
	master *node.Master
	vols   []*node.Volume
	gw     *Server
	keys   []node.APIKey
	// endpoint is the gateway's HOST:PORT.
	endpoint string
	// awsConfig, when set, is the aws cli's config file.
	awsConfig string
}

var envSeq atomic.Int64

func testLogger() *slog.Logger {
	if os.Getenv("KVDB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newEnv starts a master, two volumes (two replicas) and a gateway. With
// signed, the keys file holds the test's S3 keys (read-write and
// read-only); without, there is none and the gateway is open.
func newEnv(t testing.TB, signed bool, opts ...func(*Config)) *testEnv {
	t.Helper()
	return newEnvWith(t, signed, 2, nil, opts...)
}

// newEnvWith is newEnv with vols volumes and the master's config changed
// by master (nil: as newEnv).
func newEnvWith(t testing.TB, signed bool, vols int, master func(*node.MasterConfig), opts ...func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{t: t}
	if signed {
		keys, err := node.ParseAPIKeys(strings.NewReader(fmt.Sprintf("s3 %s %s rw\ns3 %s %s ro\n", testID, testSecret, testROID, testROSecret)))
		if err != nil {
			t.Fatal(err)
		}
		e.keys = keys
	}
	dir := t.TempDir()
	label := fmt.Sprintf("s3test-%d-%d", os.Getpid(), envSeq.Add(1))
	mcfg := node.MasterConfig{
		Addr: "127.0.0.1:0", Dir: filepath.Join(dir, "master"), Replicas: 2, APIKeys: e.keys,
		GCInterval: 200 * time.Millisecond, Logger: testLogger(),
		Gossip: node.GossipConfig{Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest},
	}
	if master != nil {
		master(&mcfg)
	}
	m, err := node.NewMaster(mcfg)
	if err != nil {
		t.Fatalf("start master: %v", err)
	}
	e.master = m
	t.Cleanup(e.close)
	for i := 1; i <= vols; i++ {
		v, err := node.NewVolume(node.VolumeConfig{
			Name: fmt.Sprintf("vol%d", i), Addr: "127.0.0.1:0", Dir: filepath.Join(dir, fmt.Sprintf("vol%d", i)),
			MetaInterval: 200 * time.Millisecond, Logger: testLogger(),
			Gossip: node.GossipConfig{Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest, Join: []string{m.GossipAddr()}},
		})
		if err != nil {
			t.Fatalf("start volume %d: %v", i, err)
		}
		e.vols = append(e.vols, v)
	}
	waitFor(t, 15*time.Second, fmt.Sprintf("the master to see %d volumes", vols), func() bool { return m.LiveVolumes() == vols })
	cfg := Config{Addr: "127.0.0.1:0", Master: func() (string, error) { return m.Addr(), nil }, Keys: e.keys, Logger: testLogger()}
	for _, o := range opts {
		o(&cfg)
	}
	gw, err := New(cfg)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	e.gw = gw
	e.endpoint = gw.Addr()
	return e
}

func (e *testEnv) close() {
	if e.gw != nil {
		_ = e.gw.Close()
	}
	for _, v := range e.vols {
		v.Kill()
	}
	e.master.Kill()
}

// minio returns a minio-go client of the gateway with the read-write key
// (or the read-only one).
func (e *testEnv) minio(readOnly bool) *minio.Client {
	e.t.Helper()
	id, secret := testID, testSecret
	if readOnly {
		id, secret = testROID, testROSecret
	}
	c, err := minio.New(e.endpoint, &minio.Options{Creds: credentials.NewStaticV4(id, secret, ""), Region: "us-east-1"})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// native sends a request to the master's own API (with the read-write S3
// key's token when the cluster has keys); net/http follows the GET's 302
// to a volume, as curl -L does.
func (e *testEnv) native(method, key string, body io.Reader) (int, http.Header, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.master.Addr()+"/"+key, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.keys != nil {
		req.Header.Set("Authorization", "Bearer "+node.S3Token(testID, testSecret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, key, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
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
