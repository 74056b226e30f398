package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
)

// readCopy reads version of key from volume v's store.
func readCopy(t testing.TB, v *Volume, key []byte, version uint64) []byte {
	t.Helper()
	f, meta, err := v.store.OpenBlob(key, version)
	if err != nil {
		t.Fatalf("%s v%x: %v", key, version, err)
	}
	defer f.Close()
	b := make([]byte, meta.Size)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatalf("%s v%x: %v", key, version, err)
	}
	return b
}

// Small writes for one volume that queue up while a request is under way
// go in the next one together; each caller gets its own outcome, and a
// version the volume already holds is refused (409) without failing the
// others in its request.
func TestPutQueueBatches(t *testing.T) {
	c := newTestClusterWith(t, 1, 1, func(c *testCluster) { c.mcfg.Secret = []byte("put-queue-secret") })
	v := c.vols[0]
	const n = 300
	value := func(i int) []byte {
		return bytes.Repeat([]byte{byte(i)}, (i*997)%(smallWriteMax+1))
	}
	// With a secret, a volume takes only fresh versions (admitVersion).
	base, err := c.master.cat.nextVersion()
	if err != nil {
		t.Fatal(err)
	}
	q := newPutQueues(c.master.vc)
	put := func(i int) *putItem {
		it := &putItem{waiter: newWaiter(), key: fmt.Appendf(nil, "pq/%d", i), version: base + uint64(i), body: value(i)}
		q.add(v.Addr(), it)
		<-it.done
		return it
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			it := put(i)
			if it.res.err != nil {
				t.Errorf("pq/%d: %v", i, it.res.err)
				return
			}
			if b := value(i); it.res.size != int64(len(b)) || it.res.checksum != xxhash.Sum64(b) {
				t.Errorf("pq/%d: the volume answered %d bytes %x, want %d %x", i, it.res.size, it.res.checksum, len(b), xxhash.Sum64(b))
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i := range n {
		if got := readCopy(t, v, fmt.Appendf(nil, "pq/%d", i), base+uint64(i)); !bytes.Equal(got, value(i)) {
			t.Fatalf("pq/%d: the volume holds %d other bytes", i, len(got))
		}
	}
	t.Logf("%d writes in %d requests", q.items.Load(), q.requests.Load())
	if r := q.requests.Load(); r >= n/2 {
		t.Errorf("%d writes took %d requests: not batched", n, r)
	}
	// Versions are immutable: writing one again is refused, alone.
	for _, i := range []int{0, 7} {
		if it := put(i); it.res.status != fasthttp.StatusConflict {
			t.Errorf("pq/%d written again: status %d (%v), want 409", i, it.res.status, it.res.err)
		}
	}
	// The last sender leaves just after it answered its batch.
	waitFor(t, 5*time.Second, "the volume's queue to go", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.q) == 0
	})
}

// A volume refuses a whole put list that does not match its checksum, is
// malformed, holds a value over smallWriteMax or too many values, and
// stores none of it.
func TestPutManyRefusals(t *testing.T) {
	c := newTestClusterWith(t, 1, 1, func(c *testCluster) { c.mcfg.Secret = []byte("put-many-test-secret") })
	v := c.vols[0]
	send := func(body []byte, sum []byte) (int, string) {
		t.Helper()
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		u := "http://" + v.Addr() + "/" + ReservedPrefix + "put?b=" + base64.RawURLEncoding.EncodeToString(sum)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(c.master.vc.sec.signURL(fasthttp.MethodPost, u))
		req.SetBody(body)
		if err := c.master.vc.hc.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode(), string(resp.Body())
	}
	item := func(key string, ver uint64, size int) *putItem {
		return &putItem{key: []byte(key), version: ver, body: bytes.Repeat([]byte("x"), size)}
	}
	sumOf := func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
	ver, err := c.master.cat.nextVersion()
	if err != nil {
		t.Fatal(err)
	}
	good := appendPutList(nil, []*putItem{item("r/a", ver, 10)})
	if st, body := send(good, sumOf([]byte("other"))); st != fasthttp.StatusBadRequest || !strings.Contains(body, "checksum") {
		t.Errorf("wrong checksum: %d %q", st, body)
	}
	many := make([]*putItem, maxPutBatch+1)
	for i := range many {
		many[i] = item(fmt.Sprintf("r/many/%d", i), 1, 1)
	}
	bad := map[string][]byte{
		"too large":    appendPutList(nil, []*putItem{item("r/a", 1, 10), item("r/big", 1, smallWriteMax+1)}),
		"too many":     appendPutList(nil, many),
		"short":        good[:len(good)-1],
		"no key":       []byte("1 10\n0123456789"),
		"bad key":      appendPutList(nil, []*putItem{item("r/a", 1, 3), item("_kvdb/x\x00y", 1, 3)}),
		"bad version":  []byte("zz 1 /r/a\nx"),
		"no header":    []byte("1 1 /r/a"),
		"negative len": []byte("1 -1 /r/a\n"),
	}
	for name, body := range bad {
		if st, msg := send(body, sumOf(body)); st != fasthttp.StatusBadRequest {
			t.Errorf("%s: %d %q, want 400", name, st, msg)
		}
	}
	if k := v.store.Stats().Keys; k != 0 {
		t.Errorf("the refused lists stored %d values", k)
	}
	// The good one is stored, and its outcome line names its size and sum.
	st, body := send(good, sumOf(good))
	want := fmt.Sprintf("201 10 %x\n", xxhash.Sum64(bytes.Repeat([]byte("x"), 10)))
	if st != fasthttp.StatusOK || body != want {
		t.Errorf("good list: %d %q, want 200 %q", st, body, want)
	}
}

// Small values written through the master go through the put queues to
// every replica and read back whole; with a replica's volume down, its
// copy goes to a spare.
func TestSmallWritesThroughQueues(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() { c.put(fmt.Sprintf("small/%d", i), strings.Repeat("s", i*300)) })
	}
	wg.Wait()
	if r := c.master.puts.requests.Load(); r == 0 || c.master.puts.items.Load() != 80 {
		t.Fatalf("%d small writes in %d requests, want 80 (40 values, 2 replicas)", c.master.puts.items.Load(), r)
	}
	for i := range 40 {
		if st, got := c.get(fmt.Sprintf("small/%d", i)); st != 200 || got != strings.Repeat("s", i*300) {
			t.Fatalf("small/%d: %d, %d bytes", i, st, len(got))
		}
	}
	c.killVolume(0)
	for i := range 20 {
		k := fmt.Sprintf("after/%d", i)
		c.put(k, "v"+k)
		var rec Record
		if found, err := c.master.cat.get([]byte(k), &rec); err != nil || !found || len(rec.Replicas) != 2 {
			t.Fatalf("%s: %v %v %+v", k, found, err, rec)
		}
		if st, got := c.get(k); st != 200 || got != "v"+k {
			t.Fatalf("%s: %d %q", k, st, got)
		}
	}
}

func FuzzPutList(f *testing.F) {
	f.Add([]byte("1a2b 3 /a%2Fb\nabc"), uint64(7), []byte("k"), []byte("value"))
	f.Add([]byte("ffffffffffffffff 0 /x\n1 1 y\nz"), uint64(0), []byte("a b\nc"), []byte{})
	f.Add([]byte("1 99999999 /x\n"), uint64(1), []byte("_kvdb/mf/obj"), []byte("\n\n"))
	f.Fuzz(func(t *testing.T, body []byte, ver uint64, key, val []byte) {
		// Any body: an error, or values with valid keys and sizes within
		// the body.
		_ = parsePutList(body, func(k []byte, _ uint64, v []byte) {
			if len(k) == 0 || bytes.IndexByte(k, 0) >= 0 {
				t.Fatalf("parsed a bad key %q", k)
			}
			if len(v) > smallWriteMax {
				t.Fatalf("parsed a value of %d bytes", len(v))
			}
		})
		// Valid values round-trip, whatever bytes they hold.
		if validateStoredKey(key) != nil || len(val) > smallWriteMax {
			return
		}
		items := []*putItem{{key: key, version: ver, body: val}, {key: []byte("second"), version: ^ver, body: []byte("2")}}
		var got []putItem
		err := parsePutList(appendPutList(nil, items), func(k []byte, v uint64, b []byte) {
			got = append(got, putItem{key: bytes.Clone(k), version: v, body: b})
		})
		if err != nil || len(got) != 2 || !bytes.Equal(got[0].key, key) || got[0].version != ver || !bytes.Equal(got[0].body, val) ||
			got[1].version != ^ver || string(got[1].body) != "2" {
			t.Fatalf("round trip of %q v%x (%d bytes): %v, %d values", key, ver, len(val), err, len(got))
		}
	})
}

// TestListsToOlderVolumes: a volume of a build older than the put and
// deletion lists answers them 404 "no such admin endpoint", as during a
// rolling upgrade; the master then sends it each small write and deletion
// on its own, and the cluster's answers do not change: every write lands
// whole on both replicas, every deletion leaves no copy behind.
func TestListsToOlderVolumes(t *testing.T) {
	c := newTestCluster(t, 0, 2)
	c.addVolume(func(vc *VolumeConfig) { vc.lacks = []string{"put", "delete"} })
	c.addVolume()
	c.addVolume()
	c.waitVolumes(3)
	const n = 60
	key := func(i int) string { return fmt.Sprintf("mixed/%d", i) }
	value := func(i int) string { return strings.Repeat(string(rune('a'+i%26)), i*270) } // 0 to 15,930 bytes
	all := func(method string, want int, body func(i int) io.Reader) {
		t.Helper()
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if st, _, msg := c.do(method, key(i), body(i)); st != want {
					errs[i] = fmt.Errorf("%s %s: %d %s", method, key(i), st, msg)
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	all("PUT", 201, func(i int) io.Reader { return strings.NewReader(value(i)) })
	onOld := 0
	for i := range n {
		rec := c.record(key(i))
		if len(rec.Replicas) != 2 {
			t.Fatalf("%s: replicas %v", key(i), rec.Replicas)
		}
		for _, name := range rec.Replicas {
			j := c.volumeIndex(name)
			if j == 0 {
				onOld++
			}
			if got := readCopy(t, c.vols[j], []byte(key(i)), rec.Version); string(got) != value(i) {
				t.Fatalf("%s on %s: %d bytes, want %d", key(i), name, len(got), len(value(i)))
			}
		}
		if st, got := c.get(key(i)); st != 200 || got != value(i) {
			t.Fatalf("GET %s: %d, %d bytes", key(i), st, len(got))
		}
	}
	if onOld == 0 {
		t.Fatal("no value placed on the older volume")
	}
	if got := c.master.puts.items.Load(); got != 2*n {
		t.Fatalf("%d small writes queued, want %d", got, 2*n)
	}

	all("DELETE", 200, func(int) io.Reader { return nil })
	for i := range n {
		if k := c.blobCopies([]byte(key(i))); k != 0 {
			t.Fatalf("%s: %d copies left after its DELETE", key(i), k)
		}
	}
	// The older volume got a request per value (a deletion may come again
	// from the GC loop until its volume has synced), the others their
	// small writes in lists only. (Their DELETE counts say nothing: the GC
	// loop deletes a copy again with a request of its own.)
	for j, v := range c.vols {
		e := scrape(t, v.Addr())
		puts := e.value(t, "kvdb_request_duration_seconds_count", "method", "PUT")
		dels := e.value(t, "kvdb_request_duration_seconds_count", "method", "DELETE")
		if j == 0 && (puts != float64(onOld) || dels < float64(onOld)) {
			t.Fatalf("older volume: %v PUTs and %v DELETEs, want %d and at least %d", puts, dels, onOld, onOld)
		}
		if j > 0 && puts != 0 {
			t.Fatalf("vol%d: %v PUTs, want lists only", j+1, puts)
		}
	}
}
