package node

import (
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
