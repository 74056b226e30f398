package node

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// The tests in this file inflict one fault each on a real in-process
// cluster (real sockets, real disks): racing writers, full disks, stale
// free-space gossip, malformed requests. After each, they check the
// invariants a user relies on: a value is whole or absent, every replica
// the index names holds it, and nothing else is left on any volume.

// relValue returns size pseudo-random bytes determined by seed.
func relValue(seed uint64, size int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, size)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// relETag is the ETag kvdb gives value.
func relETag(value []byte) string { return etag(xxhash.Sum64(value)) }

// relReply is one answer: status, headers and body.
type relReply struct {
	status int
	hdr    http.Header
	body   string
}

// relSend is c.do for other goroutines: it returns the error instead of
// failing the test. GETs follow the redirect.
func (c *testCluster) relSend(method, key string, body []byte) (relReply, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.url(key), r)
	if err != nil {
		return relReply{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return relReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return relReply{resp.StatusCode, resp.Header, string(b)}, err
}

// relQueued counts the master's relQueued blob deletions and the intents of
// writes that have not finished.
func (c *testCluster) relQueued() (garbage, pending int) {
	_ = c.master.cat.garbage(func(string, []byte, uint64) bool { garbage++; return true })
	it := c.master.cat.db().NewIterator(util.BytesPrefix([]byte{pfxPending}), nil)
	for it.Next() {
		pending++
	}
	it.Release()
	return garbage, pending
}

// relWaitQuiet waits until no deletion is relQueued and no write is pending.
func relWaitQuiet(t *testing.T, c *testCluster) {
	t.Helper()
	waitFor(t, 20*time.Second, "no relQueued deletion and no pending write", func() bool {
		g, p := c.relQueued()
		return g == 0 && p == 0
	})
}

// relCheckKey checks that key is in the state the index says, on
// every volume: each replica the record names holds the recorded version,
// whole (its checksum re-read from disk, and served by the volume with the
// record's ETag and size); no volume holds any other version of key; no
// volume keeps a temp file. It returns the record, if any.
func relCheckKey(t *testing.T, c *testCluster, key string) (Record, bool) {
	t.Helper()
	var rec Record
	found, err := c.master.cat.get([]byte(key), &rec)
	if err != nil {
		t.Fatal(err)
	}
	st, hdr, _ := c.do("HEAD", key, nil)
	switch {
	case found && (st != 200 || hdr.Get("ETag") != rec.ETag()):
		t.Errorf("HEAD %s: got %d ETag %s, want 200 %s", key, st, hdr.Get("ETag"), rec.ETag())
	case !found && st != 404:
		t.Errorf("HEAD %s of a key the index lacks: got %d, want 404", key, st)
	}
	view := c.master.view.Load()
	for i, v := range c.vols {
		if v == nil {
			continue
		}
		ms, err := v.store.Versions([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		var have []uint64
		for _, m := range ms {
			have = append(have, m.Version)
		}
		var want []uint64
		if found && contains(rec.Replicas, v.Name()) {
			want = []uint64{rec.Version}
		}
		if !slices.Equal(have, want) {
			t.Errorf("%s holds versions %x of %q, want %x (record: found=%v version %x on %v)", v.Name(), have, key, want, found, rec.Version, rec.Replicas)
		}
		// A volume may still be failing a write the master has given up
		// on: its temp file goes once it notices.
		tmpDir := filepath.Join(c.vcfgs[i].Dir, "tmp")
		waitFor(t, 10*time.Second, v.Name()+" to have no temp file", func() bool {
			tmp, err := os.ReadDir(tmpDir)
			return err == nil && len(tmp) == 0
		})
	}
	if !found {
		return rec, false
	}
	for _, name := range rec.Replicas {
		vol, ok := view.vols[name]
		if !ok {
			t.Errorf("%q: replica %s is not live", key, name)
			continue
		}
		// The default harness sets no cluster secret: volumes serve
		// unsigned reads.
		resp, err := c.client.Head(blobURL(vol.HTTP, []byte(key), rec.Version))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("ETag") != rec.ETag() || resp.ContentLength != rec.Size {
			t.Errorf("HEAD %q on replica %s: got %d ETag %s length %d, want 200 %s %d", key, name, resp.StatusCode, resp.Header.Get("ETag"), resp.ContentLength, rec.ETag(), rec.Size)
		}
		for _, v := range c.vols {
			if v != nil && v.Name() == name {
				if err := v.store.Verify([]byte(key), rec.Version); err != nil {
					t.Errorf("replica %s of %q: %v", name, key, err)
				}
			}
		}
	}
	return rec, true
}

// TestRaceConcurrentPuts: 32 PUTs of different 256 KiB values race on one
// new key. Exactly one creates it (201), the others replace (200), each
// answer carries its own value's ETag; the final value is one of them,
// whole; every replica holds that version and nothing else is left.
func TestRaceConcurrentPuts(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n, size, key = 32, 256 << 10, "race/put"
	values := make([][]byte, n)
	for i := range values {
		values[i] = relValue(uint64(i+1), size)
	}
	replies, errs := c.relRace("PUT", key, values)
	created := 0
	acked := map[int]bool{}
	for i, r := range replies {
		if errs[i] != nil {
			t.Fatalf("PUT %d: %v", i, errs[i])
		}
		switch r.status {
		case 201:
			created++
		case 200:
		case 409:
			// Overtaken by a write that started later and committed
			// first: refused, it changed nothing.
			continue
		default:
			t.Errorf("PUT %d: got %d (%s), want 200, 201 or 409", i, r.status, r.body)
		}
		acked[i] = true
		if got := r.hdr.Get("ETag"); got != relETag(values[i]) {
			t.Errorf("PUT %d: got ETag %s, want its own value's %s", i, got, relETag(values[i]))
		}
	}
	if created != 1 {
		t.Errorf("got %d PUTs answered 201, want exactly 1 (the first to commit creates the key)", created)
	}
	relWaitQuiet(t, c)
	rec, found := relCheckKey(t, c, key)
	if !found {
		t.Fatal("the key is gone after concurrent PUTs")
	}
	winner := slices.IndexFunc(values, func(v []byte) bool { return relETag(v) == rec.ETag() })
	if winner < 0 {
		t.Fatalf("the record's ETag %s is none of the values written", rec.ETag())
	}
	if !acked[winner] {
		t.Fatalf("the key holds value %d, whose PUT was refused (%d)", winner, replies[winner].status)
	}
	if st, got := c.get(key); st != 200 || got != string(values[winner]) {
		t.Fatalf("GET: got %d and %d bytes, want value %d whole", st, len(got), winner)
	}
}

// relRace sends one request per value to key, all at once, and returns
// the replies in the order of values.
func (c *testCluster) relRace(method, key string, values [][]byte) ([]relReply, []error) {
	replies := make([]relReply, len(values))
	errs := make([]error, len(values))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range values {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			replies[i], errs[i] = c.relSend(method, key, values[i])
		}()
	}
	close(start)
	wg.Wait()
	return replies, errs
}

// TestRaceConcurrentCreates: 32 POSTs race to create one key. Exactly one
// gets 201 and its value is the key's; the 31 others get 409, and the blobs
// they streamed before losing are deleted.
func TestRaceConcurrentCreates(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n, size, key = 32, 64 << 10, "race/post"
	values := make([][]byte, n)
	for i := range values {
		values[i] = relValue(uint64(100+i), size)
	}
	replies, errs := c.relRace("POST", key, values)
	winner, conflicts := -1, 0
	for i, r := range replies {
		if errs[i] != nil {
			t.Fatalf("POST %d: %v", i, errs[i])
		}
		switch r.status {
		case 201:
			if winner >= 0 {
				t.Errorf("POSTs %d and %d both created the key", winner, i)
			}
			winner = i
		case 409:
			conflicts++
			if strings.TrimSpace(r.body) == "" {
				t.Errorf("POST %d: 409 without a reason", i)
			}
		default:
			t.Errorf("POST %d: got %d (%s), want 201 or 409", i, r.status, r.body)
		}
	}
	if winner < 0 || conflicts != n-1 {
		t.Fatalf("got winner %d and %d conflicts, want one 201 and %d 409s", winner, conflicts, n-1)
	}
	relWaitQuiet(t, c)
	rec, found := relCheckKey(t, c, key)
	if !found || rec.ETag() != replies[winner].hdr.Get("ETag") {
		t.Fatalf("record: found=%v ETag %s, want the winner's %s", found, rec.ETag(), replies[winner].hdr.Get("ETag"))
	}
	if st, got := c.get(key); st != 200 || got != string(values[winner]) {
		t.Fatalf("GET: got %d and %d bytes, want the winner's value whole", st, len(got))
	}
}

// TestRacePutDelete: 16 goroutines PUT and DELETE one key at random while
// 4 others read it. Every read sees a written value whole or 404; at the
// end, once deletions are done, the key holds one of the values written,
// whole, on exactly its replicas, or it is absent and no volume holds any
// of its blobs.
func TestRacePutDelete(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const writers, ops, readers, key = 16, 24, 4, "race/churn"
	var mu sync.Mutex
	written := map[string][]byte{} // by ETag
	done := make(chan struct{})
	var wg, rwg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range ops {
				if rng.IntN(2) == 0 {
					v := relValue(uint64(g<<16|i), 1+rng.IntN(64<<10))
					mu.Lock()
					written[relETag(v)] = v
					mu.Unlock()
					r, err := c.relSend("PUT", key, v)
					if err != nil || r.status != 200 && r.status != 201 && r.status != 409 {
						t.Errorf("PUT: got %d (%s) %v, want 200, 201 or 409 (overtaken)", r.status, r.body, err)
					}
					if r.status == 409 {
						// Refused: it must never be seen.
						mu.Lock()
						delete(written, relETag(v))
						mu.Unlock()
					}
					continue
				}
				r, err := c.relSend("DELETE", key, nil)
				if err != nil || r.status != 200 && r.status != 404 {
					t.Errorf("DELETE: got %d (%s) %v, want 200 or 404", r.status, r.body, err)
				}
			}
		}()
	}
	reads := 0
	for range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				r, err := c.relSend("GET", key, nil)
				if err != nil {
					t.Errorf("GET during churn: %v", err)
					return
				}
				mu.Lock()
				reads++
				v, ok := written[r.hdr.Get("ETag")]
				mu.Unlock()
				// A 404 may also come from the volume, when the version it
				// was redirected to has just been deleted or replaced; a
				// reader that kept arriving too late is told to retry.
				if r.status == 503 && r.hdr.Get("Retry-After") != "" {
					continue
				}
				if r.status != 404 && (r.status != 200 || !ok || r.body != string(v)) {
					t.Errorf("GET during churn: got %d ETag %s and %d bytes: not a written value whole", r.status, r.hdr.Get("ETag"), len(r.body))
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	rwg.Wait()
	t.Logf("%d reads during %d writes and deletes", reads, writers*ops)
	relWaitQuiet(t, c)
	rec, found := relCheckKey(t, c, key)
	st, got := c.get(key)
	switch {
	case found:
		if v, ok := written[rec.ETag()]; !ok || st != 200 || got != string(v) {
			t.Fatalf("GET: got %d and %d bytes, want the recorded value (known=%v) whole", st, len(got), ok)
		}
	case st != 404:
		t.Fatalf("GET of a deleted key: got %d, want 404", st)
	}
}

// relWaitFree waits until the master's view of every volume's free
// space is what the volume's store reports.
func relWaitFree(t *testing.T, c *testCluster) {
	t.Helper()
	waitFor(t, 10*time.Second, "free space gossiped to the master", func() bool {
		view := c.master.view.Load()
		for _, v := range c.vols {
			if m, ok := view.vols[v.Name()]; !ok || m.Free != v.store.Stats().Free {
				return false
			}
		}
		return true
	})
}

// relReplicas returns the volumes the index names for key, which must exist.
func relReplicas(t *testing.T, c *testCluster, key string) []string {
	t.Helper()
	var rec Record
	if found, err := c.master.cat.get([]byte(key), &rec); !found || err != nil {
		t.Fatalf("%s: found=%v err=%v, want a record", key, found, err)
	}
	return rec.Replicas
}

// relExpect sends one request and checks its status and that a reason
// came with an error.
func relExpect(t *testing.T, c *testCluster, want int, method, key string, body io.Reader) {
	t.Helper()
	st, _, reason := c.do(method, key, body)
	if st != want {
		t.Fatalf("%s %s: got %d (%s), want %d", method, key, st, strings.TrimSpace(reason), want)
	}
	if st >= 400 && strings.TrimSpace(reason) == "" {
		t.Errorf("%s %s: %d without a reason", method, key, st)
	}
}

// TestFullDiskSkipsFullVolumes: two of four volumes are too small for the
// values written; the master, from gossiped free space, places every value
// on the two with room, also keys the ring puts on the small ones first.
// Once those are full too, a write that fits nowhere gets 507 and leaves
// nothing: a new key stays absent, an overwritten key keeps its value.
// Reads go on, and a value small enough still goes to the volumes with room.
func TestFullDiskSkipsFullVolumes(t *testing.T) {
	c := newTestCluster(t, 0, 2)
	const small, big, size = 256 << 10, 4 << 20, 512 << 10
	for i := range 4 {
		c.addVolume(func(vc *VolumeConfig) {
			vc.Capacity = big
			if i < 2 {
				vc.Capacity = small
			}
		})
	}
	c.waitVolumes(4)
	relWaitFree(t, c)
	tooSmall := map[string]bool{"vol1": true, "vol2": true}
	view := c.master.view.Load()
	placedOnSmall := 0
	values := map[string][]byte{}
	for i := range big / size {
		key := fmt.Sprintf("room/%d", i)
		if o := view.ring.Order([]byte(key)); tooSmall[o[0]] || tooSmall[o[1]] {
			placedOnSmall++
		}
		values[key] = relValue(uint64(i+1), size)
		relExpect(t, c, 201, "PUT", key, bytes.NewReader(values[key]))
		if r := relReplicas(t, c, key); tooSmall[r[0]] || tooSmall[r[1]] {
			t.Fatalf("%s: placed on %v, want the volumes with room", key, r)
		}
	}
	if placedOnSmall == 0 {
		t.Fatal("the ring put no key on a small volume first: the test proved nothing")
	}
	// Every volume is now too full for another such value.
	relWaitFree(t, c)
	relExpect(t, c, 507, "PUT", "nowhere", bytes.NewReader(relValue(99, size)))
	relExpect(t, c, 404, "GET", "nowhere", nil)
	relExpect(t, c, 507, "PUT", "room/0", bytes.NewReader(relValue(98, size)))
	// A body of unknown length cannot be placed by size: the volumes
	// refuse it while it streams.
	relExpect(t, c, 507, "PUT", "nowhere-chunked", io.MultiReader(bytes.NewReader(relValue(97, size)), bytes.NewReader(relValue(96, size))))
	relExpect(t, c, 404, "GET", "nowhere-chunked", nil)
	for key, want := range values {
		if st, got := c.get(key); st != 200 || got != string(want) {
			t.Fatalf("GET %s with every volume full: got %d and %d bytes, want the value whole", key, st, len(got))
		}
	}
	// A value that fits the small volumes goes there.
	tiny := relValue(95, 100<<10)
	relExpect(t, c, 201, "PUT", "tiny", bytes.NewReader(tiny))
	if r := relReplicas(t, c, "tiny"); !tooSmall[r[0]] || !tooSmall[r[1]] {
		t.Fatalf("tiny: placed on %v, want the two volumes with room", r)
	}
	relWaitQuiet(t, c)
	for _, key := range []string{"room/0", "room/1", "nowhere", "nowhere-chunked", "tiny"} {
		relCheckKey(t, c, key)
	}
	for _, v := range c.vols {
		if st := v.store.Stats(); st.Bytes > st.Total {
			t.Errorf("%s holds %d bytes, over its capacity %d", v.Name(), st.Bytes, st.Total)
		}
	}
}

// TestFullDiskStaleGossip: the master's idea of the volumes' free space is
// stale (they never re-publish it), so it sends writes to full volumes and
// the volumes themselves refuse. A write with one full target still
// succeeds, on the spare volume with room; one whose every target is full
// gets 507 (not 503) and leaves nothing behind, and an overwrite keeps the
// old value.
func TestFullDiskStaleGossip(t *testing.T) {
	c := newTestCluster(t, 0, 2)
	const capacity, size = 2 << 20, 768 << 10 // two values per volume
	for range 4 {
		c.addVolume(func(vc *VolumeConfig) {
			vc.Capacity = capacity
			vc.MetaInterval = time.Hour
		})
	}
	c.waitVolumes(4)
	view := c.master.view.Load()
	// keyOn returns a new key the ring places on first, and the ring's
	// order of volumes for it.
	seq := 0
	keyOn := func(first string) (string, []string) {
		t.Helper()
		for ; seq < 100000; seq++ {
			key := fmt.Sprintf("stale/%d", seq)
			if o := view.ring.Order([]byte(key)); o[0] == first {
				seq++
				return key, o
			}
		}
		t.Fatalf("no key placed on %s first", first)
		return "", nil
	}
	values := map[string][]byte{}
	put := func(key string, want int) {
		t.Helper()
		v := relValue(uint64(seq), size)
		if want < 300 {
			values[key] = v
		}
		relExpect(t, c, want, "PUT", key, bytes.NewReader(v))
	}
	// Fill the first two volumes of one key's order.
	k1, order := keyOn("vol1")
	filled := map[string]bool{order[0]: true, order[1]: true}
	put(k1, 201)
	k2, _ := keyOn("vol1")
	put(k2, 201)
	if free := c.master.view.Load().vols[order[0]].Free; free != capacity {
		t.Fatalf("the master's view of %s's free space moved to %d: the test needs it stale", order[0], free)
	}
	// A key with one full target and a spare with room: the full volume
	// refuses, the value lands on the two volumes with room.
	var k3 string
	for _, first := range order {
		key, o := keyOn(first)
		if filled[o[0]] != filled[o[1]] && !(filled[o[2]] && filled[o[3]]) {
			k3 = key
			break
		}
	}
	if k3 == "" {
		t.Fatalf("no ring order puts one full and one free volume first: %v", order)
	}
	put(k3, 201)
	if r := relReplicas(t, c, k3); filled[r[0]] || filled[r[1]] || r[0] == r[1] {
		t.Fatalf("%s: placed on %v, want the two volumes with room", k3, r)
	}
	// Fill the two others.
	var k4 string
	for _, first := range order {
		key, o := keyOn(first)
		if !filled[o[0]] && !filled[o[1]] {
			k4 = key
			break
		}
	}
	if k4 == "" {
		t.Fatalf("no ring order puts the two volumes with room first: %v", order)
	}
	put(k4, 201)
	// Now every volume is full, and the master does not know it.
	for _, first := range order {
		key, _ := keyOn(first)
		put(key, 507)
	}
	put(k1, 507)
	for key, want := range values {
		if st, got := c.get(key); st != 200 || got != string(want) {
			t.Fatalf("GET %s: got %d and %d bytes, want the value whole", key, st, len(got))
		}
	}
	relWaitQuiet(t, c)
	for i := range seq {
		key := fmt.Sprintf("stale/%d", i)
		if _, ok := values[key]; !ok {
			if st, _ := c.get(key); st != 404 {
				t.Errorf("GET %s, never written whole: got %d, want 404", key, st)
			}
		}
		relCheckKey(t, c, key)
	}
}

// relExchange writes req on a new connection to addr, half-closes it, and
// reads every response that comes back.
func relExchange(t *testing.T, addr, req string) []*http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	// The write may fail once the server has answered and closed (a huge
	// header); the answer is still there to read.
	_, _ = io.WriteString(conn, req)
	_ = conn.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(conn)
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		out = append(out, resp)
	}
}

func relBody(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return strings.TrimSpace(string(b))
}

// TestBadRequests complements TestBadInput and TestTooLarge with requests
// that only a raw connection can send, and with the volume's side. Each
// gets its status and a one-line reason, leaves no trace (a key it names
// stays absent, or keeps its value), and the node keeps serving.
func TestBadRequests(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	c.put("existing", "old value")
	master := c.master.Addr()
	huge := strings.Repeat("x", 64<<10)
	tests := []struct {
		name string
		req  string
		// want lists the statuses accepted for each response, in order; a
		// missing response (the node closed the connection) fails.
		want [][]int
		// absent keys must not exist afterwards; kept must hold their value.
		absent []string
		kept   map[string]string
	}{
		{"raw dot-dot", "PUT /a/../b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", [][]int{{400}}, []string{"b", "a/b", "a"}, nil},
		{"raw dot-dot only", "PUT /.. HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", [][]int{{400}}, nil, nil},
		{"raw invalid UTF-8", "PUT /a\xffb HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", [][]int{{400}}, nil, nil},
		{"escaped key over 1024 bytes", "PUT /" + strings.Repeat("%41", 1025) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", [][]int{{400}}, []string{strings.Repeat("A", 1024)}, nil},
		{"empty key DELETE", "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", [][]int{{400}}, nil, nil},
		{"empty key POST", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", [][]int{{400}}, nil, nil},
		{"reserved DELETE", "DELETE /_kvdb/cluster HTTP/1.1\r\nHost: x\r\n\r\n", [][]int{{400}}, nil, nil},
		{"reserved PUT", "PUT /_kvdb/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", [][]int{{400}}, nil, nil},
		{"unknown method", "FROB /existing HTTP/1.1\r\nHost: x\r\n\r\n", [][]int{{405}}, nil, map[string]string{"existing": "old value"}},
		{"OPTIONS", "OPTIONS /existing HTTP/1.1\r\nHost: x\r\n\r\n", [][]int{{405}}, nil, nil},
		{"TRACE", "TRACE /existing HTTP/1.1\r\nHost: x\r\n\r\n", [][]int{{405}}, nil, nil},
		// The bytes after the declared length are the next request: here
		// not one, so it is refused, and the value is the declared bytes.
		{"body longer than declared", "PUT /longer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloEXTRA BYTES\r\n\r\n", [][]int{{201}, {400}}, nil, map[string]string{"longer": "hello"}},
		{"body longer than declared, overwrite", "PUT /existing HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nnewGARBAGE", [][]int{{200}, {400}}, nil, map[string]string{"existing": "new"}},
		// The client stops sending before the declared end.
		{"body shorter than declared", "PUT /shorter HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("s", 30000), [][]int{{400}}, []string{"shorter"}, nil},
		{"chunked body cut", "PUT /cut HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + strings.Repeat("c", 100), [][]int{{400}}, []string{"cut"}, nil},
		{"Content-Length and chunked", "PUT /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", [][]int{{400, 201}}, nil, nil},
		{"bare LF line endings", "GET /existing HTTP/1.1\nHost: x\n\n", [][]int{{400}}, nil, nil},
		{"bare LF after CRLF", "GET /existing HTTP/1.1\r\nHost: x\n\n", [][]int{{400}}, nil, nil},
		{"bare LF PUT", "PUT /lf HTTP/1.1\nHost: x\nContent-Length: 1\n\nv", [][]int{{400}}, []string{"lf"}, nil},
		{"huge header", "GET /existing HTTP/1.1\r\nHost: x\r\nX-Big: " + huge + "\r\n\r\n", [][]int{{431, 400}}, nil, nil},
		{"huge request line", "GET /" + huge + " HTTP/1.1\r\nHost: x\r\n\r\n", [][]int{{431, 414, 400}}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resps := relExchange(t, master, tt.req)
			if len(resps) < len(tt.want) {
				t.Fatalf("got %d responses, want %d", len(resps), len(tt.want))
			}
			for i, resp := range resps {
				t.Logf("response %d: %d %s", i, resp.StatusCode, relBody(resp))
			}
			for i, want := range tt.want {
				if !slices.Contains(want, resps[i].StatusCode) {
					t.Errorf("response %d: got %d (%s), want one of %v", i, resps[i].StatusCode, relBody(resps[i]), want)
				}
				if resps[i].StatusCode >= 400 && relBody(resps[i]) == "" {
					t.Errorf("response %d: %d without a reason", i, resps[i].StatusCode)
				}
			}
			if len(resps) > len(tt.want) {
				t.Errorf("got %d responses, want %d: the extra bytes were taken as requests", len(resps), len(tt.want))
			}
			relWaitQuiet(t, c)
			for _, key := range tt.absent {
				if st, _ := c.get(key); st != 404 {
					t.Errorf("GET %q: got %d, want 404", key, st)
				}
				relCheckKey(t, c, key)
			}
			for key, want := range tt.kept {
				if st, got := c.get(key); st != 200 || got != want {
					t.Errorf("GET %q: got %d %q, want %q", key, st, got, want)
				}
				relCheckKey(t, c, key)
			}
			// The node is still up.
			if st, _, _ := c.do("HEAD", "existing", nil); st != 200 {
				t.Fatalf("HEAD after the bad request: got %d, want 200", st)
			}
		})
	}
	// The smuggling case stored, if anything, the chunked body, never the
	// Content-Length prefix.
	if st, got := c.get("smuggle"); st != 404 && (st != 200 || got != "hello") {
		t.Errorf("GET smuggle: got %d %q, want 404 or the chunked body", st, got)
	}
}

// TestBadRequestsVolume sends a volume what only a confused or hostile
// client would: writes on its public path, malformed and unsatisfiable
// ranges (416 or the whole value, per RFC 9110), huge headers.
func TestBadRequestsVolume(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	value := strings.Repeat("0123456789", 100)
	c.put("v", value)
	c.put("empty", "")
	var rec, erec Record
	if found, err := c.master.cat.get([]byte("v"), &rec); !found || err != nil {
		t.Fatalf("v: found=%v err=%v", found, err)
	}
	if found, err := c.master.cat.get([]byte("empty"), &erec); !found || err != nil {
		t.Fatalf("empty: found=%v err=%v", found, err)
	}
	vol := c.master.view.Load().vols[rec.Replicas[0]]
	url := blobURL(vol.HTTP, []byte("v"), rec.Version)
	eurl := blobURL(vol.HTTP, []byte("empty"), erec.Version)
	tests := []struct {
		name, method, url string
		hdr               []string
		want              int
		body              string // the whole body wanted, for 200 and 206
		contentRange      string
	}{
		{"range letters", "GET", url, []string{"Range", "bytes=abc"}, 200, value, ""},
		{"range reversed", "GET", url, []string{"Range", "bytes=5-2"}, 200, value, ""},
		{"range unit", "GET", url, []string{"Range", "items=0-1"}, 200, value, ""},
		{"range empty", "GET", url, []string{"Range", "bytes="}, 200, value, ""},
		// A start past int64 is past the end: unsatisfiable (RFC 9110
		// bounds no position).
		{"range overflow", "GET", url, []string{"Range", "bytes=99999999999999999999-"}, 416, "", "bytes */1000"},
		{"range end overflow", "GET", url, []string{"Range", "bytes=0-18446744073709551616"}, 206, value, "bytes 0-999/1000"},
		{"range negative", "GET", url, []string{"Range", "bytes=--1"}, 200, value, ""},
		{"range at end", "GET", url, []string{"Range", "bytes=1000-"}, 416, "", "bytes */1000"},
		{"range suffix 0", "GET", url, []string{"Range", "bytes=-0"}, 416, "", "bytes */1000"},
		{"range last byte", "GET", url, []string{"Range", "bytes=999-5000"}, 206, value[999:], "bytes 999-999/1000"},
		{"range on empty value", "GET", eurl, []string{"Range", "bytes=0-"}, 416, "", "bytes */0"},
		{"suffix on empty value", "GET", eurl, []string{"Range", "bytes=-5"}, 416, "", "bytes */0"},
		{"HEAD range", "HEAD", url, []string{"Range", "bytes=0-1"}, 206, "", "bytes 0-1/1000"},
		{"PUT on a volume", "PUT", url, nil, 405, "", ""},
		{"DELETE on a volume", "DELETE", url, nil, 405, "", ""},
		{"PATCH on a volume", "PATCH", url, nil, 405, "", ""},
		{"GET on the internal write path", "GET", "http://" + vol.HTTP + "/_kvdb/blob/v?v=" + formatVersion(rec.Version), nil, 405, "", ""},
		{"huge header on a volume", "GET", url, []string{"X-Big", strings.Repeat("y", 64<<10)}, 431, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want && !(tt.want == 431 && resp.StatusCode == 400) {
				t.Fatalf("got %d (%s), want %d", resp.StatusCode, bytes.TrimSpace(b), tt.want)
			}
			if cr := resp.Header.Get("Content-Range"); cr != tt.contentRange {
				t.Errorf("got Content-Range %q, want %q", cr, tt.contentRange)
			}
			switch {
			case tt.want == 200 || tt.want == 206 && tt.method == "GET":
				if string(b) != tt.body {
					t.Errorf("got %d bytes, want %d", len(b), len(tt.body))
				}
			case tt.want >= 400 && tt.method != "HEAD" && len(bytes.TrimSpace(b)) == 0:
				t.Errorf("%d without a reason", resp.StatusCode)
			}
			if tt.want == 405 && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
		})
	}
	// The volume still serves, and the value is untouched.
	if st, got := c.get("v"); st != 200 || got != value {
		t.Fatalf("GET after the bad requests: got %d, %d bytes", st, len(got))
	}
	relCheckKey(t, c, "v")
}
