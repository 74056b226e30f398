package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// The client against stand-in servers. The tests against a real cluster
// are in package node (node/client_test.go), next to its test harness.

func newTestClient(t *testing.T, url string) *Client {
	t.Helper()
	cl, err := NewClient(ClientConfig{URL: url, IdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func TestClientRefusesBadKeysLocally(t *testing.T) {
	// Nothing listens: a refused key must fail before any connection.
	cl := newTestClient(t, "http://127.0.0.1:1")
	ctx := context.Background()
	for _, tt := range []struct {
		key  string
		want error
	}{
		{"", ErrKeyEmpty},
		{"_kvdb/cluster", ErrKeyReserved},
		{"a/../b", ErrKeyDotSegment},
		{strings.Repeat("k", MaxKeyLen+1), ErrKeyTooLong},
	} {
		if _, err := cl.Put(ctx, tt.key, strings.NewReader("x"), 1, PutOptions{}); !errors.Is(err, tt.want) {
			t.Errorf("Put %.20q: got %v, want %v", tt.key, err, tt.want)
		}
		if _, err := cl.Get(ctx, tt.key); !errors.Is(err, tt.want) {
			t.Errorf("Get %.20q: got %v, want %v", tt.key, err, tt.want)
		}
	}
}

// fakeServer answers every request with h; it stands in for a master, or
// for a master and the volume it redirects to.
// etag is the ETag a kvdb server sends for a value with checksum sum.
func etag(sum uint64) string { return fmt.Sprintf("\"%016x\"", sum) }

func fakeServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return newTestClient(t, srv.URL)
}

func TestClientGetChecksBytes(t *testing.T) {
	value := []byte("the value, as stored")
	good := etag(xxhash.Sum64(value))
	for _, tt := range []struct {
		name    string
		serve   func(w http.ResponseWriter)
		wantErr error // nil: the read succeeds
	}{
		{"intact", func(w http.ResponseWriter) {
			w.Header().Set("ETag", good)
			_, _ = w.Write(value)
		}, nil},
		{"corrupt", func(w http.ResponseWriter) {
			w.Header().Set("ETag", good)
			_, _ = w.Write(bytes.ToUpper(value))
		}, ErrChecksum},
		{"truncated", func(w http.ResponseWriter) {
			w.Header().Set("ETag", good)
			w.Header().Set("Content-Length", strconv.Itoa(len(value)))
			_, _ = w.Write(value[:5])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // cut the connection
		}, io.ErrUnexpectedEOF},
		{"foreign ETag not checked", func(w http.ResponseWriter) {
			w.Header().Set("ETag", `W/"something-else"`)
			_, _ = w.Write(bytes.ToUpper(value))
		}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(r.URL.Path, "/blob/") {
					http.Redirect(w, r, "/blob"+r.URL.EscapedPath(), http.StatusFound)
					return
				}
				tt.serve(w)
			})
			v, err := cl.Get(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			_, err = io.Copy(io.Discard, v)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestClientGetCancel(t *testing.T) {
	cl := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		_, _ = w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then nothing more, until the client goes
	})
	ctx, cancel := context.WithCancel(context.Background())
	v, err := cl.Get(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, v)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

func TestClientStatusErrors(t *testing.T) {
	cl := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "3 live volumes, 4 replicas needed\nmore detail", http.StatusServiceUnavailable)
	})
	err := cl.Delete(context.Background(), "k")
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 503 || se.Reason != "3 live volumes, 4 replicas needed" {
		t.Fatalf("got %#v, want a 503 StatusError with the first line as reason", err)
	}
	if got, want := err.Error(), `delete "k": 3 live volumes, 4 replicas needed (503)`; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
	for _, tt := range []struct {
		err           *StatusError
		found, exists bool
	}{
		{&StatusError{Op: "get", Key: "k", Status: 404}, true, false},
		{&StatusError{Op: "list", Key: "p/", Status: 404}, false, false},
		{&StatusError{Op: "cluster", Status: 404}, false, false},
		{&StatusError{Op: "put", Key: "k", Status: 409}, false, true},
		{&StatusError{Op: "put", Key: "k", Status: 412}, false, true},
		{&StatusError{Op: "get", Key: "k", Status: 412}, false, false},
	} {
		if got := errors.Is(tt.err, ErrNotFound); got != tt.found {
			t.Errorf("errors.Is(%v, ErrNotFound): got %v, want %v", tt.err, got, tt.found)
		}
		if got := errors.Is(tt.err, ErrExists); got != tt.exists {
			t.Errorf("errors.Is(%v, ErrExists): got %v, want %v", tt.err, got, tt.exists)
		}
	}
}

func TestClientConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"", true},
		{"localhost:3000", true},
		{"http://10.0.0.1:3000/", true},
		{"https://kvdb.example.com/prefix", true},
		{"ftp://host", false},
		{"http://", false},
		{"http://host/?list", false},
	} {
		if err := (ClientConfig{URL: tt.url}).Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%q): got %v, want ok %v", tt.url, err, tt.ok)
		}
	}
}

// The token goes to the master, never to the volume a read is sent on to.
func TestClientTokenStaysWithMaster(t *testing.T) {
	const token = "s3cret-token-0123456789"
	var volumeAuth string
	volume := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		volumeAuth = r.Header.Get("Authorization")
		_, _ = io.WriteString(w, "value")
	}))
	t.Cleanup(volume.Close)
	master := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "missing API key", http.StatusUnauthorized)
			return
		}
		// As a master does: the volume's URL names the version (a
		// redirect to the same path and query would be a follower's, to
		// the leader, which gets the token).
		http.Redirect(w, r, volume.URL+r.URL.EscapedPath()+"?v=1", http.StatusFound)
	}))
	t.Cleanup(master.Close)

	if _, err := newTestClient(t, master.URL).Get(context.Background(), "k"); err == nil || !strings.Contains(err.Error(), "missing API key (401)") {
		t.Errorf("without a token: got %v, want the 401 and its reason", err)
	}
	cl, err := NewClient(ClientConfig{URL: master.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	v, err := cl.Get(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, v)
	v.Close()
	if err != nil || volumeAuth != "" {
		t.Errorf("got %v, and the volume saw Authorization %q; want no error, none", err, volumeAuth)
	}
}

// Fields a later master adds, or changes, must not break the client.
func TestClientClusterDecodesDefensively(t *testing.T) {
	cl := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_kvdb/cluster" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"node":{"name":"master","role":"master"},"replicas":3,
			"members":[{"name":"v1","role":"volume","addr":"10.0.0.1:3001","state":"alive","free":5,"total":9,"keys":17,"zone":"b"}],
			"ring":{"partitions":271,"owned":{"v1":271},"weights":{"v1":1}},
			"rebalance":{"moving":3,"paused":false},
			"under_replicated":"many",
			"pending_deletes":{"v1":2}}`)
	})
	info, err := cl.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Replicas != 3 || len(info.Members) != 1 || info.Members[0].Free != 5 || info.Ring.Owned["v1"] != 271 || info.PendingDeletes["v1"] != 2 {
		t.Errorf("got %+v", info)
	}
	if !strings.Contains(string(info.Raw), `"rebalance"`) {
		t.Errorf("Raw lost the unknown fields: %s", info.Raw)
	}
}
