package node

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// countGarbage counts the catalog's queued deletions.
func countGarbage(t testing.TB, m *Master) int {
	t.Helper()
	n := 0
	if err := m.cat.garbage(func(string, []byte, uint64) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	return n
}

// Concurrent DELETEs share requests to each volume and are answered once
// every replica's copy is out of its index; their catalog entries are
// cleared once the volumes have synced.
func TestDeleteBatchedAndSettled(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n = 64
	vers := make(map[string]uint64)
	for i := range n {
		k := fmt.Sprintf("batch/%d", i)
		c.put(k, "value "+k)
		var rec Record
		if found, err := c.master.cat.get([]byte(k), &rec); err != nil || !found {
			t.Fatalf("%s not in the catalog: %v", k, err)
		}
		vers[k] = rec.Version
	}
	var wg sync.WaitGroup
	for k, ver := range vers {
		wg.Go(func() {
			if st, _, body := c.do("DELETE", k, nil); st != 200 {
				t.Errorf("DELETE %s: %d %s", k, st, body)
				return
			}
			// Answered: no replica holds it any more.
			for _, v := range c.vols {
				if _, err := v.store.Get([]byte(k), ver); err == nil {
					t.Errorf("%s v%x still on %s after DELETE's 200", k, ver, v.cfg.Name)
				}
			}
			if st, _ := c.get(k); st != 404 {
				t.Errorf("GET %s after DELETE: %d, want 404", k, st)
			}
		})
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "the deleted copies' catalog entries to be cleared", func() bool {
		return countGarbage(t, c.master) == 0
	})
}

// A volume that fails between a lazy deletion and its sync keeps the
// deletion queued in the catalog, and the GC loop deletes it again.
func TestDeleteUnsyncedVolumeKilled(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, func(c *testCluster) {
		c.mcfg.GCInterval = 200 * time.Millisecond
	})
	c.put("unsynced/k", "v")
	var rec Record
	if found, err := c.master.cat.get([]byte("unsynced/k"), &rec); err != nil || !found {
		t.Fatal("not in the catalog", err)
	}
	// Hold the settler: DELETE answers, its entries stay queued.
	c.master.settler.round.Lock()
	if st, _, body := c.do("DELETE", "unsynced/k", nil); st != 200 {
		c.master.settler.round.Unlock()
		t.Fatalf("DELETE: %d %s", st, body)
	}
	if got := countGarbage(t, c.master); got != len(rec.Replicas) {
		c.master.settler.round.Unlock()
		t.Fatalf("%d queued deletions before the sync, want %d", got, len(rec.Replicas))
	}
	// The first replica dies before it syncs; its sync fails, so only the
	// other replica's entry is cleared.
	var dead int
	for i, v := range c.vols {
		if v != nil && v.cfg.Name == rec.Replicas[0] {
			dead = i
		}
	}
	c.killVolume(dead)
	c.master.settler.round.Unlock()
	waitFor(t, 10*time.Second, "the live replica's entry to be cleared", func() bool {
		return countGarbage(t, c.master) == 1
	})
	// Back, it may hold the copy again (its tombstone was not synced):
	// the GC deletes it again, durably, and clears the entry.
	c.startVolume(dead)
	waitFor(t, 20*time.Second, "the GC to delete the copy again", func() bool {
		return countGarbage(t, c.master) == 0
	})
	if _, err := c.vols[dead].store.Get([]byte("unsynced/k"), rec.Version); err == nil {
		t.Error("the copy is back on the restarted replica")
	}
}

// Deletions for one volume that queue up while a request is under way go
// in the next one together; each caller gets its own outcome.
func TestDeleteQueueBatches(t *testing.T) {
	c := newTestCluster(t, 1, 1)
	v := c.vols[0]
	const n = 300
	for i := range n {
		if _, err := v.store.Put(fmt.Appendf(nil, "q/%d", i), 1, bytes.NewReader([]byte("v")), 1); err != nil {
			t.Fatal(err)
		}
	}
	d := newDeleteQueues(c.master.vc)
	var wg sync.WaitGroup
	for i := range n + 20 { // 20 versions no one holds: no error either
		wg.Go(func() {
			it := d.enqueue(v.Addr(), fmt.Appendf(nil, "q/%d", i), 1)
			<-it.done
			if it.err != nil {
				t.Errorf("q/%d: %v", i, it.err)
			}
		})
	}
	wg.Wait()
	if got := v.store.Stats().Keys; got != 0 {
		t.Errorf("%d versions left on the volume", got)
	}
	if err := c.master.vc.syncLog(v.Addr()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d deletions in %d requests", n+20, d.requests.Load())
	if r := d.requests.Load(); r >= n/2 {
		t.Errorf("%d deletions took %d requests: not batched", n+20, r)
	}
	// The last sender leaves just after it answered its batch.
	waitFor(t, 5*time.Second, "the volume's queue to go", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.q) == 0
	})
}

func FuzzDeleteList(f *testing.F) {
	f.Add([]byte("1a2b /a%2Fb\n"), uint64(7), []byte("k"))
	f.Add([]byte("ffffffffffffffff /x\n0 y\n"), uint64(0), []byte("a b\nc"))
	f.Add([]byte("1 /_kvdb/mf/x\n"), uint64(1), []byte("_kvdb/mf/obj"))
	f.Fuzz(func(t *testing.T, body []byte, ver uint64, key []byte) {
		// Any body: an error, or deletions with valid keys.
		_ = parseDeleteList(body, func(k []byte, v uint64) {
			if len(k) == 0 || bytes.IndexByte(k, 0) >= 0 {
				t.Fatalf("parsed a bad key %q", k)
			}
		})
		// A valid key round-trips, whatever bytes it holds.
		if validateStoredKey(key) != nil {
			return
		}
		items := []*deleteItem{{key: key, version: ver}, {key: []byte("second"), version: ^ver}}
		var got []deleteItem
		err := parseDeleteList(appendDeleteList(nil, items), func(k []byte, v uint64) {
			got = append(got, deleteItem{key: bytes.Clone(k), version: v})
		})
		if err != nil || len(got) != 2 || !bytes.Equal(got[0].key, key) || got[0].version != ver || got[1].version != ^ver {
			t.Fatalf("round trip of %q v%x: %v, %+v", key, ver, err, got)
		}
	})
}
