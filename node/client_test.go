package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

func newTestClient(t *testing.T, url string) *Client {
	t.Helper()
	cl, err := NewClient(ClientConfig{URL: url, IdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// clientValue is size pseudo-random bytes from seed, generated as read.
func clientValue(seed uint64, size int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), size)
}

func sumOf(t *testing.T, r io.Reader) (uint64, int64) {
	t.Helper()
	h := xxhash.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	return h.Sum64(), n
}

// onlyReader hides every method but Read, as a pipe would.
type onlyReader struct{ io.Reader }

func TestClientPutGetRoundTrip(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, c.master.Addr()) // no scheme: http:// is assumed
	ctx := context.Background()
	const size = 5<<20 + 123
	wantSum, _ := sumOf(t, clientValue(1, size))

	for _, tt := range []struct {
		name string
		size int64 // what Put is told: -1 sends chunked
	}{
		{"content-length", size},
		{"chunked", -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := "round/" + tt.name
			res, err := cl.Put(ctx, key, onlyReader{clientValue(1, size)}, tt.size, PutOptions{})
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if !res.Created || res.Size != size || res.ETag != etag(wantSum) {
				t.Errorf("Put: got %+v, want created, %d bytes, ETag %s", res, int64(size), etag(wantSum))
			}
			v, err := cl.Get(ctx, key)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			defer v.Close()
			if v.Size != size || v.ETag != res.ETag || v.LastModified.IsZero() {
				t.Errorf("Get: got info %+v, want %d bytes, ETag %s, a Last-Modified", v.Info, int64(size), res.ETag)
			}
			gotSum, n := sumOf(t, v)
			if n != size || gotSum != wantSum {
				t.Errorf("Get: got %d bytes with checksum %016x, want %d with %016x", n, gotSum, int64(size), wantSum)
			}
			if _, err := v.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("Read after the end: got %v, want io.EOF", err)
			}
		})
	}

	t.Run("overwrite", func(t *testing.T) {
		res, err := cl.Put(ctx, "round/content-length", strings.NewReader("short"), 5, PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Created {
			t.Errorf("overwrite: got Created true, want false")
		}
		v, err := cl.Get(ctx, "round/content-length")
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		var b bytes.Buffer
		if _, err := io.Copy(&b, v); err != nil || b.String() != "short" {
			t.Errorf("after overwrite: got %q, %v; want %q", b.String(), err, "short")
		}
	})

	t.Run("empty", func(t *testing.T) {
		if _, err := cl.Put(ctx, "round/empty", strings.NewReader(""), 0, PutOptions{}); err != nil {
			t.Fatal(err)
		}
		v, err := cl.Get(ctx, "round/empty")
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if n, err := io.Copy(io.Discard, v); n != 0 || err != nil {
			t.Errorf("empty value: got %d bytes, %v", n, err)
		}
	})
}

func TestClientCreateOnly(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	res, err := cl.Put(ctx, "once", strings.NewReader("first"), 5, PutOptions{CreateOnly: true})
	if err != nil || !res.Created {
		t.Fatalf("first create: got %+v, %v; want created", res, err)
	}
	_, err = cl.Put(ctx, "once", clientValue(2, 8<<20), 8<<20, PutOptions{CreateOnly: true})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
	if st, body := c.get("once"); st != 200 || body != "first" {
		t.Errorf("after the refused create: got %d %q, want 200 %q", st, body, "first")
	}
}

func TestClientNotFound(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	if _, err := cl.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get: got %v, want ErrNotFound", err)
	}
	if _, err := cl.Stat(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat: got %v, want ErrNotFound", err)
	}
	if err := cl.Delete(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete: got %v, want ErrNotFound", err)
	}
	var se *StatusError
	if err := cl.Delete(ctx, "missing"); !errors.As(err, &se) || se.Status != 404 || se.Reason != "key not found" {
		t.Errorf("Delete: got %#v, want a StatusError 404 with the server's reason", err)
	}
}

func TestClientDeleteAndStat(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	res, err := cl.Put(ctx, "doomed", strings.NewReader("12345"), 5, PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cl.Stat(ctx, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != 5 || info.ETag != res.ETag || info.LastModified.IsZero() {
		t.Errorf("Stat: got %+v, want 5 bytes, ETag %s, a Last-Modified", info, res.ETag)
	}
	if d := time.Since(info.LastModified); d < -time.Minute || d > time.Minute {
		t.Errorf("Stat: Last-Modified %v is not about now", info.LastModified)
	}
	if err := cl.Delete(ctx, "doomed"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := cl.Get(ctx, "doomed"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: got %v, want ErrNotFound", err)
	}
}

func TestClientListPaging(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	var want []string
	for i := range 23 {
		k := fmt.Sprintf("ls/%02d", i)
		want = append(want, k)
		c.put(k, strconv.Itoa(i))
	}
	c.put("lt", "outside the prefix")
	c.put("ls0", "outside too: the prefix is ls/")

	page, err := cl.List(ctx, "ls/", "", 5)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(page.Keys, want[:5]) || page.Next != want[5] {
		t.Errorf("first page: got %q next %q, want %q next %q", page.Keys, page.Next, want[:5], want[5])
	}
	var got []string
	for k, err := range cl.Keys(ctx, "ls/", 5) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Keys: got %q, want %q", got, want)
	}
	page, err = cl.List(ctx, "nothing/", "", 0)
	if err != nil || len(page.Keys) != 0 || page.Next != "" {
		t.Errorf("empty listing: got %+v, %v", page, err)
	}
	if _, err := cl.List(ctx, "", "", maxListLimit+1); err == nil {
		t.Errorf("List with limit %d: no error", maxListLimit+1)
	}
}

// Keys travel percent-escaped byte for byte: spaces, '%', '+', '?', '#',
// doubled slashes and non-ASCII must come back as they went.
func TestClientOddKeys(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	keys := []string{
		"odd/with space", "odd/100%", "odd/%41", "odd/a+b", "odd/q?list&x=1", "odd/frag#x",
		"odd//double", "odd/ünïcødé/日本", "odd/tab\there", "odd/semi;colon", "odd/~tilde", "/odd-leading-slash",
	}
	for _, k := range keys {
		if _, err := cl.Put(ctx, k, strings.NewReader("v:"+k), int64(len("v:"+k)), PutOptions{}); err != nil {
			t.Fatalf("Put %q: %v", k, err)
		}
	}
	for _, k := range keys {
		v, err := cl.Get(ctx, k)
		if err != nil {
			t.Fatalf("Get %q: %v", k, err)
		}
		var b bytes.Buffer
		_, err = io.Copy(&b, v)
		v.Close()
		if err != nil || b.String() != "v:"+k {
			t.Errorf("Get %q: got %q, %v", k, b.String(), err)
		}
		if info, err := cl.Stat(ctx, k); err != nil || info.Size != int64(len("v:"+k)) {
			t.Errorf("Stat %q: got %+v, %v", k, info, err)
		}
	}
	// Listing pages one key at a time, so that every odd key is a start=.
	var got []string
	for k, err := range cl.Keys(ctx, "odd/", 1) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k)
	}
	var want []string
	for _, k := range keys {
		if strings.HasPrefix(k, "odd/") {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Keys: got %q, want %q", got, want)
	}
	for _, k := range keys {
		if err := cl.Delete(ctx, k); err != nil {
			t.Errorf("Delete %q: %v", k, err)
		}
	}
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

// A reader that ends before the size it announced fails the write, and
// nothing is stored.
func TestClientPutShortReader(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	_, err := cl.Put(ctx, "short", clientValue(3, 1<<20), 2<<20, PutOptions{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Put: got %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := cl.Stat(ctx, "short"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after the failed write: got %v, want ErrNotFound", err)
	}
}

func TestClientCluster(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	info, err := cl.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Replicas != 2 || info.Node.Role != RoleMaster || len(info.Raw) == 0 {
		t.Errorf("got replicas %d, node %+v, %d raw bytes", info.Replicas, info.Node, len(info.Raw))
	}
	vols := map[string]bool{}
	for _, m := range info.Members {
		if m.Role == RoleVolume && m.State == "alive" && m.HTTP != "" && m.Total > 0 {
			vols[m.Name] = true
		}
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("vol%d", i)
		if !vols[name] {
			t.Errorf("volume %s missing or incomplete in %+v", name, info.Members)
		}
		if info.Ring.Owned[name] == 0 {
			t.Errorf("volume %s owns no partition: %v", name, info.Ring.Owned)
		}
	}
	if sum := info.Ring.Owned["vol1"] + info.Ring.Owned["vol2"] + info.Ring.Owned["vol3"]; sum != info.Ring.Partitions {
		t.Errorf("partitions owned add up to %d, the ring has %d", sum, info.Ring.Partitions)
	}
}

// fakeServer answers every request with h; it stands in for a master, or
// for a master and the volume it redirects to.
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
		http.Redirect(w, r, volume.URL+r.URL.EscapedPath(), http.StatusFound)
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

// A master with too few volumes refuses a write before reading its body;
// under a large body the client sees the connection cut, and says why.
func TestClientPutRefusedEarly(t *testing.T) {
	c := newTestCluster(t, 1, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	for _, size := range []int64{100, 16 << 20} {
		_, err := cl.Put(context.Background(), "k", clientValue(1, size), size, PutOptions{})
		if err == nil || !strings.Contains(err.Error(), "1 live volumes, 2 replicas needed") {
			t.Errorf("%d bytes: got %v, want the master's reason", size, err)
		}
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
