package node

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/kvdb/kvdb/store"
)

// TestVolumeKilled kills one of three volumes without a goodbye: once gossip
// has noticed, every value written with 2 replicas is still readable, and
// new writes go to the two that are left.
func TestVolumeKilled(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n = 60
	for i := 0; i < n; i++ {
		c.put(fmt.Sprintf("k%d", i), fmt.Sprintf("value %d", i))
	}
	c.killVolume(1)
	c.waitVolumes(2)
	for i := 0; i < n; i++ {
		if st, got := c.get(fmt.Sprintf("k%d", i)); st != 200 || got != fmt.Sprintf("value %d", i) {
			t.Fatalf("GET k%d after a volume died: got %d %q", i, st, got)
		}
	}
	c.put("after", "death")
	if st, got := c.get("after"); st != 200 || got != "death" {
		t.Fatalf("GET after: got %d %q", st, got)
	}
	// The dead volume comes back with its disk and serves again.
	c.startVolume(1)
	c.waitVolumes(3)
	for i := 0; i < n; i++ {
		if st, _ := c.get(fmt.Sprintf("k%d", i)); st != 200 {
			t.Fatalf("GET k%d after restart: got %d", i, st)
		}
	}
}

// TestWriteFailover kills a volume before gossip notices: writes placed on
// it still succeed, because the master copies the value to the next volume
// on the ring.
func TestWriteFailover(t *testing.T) {
	c := newTestCluster(t, 4, 2)
	dead := c.vcfgs[0].Name
	c.killVolume(0)
	// Right now the master still believes the volume is alive.
	view := c.master.view.Load()
	written := 0
	for i := 0; written < 10 && i < 1000; i++ {
		key := fmt.Sprintf("f%d", i)
		order := view.ring.Order([]byte(key))
		if order[0] != dead && order[1] != dead {
			continue
		}
		st, _, body := c.do("PUT", key, strings.NewReader("v-"+key))
		if st != 201 {
			t.Fatalf("PUT %s with a dead replica target: got %d (%s), want 201", key, st, body)
		}
		var rec Record
		if found, _ := c.master.cat.get([]byte(key), &rec); !found || len(rec.Replicas) != 2 || contains(rec.Replicas, dead) {
			t.Fatalf("%s: got replicas %v, want 2 live ones", key, rec.Replicas)
		}
		if st, got := c.get(key); st != 200 || got != "v-"+key {
			t.Fatalf("GET %s: got %d %q", key, st, got)
		}
		written++
	}
	if written == 0 {
		t.Fatal("no key placed on the dead volume")
	}
}

// TestRebuildIndex loses the master's whole directory: a new master with an
// empty index merges the volumes' indexes and every key is readable again,
// at its newest version, and deleted keys stay deleted.
func TestRebuildIndex(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	for i := 0; i < 40; i++ {
		c.put(fmt.Sprintf("r%d", i), "old")
	}
	for i := 0; i < 10; i++ {
		c.put(fmt.Sprintf("r%d", i), "new")
	}
	for i := 30; i < 40; i++ {
		if st, _, _ := c.do("DELETE", fmt.Sprintf("r%d", i), nil); st != 200 {
			t.Fatalf("DELETE r%d: got %d", i, st)
		}
	}
	// Let the old versions be collected, as they would be in a running cluster.
	waitFor(t, 10*time.Second, "garbage collection", func() bool {
		n := 0
		_ = c.master.cat.garbage(func(string, []byte, uint64) bool { n++; return true })
		return n == 0
	})
	c.master.Kill()
	if err := os.RemoveAll(c.mcfg.Dir); err != nil {
		t.Fatal(err)
	}
	c.startMaster()
	c.waitVolumes(3)
	waitFor(t, 15*time.Second, "master ready", func() bool {
		resp, err := http.Get("http://" + c.master.Addr() + "/_kvdb/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	for i := 0; i < 40; i++ {
		want, wantSt := "old", 200
		switch {
		case i < 10:
			want = "new"
		case i >= 30:
			want, wantSt = "", 404
		}
		st, got := c.get(fmt.Sprintf("r%d", i))
		if st != wantSt || wantSt == 200 && got != want {
			t.Fatalf("GET r%d after rebuild: got %d %q, want %d %q", i, st, got, wantSt, want)
		}
	}
	// A copy that rebalancing had just moved away (its deletion still in
	// its grace period) is merged as a third replica; the next placement
	// pass trims it.
	waitFor(t, 10*time.Second, "r5 to have 2 replicas after the rebuild", func() bool {
		var rec Record
		found, _ := c.master.cat.get([]byte("r5"), &rec)
		return found && len(rec.Replicas) == 2
	})

	// --rebuild discards an index that is there and does the same.
	c.master.Kill()
	c.mcfg.Rebuild = true
	c.startMaster()
	c.waitVolumes(3)
	waitFor(t, 15*time.Second, "rebuild of every volume", func() bool {
		c.master.mergeMu.Lock()
		defer c.master.mergeMu.Unlock()
		return len(c.master.merged) == 3
	})
	for i := 0; i < 40; i++ {
		st, _ := c.get(fmt.Sprintf("r%d", i))
		if want := map[bool]int{true: 404, false: 200}[i >= 30]; st != want {
			t.Fatalf("GET r%d after --rebuild: got %d, want %d", i, st, want)
		}
	}
}

// TestFailedWriteLeavesNothing: with no volume left to replace a failed
// replica, the write is refused with 503, the old value stays, and the
// blob written to the surviving replica is deleted.
func TestFailedWriteLeavesNothing(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	c.put("k", "old")
	c.killVolume(0) // the master has not noticed yet
	st, _, body := c.do("PUT", "k", strings.NewReader("new"))
	if st != 503 {
		t.Fatalf("PUT with a dead replica and no spare: got %d (%s), want 503", st, body)
	}
	waitFor(t, 10*time.Second, "abandoned blob deleted", func() bool {
		return c.vols[1].store.Stats().Keys == 1
	})
	c.startVolume(0)
	c.waitVolumes(2)
	if st, got := c.get("k"); st != 200 || got != "old" {
		t.Fatalf("GET: got %d %q, want the old value", st, got)
	}
}

// TestRestartMaster stops the master, with a crash and then gracefully, and
// starts it again: the volumes come back to it and every acknowledged write
// is there.
func TestRestartMaster(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	for i := 0; i < 20; i++ {
		c.put(fmt.Sprintf("m%d", i), fmt.Sprint(i))
	}
	for _, graceful := range []bool{false, true} {
		if graceful {
			// A graceful stop tells the volumes the master left; they must
			// dial it again when it is back, not stay among themselves.
			if err := c.master.Close(); err != nil {
				t.Fatal(err)
			}
		} else {
			c.master.Kill()
		}
		c.startMaster()
		c.waitVolumes(3)
		for i := 0; i < 20; i++ {
			if st, got := c.get(fmt.Sprintf("m%d", i)); st != 200 || got != fmt.Sprint(i) {
				t.Fatalf("graceful=%v: GET m%d: got %d %q", graceful, i, st, got)
			}
		}
	}
}

// patternReader yields size bytes of a deterministic pattern without
// holding them.
type patternReader struct {
	size, off int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	if rem := p.size - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		x := uint64(p.off + int64(i))
		b[i] = byte(x*2654435761>>13) ^ byte(x>>20)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func TestLargeValueStreams(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	size := int64(64 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	want := xxhash.New()
	if _, err := io.Copy(want, &patternReader{size: size}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", c.url("big/value"), &patternReader{size: size})
	req.ContentLength = size
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("PUT: got %d", resp.StatusCode)
	}
	resp, err = c.client.Get(c.url("big/value"))
	if err != nil {
		t.Fatal(err)
	}
	got := xxhash.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || got.Sum64() != want.Sum64() {
		t.Fatalf("GET: got %d bytes (err %v) checksum %x, want %d bytes %x", n, err, got.Sum64(), size, want.Sum64())
	}
}

// TestShortBody: a client that declares more than it sends, then hangs up,
// leaves nothing behind, whether the value is large or small.
func TestShortBody(t *testing.T) {
	for _, tc := range []struct{ declared, sent int }{{1000000, 300000}, {40000, 20000}} {
		t.Run(fmt.Sprint(tc.declared), func(t *testing.T) { testShortBody(t, tc.declared, tc.sent) })
	}
}

func testShortBody(t *testing.T, declared, sent int) {
	c := newTestCluster(t, 3, 2)
	c.put("short", "old value")
	conn, err := (&netDialer{}).dial(c.master.Addr())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /short HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", declared, strings.Repeat("z", sent))
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	// The old value stays, whole; the abandoned blobs get collected.
	waitFor(t, 10*time.Second, "abandoned write cleaned up", func() bool {
		n := 0
		_ = c.master.cat.garbage(func(string, []byte, uint64) bool { n++; return true })
		return n == 0
	})
	if st, got := c.get("short"); st != 200 || got != "old value" {
		t.Fatalf("GET after a cut-off overwrite: got %d %q, want the old value", st, got)
	}
	for _, v := range c.vols {
		if st := v.store.Stats(); st.Keys != 1 && st.Keys != 0 {
			t.Errorf("volume %s holds %d versions, want at most the one current", v.Name(), st.Keys)
		}
	}
}

type netDialer struct{}

func (netDialer) dial(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, 5*time.Second)
}

// TestRepairAfterDeath kills one of four volumes: once it has been gone for
// the repair delay, every key it held is copied from the survivor to
// another volume, so every key has 2 live replicas again; when the dead
// volume comes back, its stale copies are deleted.
func TestRepairAfterDeath(t *testing.T) {
	c := newTestCluster(t, 4, 2)
	const n = 120
	for i := 0; i < n; i++ {
		c.put(fmt.Sprintf("d%d", i), fmt.Sprintf("value %d", i))
	}
	dead := c.vcfgs[2].Name
	held := c.vols[2].store.Stats().Keys
	if held == 0 {
		t.Fatal("the volume to kill holds nothing")
	}
	c.killVolume(2)
	c.waitVolumes(3)
	healthy := func() bool {
		view := c.master.view.Load()
		ok := true
		_ = c.master.cat.scan(func(key []byte, rec *Record) bool {
			live := 0
			for _, name := range rec.Replicas {
				if _, alive := view.vols[name]; alive {
					live++
				}
			}
			if live < 2 || len(rec.Replicas) != 2 {
				ok = false
				return false
			}
			return true
		})
		return ok
	}
	start := time.Now()
	waitFor(t, 30*time.Second, "every key back to 2 live replicas", healthy)
	t.Logf("%d keys held by the dead volume re-replicated %v after gossip noticed the death", held, time.Since(start))
	for i := 0; i < n; i++ {
		if st, got := c.get(fmt.Sprintf("d%d", i)); st != 200 || got != fmt.Sprintf("value %d", i) {
			t.Fatalf("GET d%d after repair: got %d %q", i, st, got)
		}
	}
	var rec Record
	for i := 0; i < n; i++ {
		if found, _ := c.master.cat.get([]byte(fmt.Sprintf("d%d", i)), &rec); !found || contains(rec.Replicas, dead) {
			t.Fatalf("d%d: replicas %v still name the dead volume", i, rec.Replicas)
		}
	}
	// The volume returns with its disk: its now-redundant copies go.
	c.startVolume(2)
	c.waitVolumes(4)
	// Rebalancing may move keys back onto it (the ring wants them there
	// again): those copies are current. Every other copy it holds goes.
	waitFor(t, 15*time.Second, "stale copies on the returned volume deleted", func() bool {
		return c.staleCopies(2) == 0
	})
	if under, copied := c.master.repairStatus(); under != 0 || copied < held {
		t.Fatalf("repair status: under-replicated %d, copies %d; want 0 and at least %d", under, copied, held)
	}
}

// TestReturnedVolumeResurrectsNothing stops a volume, deletes and
// overwrites keys while it is away, and brings it back: no deleted value
// comes back and no stale value is served, from the master or the volume.
func TestReturnedVolumeResurrectsNothing(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	for i := 0; i < 30; i++ {
		c.put(fmt.Sprintf("z%d", i), "v1")
	}
	c.killVolume(0)
	c.waitVolumes(2)
	for i := 0; i < 10; i++ {
		if st, _, _ := c.do("DELETE", fmt.Sprintf("z%d", i), nil); st != 200 {
			t.Fatalf("DELETE z%d: got %d", i, st)
		}
	}
	for i := 10; i < 20; i++ {
		c.put(fmt.Sprintf("z%d", i), "v2")
	}
	c.startVolume(0)
	c.waitVolumes(3)
	waitFor(t, 15*time.Second, "queued deletions done on the returned volume", func() bool {
		n := 0
		_ = c.master.cat.garbage(func(string, []byte, uint64) bool { n++; return true })
		return n == 0
	})
	for i := 0; i < 30; i++ {
		want, wantSt := "v1", 200
		switch {
		case i < 10:
			wantSt = 404
		case i < 20:
			want = "v2"
		}
		for try := 0; try < 3; try++ { // several GETs may land on different replicas
			st, got := c.get(fmt.Sprintf("z%d", i))
			if st != wantSt || wantSt == 200 && got != want {
				t.Fatalf("GET z%d: got %d %q, want %d %q", i, st, got, wantSt, want)
			}
		}
	}
	// The returned volume itself holds no version the index does not name.
	v := c.vols[0]
	var rec Record
	err := v.store.Iterate(nil, func(m store.Meta) bool {
		found, _ := c.master.cat.get(m.Key, &rec)
		if !found || rec.Version != m.Version || !contains(rec.Replicas, v.Name()) {
			t.Errorf("returned volume still holds %q version %x (index: found=%v version %x replicas %v)", m.Key, m.Version, found, rec.Version, rec.Replicas)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHungVolume: a volume that gossips as alive and accepts connections
// but never answers does not hang the master. Writes placed on it move to
// another volume once the idle timeout passes; other keys keep working.
func TestHungVolume(t *testing.T) {
	c := newTestCluster(t, 0, 2)
	c.master.Kill()
	c.mcfg.IdleTimeout = time.Second
	c.startMaster()
	for i := 0; i < 3; i++ {
		c.addVolume()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close() // held open, never answered
		}
	}()
	hung, err := startMembership("hung", GossipConfig{
		Bind: "127.0.0.1:0", Cluster: c.label, Profile: ProfileTest, Join: []string{c.mcfg.Gossip.Bind},
	}, nodeMeta{Role: RoleVolume, HTTP: ln.Addr().String()}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer hung.shutdown()
	c.waitVolumes(4)

	view := c.master.view.Load()
	var onHung []string
	for i := 0; len(onHung) < 2 && i < 1000; i++ {
		key := fmt.Sprintf("h%d", i)
		if o := view.ring.Order([]byte(key)); o[0] == "hung" || o[1] == "hung" {
			onHung = append(onHung, key)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, key := range onHung {
			st, _, body := c.do("PUT", key, strings.NewReader("v-"+key))
			if st != 201 {
				t.Errorf("PUT %s placed on a hung volume: got %d (%s), want 201 from another volume", key, st, body)
			}
		}
	}()
	// Meanwhile the master serves other requests.
	c.put("elsewhere", "fine")
	if st, _, _ := c.do("HEAD", "elsewhere", nil); st != 200 {
		t.Errorf("HEAD while a write waits on a hung volume: got %d", st)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("writes to a hung volume never finished")
	}
	for _, key := range onHung {
		var rec Record
		if found, _ := c.master.cat.get([]byte(key), &rec); !found || contains(rec.Replicas, "hung") || len(rec.Replicas) != 2 {
			t.Fatalf("%s: replicas %v, want 2 that answer", key, rec.Replicas)
		}
	}
	// The master's probes notice it too, so later writes skip it at once.
	waitFor(t, 10*time.Second, "the master to avoid the hung volume", func() bool {
		return (*c.master.unreachable.Load())["hung"]
	})
}

// TestUnansweringVolumeAvoided: a volume whose HTTP side is gone while its
// gossip still runs (so the cluster never declares it dead) is found by the
// master's probes; reads are redirected to its replica partners and new
// writes placed elsewhere.
func TestUnansweringVolumeAvoided(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n = 40
	for i := 0; i < n; i++ {
		c.put(fmt.Sprintf("u%d", i), fmt.Sprint("v", i))
	}
	name := c.vols[0].Name()
	c.vols[0].http.kill()
	waitFor(t, 10*time.Second, "the master to avoid the volume", func() bool {
		return (*c.master.unreachable.Load())[name]
	})
	if c.master.LiveVolumes() != 3 {
		t.Fatalf("gossip should still count the volume: %d live", c.master.LiveVolumes())
	}
	for i := 0; i < n; i++ {
		if st, got := c.get(fmt.Sprintf("u%d", i)); st != 200 || got != fmt.Sprint("v", i) {
			t.Fatalf("GET u%d with one volume not answering: got %d %q", i, st, got)
		}
	}
	c.put("after", "x")
	var rec Record
	if found, _ := c.master.cat.get([]byte("after"), &rec); !found || contains(rec.Replicas, name) {
		t.Fatalf("new write placed on the unanswering volume: %v", rec.Replicas)
	}
}

// staleCopies counts the versions volume i holds that the master's catalog
// does not name it a replica of.
func (c *testCluster) staleCopies(i int) int {
	name := c.vcfgs[i].Name
	stale := 0
	_ = c.vols[i].store.Iterate(nil, func(m store.Meta) bool {
		var rec Record
		found, err := c.master.cat.get(m.Key, &rec)
		if err != nil || !found || rec.Version != m.Version || !contains(rec.Replicas, name) {
			stale++
		}
		return true
	})
	return stale
}
