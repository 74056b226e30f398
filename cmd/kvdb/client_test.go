package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node"
)

var clientClusterSeq atomic.Int64

// startClientCluster runs a master and three volumes in this process, on
// 127.0.0.1 with ephemeral ports, and returns the master's URL once it is
// ready and sees every volume, and the data directory (volumes in vol1,
// vol2 and vol3 below it).
func startClientCluster(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	label := fmt.Sprintf("cmd-client-%d-%d", os.Getpid(), clientClusterSeq.Add(1))
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
			Name: fmt.Sprintf("cvol%d", i), Addr: "127.0.0.1:0", Dir: filepath.Join(dir, fmt.Sprintf("vol%d", i)),
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
			t.Fatalf("the master is not ready with 3 volumes after 15 s (it sees %d)", m.LiveVolumes())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kvdb runs the command line in this process and returns its exit status,
// stdout and stderr.
func kvdb(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// wantRun runs args and fails the test unless it exits with want.
func wantRun(t *testing.T, want int, args ...string) (string, string) {
	t.Helper()
	code, out, errOut := kvdb(t, args...)
	if code != want {
		t.Fatalf("kvdb %q: exit %d, want %d\nstdout: %.300s\nstderr: %s", args, code, want, out, errOut)
	}
	return out, errOut
}

func randomFile(t *testing.T, dir string, size int) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	path := filepath.Join(dir, "value-"+strconv.Itoa(size))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, b
}

// leftovers lists the files in dir other than those named.
func leftovers(t *testing.T, dir string, known ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, e := range ents {
		found := false
		for _, k := range known {
			found = found || e.Name() == k
		}
		if !found {
			extra = append(extra, e.Name())
		}
	}
	return extra
}

func TestClientCommands(t *testing.T) {
	u, _ := startClientCluster(t)
	dir := t.TempDir()
	src, value := randomFile(t, dir, 6<<20+7)

	t.Run("put and get a file", func(t *testing.T) {
		out, errOut := wantRun(t, 0, "put", "--url", u, "files/big", src)
		if out != "" || errOut != "" {
			t.Errorf("put printed %q / %q, want nothing", out, errOut)
		}
		dst := filepath.Join(dir, "big.out")
		wantRun(t, 0, "get", "--url", u, "files/big", "-o", dst)
		got, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(got, value) {
			t.Fatalf("get -o: got %d bytes (%v), want the %d put", len(got), err, len(value))
		}
		if extra := leftovers(t, dir, filepath.Base(src), "big.out"); len(extra) > 0 {
			t.Errorf("get -o left %q", extra)
		}
		out, _ = wantRun(t, 0, "stat", "files/big", "--url", u)
		if !strings.Contains(out, "size: "+strconv.Itoa(len(value))+"\n") || !strings.Contains(out, "etag: \"") || !strings.Contains(out, "last-modified: ") {
			t.Errorf("stat: got %q", out)
		}
	})

	t.Run("put -v and get to stdout", func(t *testing.T) {
		_, errOut := wantRun(t, 0, "put", "--url", u, "-v", "small key", src)
		if !strings.HasPrefix(errOut, "created small key: "+strconv.Itoa(len(value))+" bytes, ETag \"") {
			t.Errorf("put -v: got %q", errOut)
		}
		out, _ := wantRun(t, 0, "get", "--url", u, "small key")
		if out != string(value) {
			t.Errorf("get to stdout: got %d bytes, want %d", len(out), len(value))
		}
		_, errOut = wantRun(t, 0, "put", "--url", u, "-v", "small key", src)
		if !strings.HasPrefix(errOut, "replaced small key: ") {
			t.Errorf("put -v over a value: got %q", errOut)
		}
	})

	t.Run("put from stdin", func(t *testing.T) {
		defer func(r io.Reader) { stdin = r }(stdin)
		for _, args := range [][]string{{"put", "--url", u, "stdin/dash", "-"}, {"put", "--url", u, "stdin/absent"}} {
			stdin = strings.NewReader("from stdin " + args[3])
			wantRun(t, 0, args...)
			out, _ := wantRun(t, 0, "get", "--url", u, args[3])
			if out != "from stdin "+args[3] {
				t.Errorf("%q: got %q", args, out)
			}
		}
	})

	t.Run("create only", func(t *testing.T) {
		wantRun(t, 0, "put", "--url", u, "--create", "once", src)
		_, errOut := wantRun(t, 1, "put", "--url", u, "--create", "once", src)
		if !strings.Contains(errOut, "already exists") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("second create: stderr %q, want one line saying it exists", errOut)
		}
	})

	t.Run("not found", func(t *testing.T) {
		for _, cmd := range []string{"get", "stat", "rm"} {
			_, errOut := wantRun(t, 2, cmd, "--url", u, "no/such/key")
			if !strings.Contains(errOut, "key not found") || strings.Count(errOut, "\n") != 1 {
				t.Errorf("%s: stderr %q, want one line with the reason", cmd, errOut)
			}
		}
		dst := filepath.Join(dir, "missing.out")
		wantRun(t, 2, "get", "--url", u, "no/such/key", "-o", dst)
		if _, err := os.Stat(dst); !os.IsNotExist(err) {
			t.Errorf("get -o of a missing key created %s", dst)
		}
	})

	t.Run("rm", func(t *testing.T) {
		wantRun(t, 0, "put", "--url", u, "doomed", src)
		out, errOut := wantRun(t, 0, "rm", "--url", u, "doomed")
		if out != "" || errOut != "" {
			t.Errorf("rm printed %q / %q", out, errOut)
		}
		wantRun(t, 2, "get", "--url", u, "doomed")
	})

	t.Run("ls", func(t *testing.T) {
		defer func(r io.Reader) { stdin = r }(stdin)
		var want []string
		for i := range 7 {
			k := fmt.Sprintf("dir/%d key", i)
			want = append(want, k)
			stdin = strings.NewReader(k)
			wantRun(t, 0, "put", "--url", u, k)
		}
		stdin = strings.NewReader("x")
		wantRun(t, 0, "put", "--url", u, "dirt")
		out, _ := wantRun(t, 0, "ls", "--url", u, "--limit", "3", "dir/")
		if got := strings.Join(want, "\n") + "\n"; out != got {
			t.Errorf("ls: got %q, want %q", out, got)
		}
		out, _ = wantRun(t, 0, "ls", "--url", u, "-0", "dir/")
		if got := strings.Join(want, "\x00") + "\x00"; out != got {
			t.Errorf("ls -0: got %q, want %q", out, got)
		}
		out, _ = wantRun(t, 0, "ls", "--url", u, "nothing/here/")
		if out != "" {
			t.Errorf("ls of an empty prefix: got %q", out)
		}
	})

	t.Run("cluster", func(t *testing.T) {
		out, _ := wantRun(t, 0, "cluster", "--url", u)
		for _, want := range []string{"NAME", "PARTITIONS", "cvol1", "cvol2", "cvol3", "volume", "alive", "replicas 2, live volumes 3"} {
			if !strings.Contains(out, want) {
				t.Errorf("cluster: %q missing from\n%s", want, out)
			}
		}
		out, _ = wantRun(t, 0, "cluster", "--url", u, "--json")
		if !strings.HasPrefix(out, "{") || !strings.Contains(out, `"cvol1"`) {
			t.Errorf("cluster --json: got %.200q", out)
		}
	})

	t.Run("KVDB_URL", func(t *testing.T) {
		t.Setenv("KVDB_URL", u)
		wantRun(t, 0, "stat", "files/big")
		// The flag wins over the environment.
		t.Setenv("KVDB_URL", "http://127.0.0.1:1")
		wantRun(t, 0, "stat", "--url", u, "files/big")
	})
}

func TestClientUsage(t *testing.T) {
	for _, args := range [][]string{
		{"put"},
		{"put", "a", "b", "c"},
		{"get"},
		{"get", "k", "--no-such-flag"},
		{"ls", "a", "b"},
		{"ls", "--limit", "0"},
		{"cluster", "extra"},
		{"stat", "--url", "ftp://host", "k"},
	} {
		code, _, errOut := kvdb(t, args...)
		if code != 1 || strings.Count(errOut, "\n") != 1 {
			t.Errorf("kvdb %q: exit %d, stderr %q; want 1 and one line", args, code, errOut)
		}
	}
	code, _, errOut := kvdb(t, "get", "--help")
	if code != 0 || !strings.Contains(errOut, "-url") || !strings.Contains(errOut, "http://localhost:3000") || !strings.Contains(errOut, "-o FILE") {
		t.Errorf("get --help: exit %d, got %q", code, errOut)
	}
	if code, _, errOut := kvdb(t, "help", "put"); code != 0 || !strings.Contains(errOut, "-create") {
		t.Errorf("help put: exit %d, got %q", code, errOut)
	}
}

func TestClientUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, _, errOut := kvdb(t, "stat", "--url", "http://"+addr, "k")
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "kvdb stat: ") {
		t.Errorf("exit %d, stderr %q; want 1 and one line", code, errOut)
	}
}

// A download cut short leaves neither the file nor a temporary one.
func TestClientGetNoPartialFile(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		_, _ = w.Write(make([]byte, 100000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // cut the connection
	}))
	defer srv.Close()
	dir := t.TempDir()
	dst := filepath.Join(dir, "out")
	if err := os.WriteFile(dst, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := kvdb(t, "get", "--url", srv.URL, "k", "-o", dst)
	if code != 1 || !strings.Contains(errOut, "unexpected EOF") {
		t.Errorf("exit %d, stderr %q; want 1 and the cut", code, errOut)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "old" {
		t.Errorf("the existing file changed: %q, %v", b, err)
	}
	if extra := leftovers(t, dir, "out"); len(extra) > 0 {
		t.Errorf("left behind: %q", extra)
	}
}

func TestClientProgressLine(t *testing.T) {
	for _, tt := range []struct {
		n, total int64
		elapsed  time.Duration
		note     string
		want     string
	}{
		{0, 100 << 20, 0, "", "put k  [>                   ]  0 B / 100.0 MiB    0%"},
		{42 << 20, 100 << 20, 2 * time.Second, "", "put k  [========>           ]  42.0 MiB / 100.0 MiB   42%  21.0 MiB/s  ETA 0:03"},
		{100 << 20, 100 << 20, 4 * time.Second, "in 0:04", "put k  [====================]  100.0 MiB / 100.0 MiB  100%  25.0 MiB/s  in 0:04"},
		{5 << 30, -1, time.Hour, "", "put k  5.0 GiB  1.4 MiB/s"},
		{3 << 20, 3 << 20, time.Second, "waiting for the replicas to sync", "put k  [====================]  3.0 MiB / 3.0 MiB  100%  3.0 MiB/s  waiting for the replicas to sync"},
	} {
		if got := progressLine("put k", tt.n, tt.total, tt.elapsed, tt.note); got != tt.want {
			t.Errorf("progressLine(%d, %d, %v, %q):\n got %q\nwant %q", tt.n, tt.total, tt.elapsed, tt.note, got, tt.want)
		}
	}
	if got := clock(3*time.Hour + 25*time.Minute + 7*time.Second); got != "3:25:07" {
		t.Errorf("clock: got %q", got)
	}
}

// --progress draws on a non-terminal too; the bar ends its line.
func TestClientProgressShown(t *testing.T) {
	u, _ := startClientCluster(t)
	src, _ := randomFile(t, t.TempDir(), 5<<20)
	_, errOut := wantRun(t, 0, "put", "--url", u, "--progress", "big", src)
	if !strings.HasPrefix(errOut, "\rput big  [") || !strings.HasSuffix(errOut, "\n") || !strings.Contains(errOut, "5.0 MiB / 5.0 MiB  100%") {
		t.Errorf("put --progress: stderr %q", errOut)
	}
	_, errOut = wantRun(t, 0, "get", "--url", u, "--progress", "big", "-o", os.DevNull)
	if !strings.Contains(errOut, "5.0 MiB / 5.0 MiB  100%") {
		t.Errorf("get --progress: stderr %q", errOut)
	}
}

// closedPort returns the URL of a port where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// standInFollower plays a follower in front of leader: every request is
// redirected to the same path and query on leader (307 for writes, 302
// for reads) before any body is read; /_kvdb/cluster it answers itself.
func standInFollower(t *testing.T, leader string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_kvdb/cluster" {
			_, _ = io.WriteString(w, `{"node":{"name":"follower","role":"master"}}`)
			return
		}
		code := http.StatusTemporaryRedirect
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			code = http.StatusFound
		}
		w.Header().Set("Location", leader+r.URL.RequestURI())
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Every client command works with several masters in --url or KVDB_URL:
// past a master that is down, through a follower's redirect, past one
// without a leader.
func TestClientFailover(t *testing.T) {
	u, _ := startClientCluster(t)
	dir := t.TempDir()
	src, value := randomFile(t, dir, 5<<20+3)
	smallSrc, small := randomFile(t, dir, 1000)
	noLeader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "no leader", http.StatusServiceUnavailable)
	}))
	t.Cleanup(noLeader.Close)
	for _, tt := range []struct {
		name, urls string
	}{
		{"first down", closedPort(t) + "," + u},
		{"follower", standInFollower(t, u).URL},
		{"follower then down", standInFollower(t, u).URL + "," + closedPort(t)},
		{"no leader", noLeader.URL + "," + u},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := "failover/" + strings.ReplaceAll(tt.name, " ", "-")
			// Through the flag, the file read again as the write goes on
			// to another master (the progress bar over it too).
			wantRun(t, 0, "put", "--url", tt.urls, "--progress", key, src)
			wantRun(t, 0, "put", "--url", tt.urls, key+"-small", smallSrc)
			dst := filepath.Join(dir, "out")
			wantRun(t, 0, "get", "--url", tt.urls, key, "-o", dst)
			if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, value) {
				t.Errorf("get: got %d bytes (%v), want the %d put", len(got), err, len(value))
			}
			// Through the environment.
			t.Setenv("KVDB_URL", tt.urls)
			out, _ := wantRun(t, 0, "get", key+"-small")
			if out != string(small) {
				t.Errorf("get: got %d bytes, want %d", len(out), len(small))
			}
			out, _ = wantRun(t, 0, "stat", key)
			if !strings.Contains(out, "size: "+strconv.Itoa(len(value))+"\n") {
				t.Errorf("stat: got %q", out)
			}
			out, _ = wantRun(t, 0, "ls", key)
			if out != key+"\n"+key+"-small\n" {
				t.Errorf("ls: got %q", out)
			}
			wantRun(t, 0, "cluster", "--json")
			wantRun(t, 0, "rm", key)
			wantRun(t, 0, "rm", key+"-small")
			_, errOut := wantRun(t, 2, "stat", key)
			if !strings.Contains(errOut, "key not found") {
				t.Errorf("stat after rm: %q", errOut)
			}
		})
	}
	t.Run("every master down", func(t *testing.T) {
		start := time.Now()
		_, errOut := wantRun(t, 1, "stat", "--url", closedPort(t)+","+closedPort(t), "--failover-timeout", "500ms", "k")
		if took := time.Since(start); took < 500*time.Millisecond || took > 5*time.Second {
			t.Errorf("gave up after %v, want about 500ms", took)
		}
		if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "on 2 masters") {
			t.Errorf("stderr %q, want one line with the attempts", errOut)
		}
	})
	t.Run("empty master", func(t *testing.T) {
		_, errOut := wantRun(t, 1, "stat", "--url", u+",", "k")
		if !strings.Contains(errOut, "empty master") {
			t.Errorf("stderr %q", errOut)
		}
	})
}
