package node

// The Go client against a real cluster, run in this process by the
// harness of cluster_test.go. The client's own tests, against stand-in
// servers, are in node/client.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/kvdb/kvdb/node/client"
)

func newTestClient(t *testing.T, url string) *client.Client {
	t.Helper()
	cl, err := client.NewClient(client.ClientConfig{URL: url, IdleTimeout: 30 * time.Second})
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
			res, err := cl.Put(ctx, key, onlyReader{clientValue(1, size)}, tt.size, client.PutOptions{})
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
		res, err := cl.Put(ctx, "round/content-length", strings.NewReader("short"), 5, client.PutOptions{})
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
		if _, err := cl.Put(ctx, "round/empty", strings.NewReader(""), 0, client.PutOptions{}); err != nil {
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
	res, err := cl.Put(ctx, "once", strings.NewReader("first"), 5, client.PutOptions{CreateOnly: true})
	if err != nil || !res.Created {
		t.Fatalf("first create: got %+v, %v; want created", res, err)
	}
	_, err = cl.Put(ctx, "once", clientValue(2, 8<<20), 8<<20, client.PutOptions{CreateOnly: true})
	if !errors.Is(err, client.ErrExists) {
		t.Fatalf("second create: got %v, want client.ErrExists", err)
	}
	if st, body := c.get("once"); st != 200 || body != "first" {
		t.Errorf("after the refused create: got %d %q, want 200 %q", st, body, "first")
	}
}

func TestClientNotFound(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	if _, err := cl.Get(ctx, "missing"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get: got %v, want client.ErrNotFound", err)
	}
	if _, err := cl.Stat(ctx, "missing"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Stat: got %v, want client.ErrNotFound", err)
	}
	if err := cl.Delete(ctx, "missing"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Delete: got %v, want client.ErrNotFound", err)
	}
	var se *client.StatusError
	if err := cl.Delete(ctx, "missing"); !errors.As(err, &se) || se.Status != 404 || se.Reason != "key not found" {
		t.Errorf("Delete: got %#v, want a client.StatusError 404 with the server's reason", err)
	}
}

func TestClientDeleteAndStat(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	res, err := cl.Put(ctx, "doomed", strings.NewReader("12345"), 5, client.PutOptions{})
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
	if _, err := cl.Get(ctx, "doomed"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get after Delete: got %v, want client.ErrNotFound", err)
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
	if _, err := cl.List(ctx, "", "", client.MaxListLimit+1); err == nil {
		t.Errorf("List with limit %d: no error", client.MaxListLimit+1)
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
		if _, err := cl.Put(ctx, k, strings.NewReader("v:"+k), int64(len("v:"+k)), client.PutOptions{}); err != nil {
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

// A reader that ends before the size it announced fails the write, and
// nothing is stored.
func TestClientPutShortReader(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	ctx := context.Background()
	_, err := cl.Put(ctx, "short", clientValue(3, 1<<20), 2<<20, client.PutOptions{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Put: got %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := cl.Stat(ctx, "short"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Stat after the failed write: got %v, want client.ErrNotFound", err)
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

// A master with too few volumes refuses a write before reading its body;
// under a large body the client sees the connection cut, and says why.
func TestClientPutRefusedEarly(t *testing.T) {
	c := newTestCluster(t, 1, 2)
	cl := newTestClient(t, "http://"+c.master.Addr())
	for _, size := range []int64{100, 16 << 20} {
		_, err := cl.Put(context.Background(), "k", clientValue(1, size), size, client.PutOptions{})
		if err == nil || !strings.Contains(err.Error(), "1 live volumes, 2 replicas needed") {
			t.Errorf("%d bytes: got %v, want the master's reason", size, err)
		}
	}
}

// TestClientChecksIndexETag: every replica's copy of a value disagrees with
// the master's index (each volume's own ETag matches its own bytes). The
// client checks the bytes against the ETag of the master's redirect, so
// the read fails with ErrChecksum (before the fix it compared them with the
// volume's ETag and returned the wrong bytes as good).
func TestClientChecksIndexETag(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	c.put("sum/k", "the value the index knows")
	rec := c.record("sum/k")
	for _, name := range rec.Replicas {
		s := c.vols[c.volumeIndex(name)].store
		if err := s.Delete([]byte("sum/k"), rec.Version); err != nil {
			t.Fatal(err)
		}
		other := "another value, same length!"
		if _, err := s.Put([]byte("sum/k"), rec.Version, strings.NewReader(other), int64(len(other))); err != nil {
			t.Fatal(err)
		}
	}
	cl := newTestClient(t, "http://"+c.master.Addr())
	v, err := cl.Get(context.Background(), "sum/k")
	if err == nil {
		_, err = io.Copy(io.Discard, v)
		v.Close()
	}
	if !errors.Is(err, client.ErrChecksum) {
		t.Fatalf("GET of a replica that disagrees with the index: got %v, want ErrChecksum", err)
	}
}
