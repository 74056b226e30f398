package client_test

// Failover against a real master and volumes, run in this process on
// 127.0.0.1 with ephemeral ports. Followers do not exist yet: a stand-in
// server plays one (a redirect to the leader, or 503) in front of the real
// master. An external test package, so that it may start servers from
// package node, which imports this one.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node"
	"github.com/kvdb/kvdb/node/client"
)

var clusterSeq atomic.Int64

// startMaster runs a master and two volumes (2 replicas) and returns the
// master's URL once it is ready with both volumes.
func startMaster(t *testing.T, apiKeys ...node.APIKey) string {
	t.Helper()
	dir := t.TempDir()
	label := fmt.Sprintf("client-failover-%d-%d", os.Getpid(), clusterSeq.Add(1))
	log := slog.New(slog.DiscardHandler)
	m, err := node.NewMaster(node.MasterConfig{
		Addr: "127.0.0.1:0", Dir: filepath.Join(dir, "master"), Replicas: 2, Logger: log, APIKeys: apiKeys,
		Gossip: node.GossipConfig{Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Kill)
	for i := 1; i <= 2; i++ {
		v, err := node.NewVolume(node.VolumeConfig{
			Name: fmt.Sprintf("fvol%d", i), Addr: "127.0.0.1:0", Dir: filepath.Join(dir, fmt.Sprintf("vol%d", i)),
			Logger: log,
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
			if resp.StatusCode == 200 && m.LiveVolumes() == 2 {
				return u
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master is not ready with 2 volumes after 15 s (it sees %d)", m.LiveVolumes())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deadURL is the URL of a port where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func newClient(t *testing.T, cfg client.ClientConfig) *client.Client {
	t.Helper()
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	cl, err := client.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// onlyReader hides every method but Read, as a pipe would: it cannot be
// rewound.
type onlyReader struct{ io.Reader }

// value is n bytes that depend on seed.
func value(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>9)
	}
	return b
}

// exercise runs every operation through cl and checks each answer: small
// and large (Expect) writes, from a rewindable and from a plain reader,
// reads, HEAD, listing, the cluster view, deletes.
func exercise(t *testing.T, cl *client.Client, prefix string) {
	t.Helper()
	ctx := context.Background()
	small, large := value(1, 3000), value(2, 3<<20)
	for _, tt := range []struct {
		name string
		val  []byte
		r    func([]byte) io.Reader
	}{
		{"small", small, func(b []byte) io.Reader { return bytes.NewReader(b) }},
		{"small-plain-reader", small, func(b []byte) io.Reader { return onlyReader{bytes.NewReader(b)} }},
		{"large", large, func(b []byte) io.Reader { return bytes.NewReader(b) }},
		{"large-plain-reader", large, func(b []byte) io.Reader { return onlyReader{bytes.NewReader(b)} }},
		{"empty", nil, func(b []byte) io.Reader { return bytes.NewReader(b) }},
	} {
		key := prefix + tt.name
		res, err := cl.Put(ctx, key, tt.r(tt.val), int64(len(tt.val)), client.PutOptions{})
		if err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
		if !res.Created || res.Size != int64(len(tt.val)) {
			t.Errorf("Put %s: got %+v, want created, %d bytes", key, res, len(tt.val))
		}
		if _, err := cl.Put(ctx, key, tt.r(tt.val), int64(len(tt.val)), client.PutOptions{CreateOnly: true}); !errors.Is(err, client.ErrExists) {
			t.Errorf("Put %s create-only over a value: got %v, want ErrExists", key, err)
		}
		v, err := cl.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get %s: %v", key, err)
		}
		got, err := io.ReadAll(v)
		v.Close()
		if err != nil || !bytes.Equal(got, tt.val) {
			t.Errorf("Get %s: got %d bytes (%v), want the %d put", key, len(got), err, len(tt.val))
		}
		info, err := cl.Stat(ctx, key)
		if err != nil || info.Size != int64(len(tt.val)) || info.ETag != res.ETag {
			t.Errorf("Stat %s: got %+v, %v; want %d bytes, ETag %s", key, info, err, len(tt.val), res.ETag)
		}
	}
	// A chunked body of unknown size goes the Expect way.
	if _, err := cl.Put(ctx, prefix+"chunked", onlyReader{bytes.NewReader(small)}, -1, client.PutOptions{}); err != nil {
		t.Fatalf("Put chunked: %v", err)
	}
	page, err := cl.List(ctx, prefix, "", 2)
	if err != nil || len(page.Keys) != 2 || page.Next == "" {
		t.Fatalf("List: got %+v, %v; want 2 keys and a next", page, err)
	}
	var all []string
	for k, err := range cl.Keys(ctx, prefix, 2) {
		if err != nil {
			t.Fatalf("Keys: %v", err)
		}
		all = append(all, k)
	}
	if len(all) != 6 {
		t.Errorf("Keys: got %q, want 6", all)
	}
	info, err := cl.Cluster(ctx)
	if err != nil || info.Replicas != 2 {
		t.Errorf("Cluster: got %+v, %v; want 2 replicas", info, err)
	}
	for _, k := range all {
		if err := cl.Delete(ctx, k); err != nil {
			t.Errorf("Delete %s: %v", k, err)
		}
	}
	if err := cl.Delete(ctx, all[0]); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Delete of a deleted key: got %v, want ErrNotFound", err)
	}
	if _, err := cl.Get(ctx, all[0]); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get of a deleted key: got %v, want ErrNotFound", err)
	}
}

// The first master is a closed port: every operation goes on to the
// second, and the client starts there from then on.
func TestFailoverDeadFirstMaster(t *testing.T) {
	u := startMaster(t)
	dead := deadURL(t)
	cl := newClient(t, client.ClientConfig{URL: dead + "," + u})
	if got := cl.URL(); got != dead {
		t.Fatalf("URL before any answer: got %s, want the first configured, %s", got, dead)
	}
	exercise(t, cl, "dead-first/")
	if got := cl.URL(); got != u {
		t.Errorf("URL after the answers: got %s, want the master that answered, %s", got, u)
	}
}

// follower stands in for a follower in front of leader: it redirects every
// request to the same path and query on leader (307 for writes, 302 for
// reads) before reading a body, and answers /_kvdb/cluster itself, as
// CONTRACT.md says a follower does. It counts the requests it got.
func follower(t *testing.T, leader string, hits *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/_kvdb/cluster" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"node":{"name":"follower","role":"master"},"replicas":2}`)
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

// A follower's redirect to the leader is followed by every operation, and
// the leader becomes the master the client asks first.
func TestFailoverFollowsFollowerRedirect(t *testing.T) {
	u := startMaster(t)
	t.Run("several masters", func(t *testing.T) {
		var hits atomic.Int64
		f := follower(t, u, &hits)
		cl := newClient(t, client.ClientConfig{URL: f.URL + "," + deadURL(t)})
		exercise(t, cl, "follower/")
		if got := cl.URL(); got != u {
			t.Errorf("URL: got %s, want the leader %s", got, u)
		}
		// The follower redirected the first request; the leader took the
		// others directly (but for no Cluster, which goes to the leader).
		if n := hits.Load(); n != 1 {
			t.Errorf("the follower got %d requests, want 1", n)
		}
	})
	t.Run("the follower alone", func(t *testing.T) {
		// One configured URL, a follower: the leader is learned from its
		// first redirect. A plain reader cannot be sent again after the
		// follower's redirect came after the body.
		var hits atomic.Int64
		f := follower(t, u, &hits)
		cl := newClient(t, client.ClientConfig{URL: f.URL})
		ctx := context.Background()
		_, err := cl.Put(ctx, "alone/plain", onlyReader{strings.NewReader("value")}, 5, client.PutOptions{})
		if err == nil || !strings.Contains(err.Error(), "cannot be rewound") {
			t.Errorf("a plain reader redirected after its body: got %v, want an error saying it cannot be rewound", err)
		}
		exercise(t, cl, "alone/")
	})
	t.Run("token", func(t *testing.T) {
		// The API key goes on to the leader the follower names.
		const token = "failover-token-0123456789"
		lu := startMaster(t, node.APIKey{Token: token})
		var hits atomic.Int64
		f := follower(t, lu, &hits)
		cl := newClient(t, client.ClientConfig{URL: f.URL, Token: token})
		exercise(t, cl, "token/")
	})
}

// unavailable stands in for a master without a leader: 503 with
// Retry-After to every request, after reading the body when readBody.
func unavailable(t *testing.T, readBody bool, hits *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if readBody {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		w.Header().Set("Retry-After", "1")
		http.Error(w, "no leader", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A master answering 503 is followed by the next.
func TestFailoverOn503(t *testing.T) {
	u := startMaster(t)
	for _, readBody := range []bool{false, true} {
		t.Run(fmt.Sprintf("read body %v", readBody), func(t *testing.T) {
			var hits atomic.Int64
			un := unavailable(t, readBody, &hits)
			cl := newClient(t, client.ClientConfig{URL: un.URL + "," + u})
			exercise(t, cl, fmt.Sprintf("503-%v/", readBody))
			if hits.Load() != 1 {
				t.Errorf("the unavailable master got %d requests, want 1 (then the client starts at the one that answered)", hits.Load())
			}
		})
	}
}

// What must not be sent again after a master may have taken the write.
func TestFailoverUncertainWrites(t *testing.T) {
	u := startMaster(t)
	ctx := context.Background()

	t.Run("plain reader, body sent, then 503", func(t *testing.T) {
		var hits atomic.Int64
		un := unavailable(t, true, &hits)
		// No Expect: the body goes with the request.
		cl := newClient(t, client.ClientConfig{URL: un.URL + "," + u, ExpectThreshold: -1})
		_, err := cl.Put(ctx, "uncertain/plain", onlyReader{strings.NewReader("value")}, 5, client.PutOptions{})
		if !errors.Is(err, client.ErrUncertain) || !strings.Contains(err.Error(), "no leader (503)") {
			t.Errorf("got %v, want ErrUncertain and the 503", err)
		}
		var se *client.StatusError
		if !errors.As(err, &se) || se.Status != 503 {
			t.Errorf("got %v, want the 503 StatusError inside", err)
		}
		// A rewindable body is sent again, to the next master.
		if _, err := cl.Put(ctx, "uncertain/seeker", strings.NewReader("value"), 5, client.PutOptions{}); err != nil {
			t.Errorf("a rewindable body: %v", err)
		}
	})

	t.Run("create-only, body sent, then 503", func(t *testing.T) {
		// HEAD says the key is absent, the write gets 503 after its body:
		// a second attempt could find the first one's value.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
			http.Error(w, "leadership lost", http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		cl := newClient(t, client.ClientConfig{URL: srv.URL + "," + u, ExpectThreshold: -1})
		_, err := cl.Put(ctx, "uncertain/create", strings.NewReader("value"), 5, client.PutOptions{CreateOnly: true})
		if !errors.Is(err, client.ErrUncertain) || !strings.Contains(err.Error(), "create-only") {
			t.Errorf("got %v, want ErrUncertain", err)
		}
		if _, err := newClient(t, client.ClientConfig{URL: u}).Stat(ctx, "uncertain/create"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("the create-only write was sent on: Stat got %v", err)
		}
	})

	t.Run("delete applied, answer lost", func(t *testing.T) {
		// The stand-in passes the DELETE on to the master, then answers 503
		// as a master that lost leadership after the commit.
		target, _ := url.Parse(u)
		proxy := httputil.NewSingleHostReverseProxy(target)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodDelete {
				proxy.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			proxy.ServeHTTP(rec, r)
			http.Error(w, "leadership lost", http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		cl := newClient(t, client.ClientConfig{URL: srv.URL + "," + u})
		if _, err := cl.Put(ctx, "uncertain/delete", strings.NewReader("value"), 5, client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		// The Put was answered through the stand-in, which is now first.
		err := cl.Delete(ctx, "uncertain/delete")
		if !errors.Is(err, client.ErrUncertain) || errors.Is(err, client.ErrNotFound) {
			t.Errorf("got %v, want ErrUncertain and not ErrNotFound", err)
		}
		// A delete whose first attempt did not apply succeeds on the retry.
		if _, err := cl.Put(ctx, "uncertain/delete2", strings.NewReader("value"), 5, client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		var hits atomic.Int64
		un := unavailable(t, false, &hits)
		cl2 := newClient(t, client.ClientConfig{URL: un.URL + "," + u})
		if err := cl2.Delete(ctx, "uncertain/delete2"); err != nil {
			t.Errorf("delete after a 503 that did not apply: %v", err)
		}
	})
}

// The master the client asks first goes away: the next is tried.
func TestFailoverRememberedMasterDies(t *testing.T) {
	u := startMaster(t)
	target, _ := url.Parse(u)
	front := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	cl := newClient(t, client.ClientConfig{URL: front.URL + "," + u})
	ctx := context.Background()
	if _, err := cl.Put(ctx, "remembered/k", strings.NewReader("value"), 5, client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if cl.URL() != front.URL {
		t.Fatalf("URL: got %s, want %s", cl.URL(), front.URL)
	}
	front.Close()
	if _, err := cl.Stat(ctx, "remembered/k"); err != nil {
		t.Errorf("Stat after the remembered master went away: %v", err)
	}
	if cl.URL() != u {
		t.Errorf("URL: got %s, want %s", cl.URL(), u)
	}
}

// With no master to answer, an operation gives up after FailoverTimeout,
// or when its context ends, with the last failure.
func TestFailoverGivesUp(t *testing.T) {
	ctx := context.Background()
	var hits atomic.Int64
	un := unavailable(t, false, &hits)
	cl := newClient(t, client.ClientConfig{URL: deadURL(t) + "," + un.URL, FailoverTimeout: 700 * time.Millisecond})
	start := time.Now()
	_, err := cl.Stat(ctx, "k")
	took := time.Since(start)
	var se *client.StatusError
	if !errors.As(err, &se) || se.Status != 503 || !strings.Contains(err.Error(), "on 2 masters") {
		t.Errorf("got %v, want the last 503 and the attempts", err)
	}
	if took < 700*time.Millisecond || took > 3*time.Second {
		t.Errorf("gave up after %v, want about 700ms", took)
	}
	if n := hits.Load(); n < 3 {
		t.Errorf("the 503 master got %d requests, want several rounds", n)
	}

	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	cl = newClient(t, client.ClientConfig{URL: deadURL(t) + "," + un.URL, FailoverTimeout: time.Minute})
	start = time.Now()
	if _, err := cl.Get(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's deadline", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("ctx ended after 300ms, the Get after %v", took)
	}

	// One master: one attempt, as ever.
	hits.Store(0)
	cl = newClient(t, client.ClientConfig{URL: un.URL})
	if err := cl.Delete(context.Background(), "k"); err == nil || hits.Load() != 1 {
		t.Errorf("one master: got %v after %d requests, want the 503 after 1", err, hits.Load())
	}
}
