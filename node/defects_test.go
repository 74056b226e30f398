package node

import (
	"io"
	"net/http"
	"strings"
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
	waitFor(t, 15*time.Second, "the lost copy to be replaced", func() bool {
		return c.healthyReplicas("lost/k") == 2
	})
}
