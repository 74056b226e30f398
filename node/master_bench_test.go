package node

import (
	"bufio"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func benchMaster(b *testing.B) *Master {
	b.Helper()
	m, err := NewMaster(MasterConfig{
		Addr: "127.0.0.1:0", Dir: filepath.Join(b.TempDir(), "m"), Replicas: 2,
		Gossip: GossipConfig{Bind: "127.0.0.1:0", Cluster: fmt.Sprint("bench-", time.Now().UnixNano()), Profile: ProfileTest},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Kill)
	return m
}

// BenchmarkRedirectHandler measures the master's GET handler for an
// existing key (index lookup, live-replica choice, Location header),
// without the network.
func BenchmarkRedirectHandler(b *testing.B) {
	c := newTestCluster(b, 2, 2)
	m := c.master
	c.put("photos/2026/cat.jpg", "meow")
	var ctx fasthttp.RequestCtx
	// Parsed from the wire, as the server does, with a client's usual
	// headers (none of them a precondition).
	raw := "GET /photos/2026/cat.jpg HTTP/1.1\r\nHost: kvdb:3000\r\nUser-Agent: curl/8.14\r\nAccept: */*\r\n\r\n"
	if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx.Response.Reset()
		m.handle(&ctx)
		if ctx.Response.StatusCode() != fasthttp.StatusFound {
			b.Fatalf("got %d", ctx.Response.StatusCode())
		}
	}
}

func BenchmarkIndexGet(b *testing.B) {
	m := benchMaster(b)
	key := []byte("photos/2026/cat.jpg")
	rec := Record{Version: 12345, Size: 1 << 20, Checksum: 42, ModTime: time.Now(), Replicas: []string{"vol1", "vol2"}}
	if err := m.cat.commit(key, &rec, nil, nil); err != nil {
		b.Fatal(err)
	}
	var got Record
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if found, err := m.cat.get(key, &got); !found || err != nil {
			b.Fatal(found, err)
		}
	}
}

func BenchmarkIndexCommit(b *testing.B) {
	m := benchMaster(b)
	rec := Record{Size: 1 << 20, Checksum: 42, ModTime: time.Now(), Replicas: []string{"vol1", "vol2"}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			r := rec
			r.Version, _ = m.cat.nextVersion()
			key := fmt.Appendf(nil, "k%d-%d", r.Version, i)
			if err := m.cat.commit(key, &r, nil, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRedirectAllocs: the redirect of an existing (cached) key allocates
// nothing, so the master's small-request rate is not bounded by the GC.
func TestRedirectAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation allocates")
	}
	c := newTestCluster(t, 2, 2)
	c.put("photos/2026/cat.jpg", "meow")
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.SetRequestURI("/photos/2026/cat.jpg")
	c.master.handle(&ctx) // warm the cache and fasthttp's buffers
	allocs := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		c.master.handle(&ctx)
	})
	if ctx.Response.StatusCode() != fasthttp.StatusFound {
		t.Fatalf("got status %d, want 302", ctx.Response.StatusCode())
	}
	if allocs != 0 {
		t.Fatalf("got %.1f allocations per redirect, want 0", allocs)
	}
}
