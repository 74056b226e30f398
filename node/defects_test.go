package node

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestClockSteppedBack: a value written while the master's clock was an
// hour ahead, then replaced after a restart with the clock right again. The
// replacement must take effect (before the fix it was answered 200 and
// silently dropped: its clock version was below the stored one).
func TestClockSteppedBack(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, func(c *testCluster) {
		c.mcfg.now = func() time.Time { return time.Now().Add(time.Hour) }
	})
	c.put("clock/k", "written an hour ahead")
	c.master.Kill()
	c.mcfg.now = nil
	c.startMaster()
	c.waitVolumes(3)
	st, _, body := c.do("PUT", "clock/k", strings.NewReader("written with the clock right"))
	if st != 200 {
		t.Fatalf("PUT after the clock stepped back: got %d (%s), want 200", st, body)
	}
	if st, got := c.get("clock/k"); st != 200 || got != "written with the clock right" {
		t.Fatalf("GET: got %d %q, want 200 and the value acknowledged last", st, got)
	}
	// A new key and a second overwrite go through as well.
	c.put("clock/new", "v")
	c.put("clock/k", "third")
	if st, got := c.get("clock/k"); st != 200 || got != "third" {
		t.Fatalf("GET: got %d %q, want 200 \"third\"", st, got)
	}
}

// redirectOf returns the Location of the master's 302 for key.
func (c *testCluster) redirectOf(key string) string {
	c.t.Helper()
	resp, err := noRedirects.Get(c.url(key))
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 {
		c.t.Fatalf("GET %s: got %d, want 302", key, resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// getURL follows u (and its redirects) and returns status and body.
func getURL(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestStaleRedirect: a reader holding a redirect to a version that has
// since been replaced gets the old value while it is kept (MoveGrace), and
// afterwards is sent back to the master for the new one: never a 404 for a
// key that exists (before the fix, the old version was deleted at once).
func TestStaleRedirect(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	c.put("stale/k", "old value")
	old := c.redirectOf("stale/k")
	oldVer := c.record("stale/k").Version
	c.put("stale/k", "new value")
	for _, wait := range []time.Duration{5 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond} {
		time.Sleep(wait) // the reader's own delay between the redirect and following it
		if st, got := getURL(t, old); st != 200 || got != "old value" && got != "new value" {
			t.Fatalf("following an old redirect %v after the overwrite: got %d %q, want 200 and a value", wait, st, got)
		}
	}
	// Once the old version is gone from the volumes, the same URL leads
	// back to the master and on to the new value.
	waitFor(t, 15*time.Second, "the old version to be deleted", func() bool {
		for _, v := range c.vols {
			if _, err := v.store.Get([]byte("stale/k"), oldVer); err == nil {
				return false
			}
		}
		return true
	})
	if st, got := getURL(t, old); st != 200 || got != "new value" {
		t.Fatalf("following an old redirect after the old version was deleted: got %d %q, want 200 \"new value\"", st, got)
	}
}

// TestDeleteChaseBounded: a DELETE removes the value from every replica
// before it answers, so a reader holding an older redirect is sent back by
// the volume. If the key keeps moving on (deleted and written again) while
// the reader follows, the chase is cut after a few rounds with a 503 and
// Retry-After, within the 10 redirects a client follows.
func TestDeleteChaseBounded(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	c.put("chase/k", "first")
	old := c.redirectOf("chase/k")
	oldVer := c.record("chase/k").Version
	if st, _, body := c.do("DELETE", "chase/k", nil); st != 200 {
		t.Fatalf("DELETE: %d %s", st, body)
	}
	// Gone from every replica when the DELETE answered.
	for _, v := range c.vols {
		if _, err := v.store.Get([]byte("chase/k"), oldVer); err == nil {
			t.Fatalf("%s still holds the deleted version after the DELETE's 200", v.Name())
		}
	}
	// The volume sends the reader back, counting the round.
	resp, err := noRedirects.Get(old)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back := resp.Header.Get("Location")
	if resp.StatusCode != 302 || !strings.Contains(back, "missing=") || !strings.Contains(back, "&back=1") {
		t.Fatalf("a deleted version's reader: %d to %q, want 302 back to the master with back=1", resp.StatusCode, back)
	}
	c.put("chase/k", "second")
	// Back at the master with a version the key has moved on from: a new
	// redirect that carries the count, while under the bound ...
	resp, err = noRedirects.Get(back)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != 302 || !strings.Contains(loc, "&back=1") {
		t.Fatalf("sent back once: %d to %q, want 302 to a volume carrying back=1", resp.StatusCode, loc)
	}
	// ... and 503 with Retry-After once it has come back maxSentBack times.
	resp, err = noRedirects.Get(strings.Replace(back, "&back=1", "&back="+strconv.Itoa(maxSentBack), 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("sent back %d times: %d, want 503 with Retry-After", maxSentBack, resp.StatusCode)
	}
	// A reader that just follows redirects gets the value.
	if st, got := getURL(t, old); st != 200 || got != "second" {
		t.Fatalf("following the old redirect: %d %q, want the new value", st, got)
	}
}

// TestMissingReplicaSendsReaderOn: a replica lost its copy (the file is
// gone). Readers redirected to it are sent on to the other replica, never
// given a 404, and the master makes a new copy at once.
func TestMissingReplicaSendsReaderOn(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	c.put("lost/k", "the value")
	rec := c.record("lost/k")
	i := c.volumeIndex(rec.Replicas[0])
	if err := c.vols[i].store.Delete([]byte("lost/k"), rec.Version); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if st, got := c.get("lost/k"); st != 200 || got != "the value" {
			t.Fatalf("GET with one replica's copy gone: got %d %q, want 200 \"the value\"", st, got)
		}
	}
	// Reads go to the least loaded replica, so under load the 20 above may
	// all have gone to the other one: read as a reader the master sent to
	// the lost copy does.
	lost := string(appendBlobURL(nil, c.vols[i].Addr(), []byte("lost/k"), rec.Version))
	if st, got := getURL(t, lost); st != 200 || got != "the value" {
		t.Fatalf("GET through the replica that lost its copy: got %d %q, want 200 \"the value\"", st, got)
	}
	waitFor(t, 15*time.Second, "the lost copy to be replaced", func() bool {
		return c.healthyReplicas("lost/k") == 2
	})
}

// TestStartWithSeedThatDoesNotAnswer: a node whose --join seed accepts the
// connection and never answers starts at once and answers every endpoint
// meanwhile (before the fix, NewVolume blocked in the join while already
// serving, and /_kvdb/ready, cluster, metrics or a GET dereferenced the
// gossip state that did not exist yet and killed the process).
func TestStartWithSeedThatDoesNotAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // accepts nothing: connections wait in the backlog
	dir := t.TempDir()
	gossip := GossipConfig{Bind: "127.0.0.1:0", Cluster: "silent-seed", Profile: ProfileTest, Join: []string{ln.Addr().String()}}
	start := time.Now()
	v, err := NewVolume(VolumeConfig{Addr: "127.0.0.1:0", Dir: filepath.Join(dir, "vol"), Gossip: gossip, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Kill()
	m, err := NewMaster(MasterConfig{Addr: "127.0.0.1:0", Dir: filepath.Join(dir, "master"), Gossip: gossip, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("starting took %v with a seed that does not answer; want the join in the background", d)
	}
	for _, addr := range []string{v.Addr(), m.Addr()} {
		for _, path := range []string{"/_kvdb/live", "/_kvdb/ready", "/_kvdb/cluster", "/_kvdb/metrics", "/some/key", "/some/key?v=1"} {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatalf("GET %s%s while joining: %v", addr, path, err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 500 && resp.StatusCode != 503 {
				t.Errorf("GET %s%s while joining: got %d", addr, path, resp.StatusCode)
			}
		}
	}
}

// TestMasterDiskFull fills the disk under the master's catalog (a small
// tmpfs). Writes and deletes are then refused with 507 and the master
// reports not ready; reads go on; once space is freed the master takes
// writes again by itself (before the fix: 500 for every write until a
// restart, ready all along, nothing logged).
func TestMasterDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	c := newTestClusterWith(t, 2, 2, func(c *testCluster) { c.mcfg.Dir = mnt }) // the volumes live beside it, not on it
	c.put("full/a", "before")
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	ready := func() int {
		resp, err := http.Get("http://" + c.master.Addr() + "/_kvdb/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The catalog's journal may still have room in its last page: write
	// until the disk refuses.
	refused := false
	for i := 0; i < 500 && !refused; i++ {
		st, _, body := c.do("PUT", fmt.Sprintf("full/fill%d", i), strings.NewReader("during"))
		switch st {
		case 201:
		case 507:
			refused = true
		default:
			t.Fatalf("PUT with the master's disk filling up: got %d (%s), want 201 or 507", st, body)
		}
	}
	if !refused {
		t.Fatal("500 PUTs were accepted with the master's disk full")
	}
	if st, _, body := c.do("DELETE", "full/a", nil); st != 507 {
		t.Errorf("DELETE with the master's disk full: got %d (%s), want 507", st, body)
	}
	if st := ready(); st != 503 {
		t.Errorf("ready with the master's disk full: got %d, want 503", st)
	}
	if st, got := c.get("full/a"); st != 200 || got != "before" {
		t.Errorf("GET with the master's disk full: got %d %q, want 200 \"before\"", st, got)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "writes accepted again", func() bool {
		st, _, _ := c.do("PUT", "full/b", strings.NewReader("after"))
		return st == 201
	})
	if st := ready(); st != 200 {
		t.Errorf("ready once space is freed: got %d, want 200", st)
	}
	for k, want := range map[string]string{"full/a": "before", "full/b": "after"} {
		if st, got := c.get(k); st != 200 || got != want {
			t.Errorf("GET %s after recovery: got %d %q, want %q", k, st, got, want)
		}
	}
}

// TestDateNotBeforeLastModified: a value read right after it was written is
// never dated before its own Last-Modified (fasthttp's Date is refreshed
// once a second).
func TestDateNotBeforeLastModified(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	for i := range 20 {
		key := fmt.Sprintf("date/%d", i)
		c.put(key, "v")
		for _, u := range []string{c.url(key), c.redirectOf(key)} {
			resp, err := http.Head(u)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			date, err1 := http.ParseTime(resp.Header.Get("Date"))
			lm, err2 := http.ParseTime(resp.Header.Get("Last-Modified"))
			if err1 != nil || err2 != nil {
				t.Fatalf("HEAD %s: Date %q, Last-Modified %q", u, resp.Header.Get("Date"), resp.Header.Get("Last-Modified"))
			}
			if date.Before(lm) {
				t.Fatalf("HEAD %s: Date %v is before Last-Modified %v", u, date, lm)
			}
		}
		time.Sleep(37 * time.Millisecond) // land at different points of a second
	}
}

// TestRoomForLogConcurrentFirst: the first calls of roomForLog, at once
// (a new leader's first writes), all see the disk's room. The cached
// answer was read before it was stored, false, so such writes were
// answered 507 "the master's disk is full" on an empty disk.
func TestRoomForLogConcurrentFirst(t *testing.T) {
	dir := t.TempDir()
	for round := range 200 {
		c := &catalog{dir: dir}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var full atomic.Int64
		for range 16 {
			wg.Go(func() {
				<-start
				if !c.roomForLog() {
					full.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := full.Load(); n > 0 {
			t.Fatalf("round %d: %d of 16 concurrent first calls saw no room on a disk with room", round, n)
		}
	}
}
