package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// scrubValue is a value of n bytes that differs for every key, so that a
// value's bytes can be found in a volume's blob files.
func scrubValue(key string, n int) []byte {
	b := make([]byte, 0, n+8)
	x := xxhash.Sum64String(key)
	for len(b) < n {
		x = x*6364136223846793005 + 1442695040888963407
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b[:n]
}

// record returns key's record in the master's index.
func (c *testCluster) record(key string) Record {
	c.t.Helper()
	var rec Record
	found, err := c.master.cat.get([]byte(key), &rec)
	if err != nil || !found {
		c.t.Fatalf("record of %q: found %v, err %v", key, found, err)
	}
	return rec
}

// volumeIndex returns the index in c.vols of the volume named name.
func (c *testCluster) volumeIndex(name string) int {
	c.t.Helper()
	for i, cfg := range c.vcfgs {
		if cfg.Name == name {
			return i
		}
	}
	c.t.Fatalf("no volume named %q", name)
	return -1
}

// corruptCopy flips one byte in the middle of value in the blob file that
// holds it under volume i's data directory, as bit rot would: same length,
// same file.
func (c *testCluster) corruptCopy(i int, value []byte) {
	c.t.Helper()
	corruptValueIn(c.t, c.vcfgs[i].Dir, value)
}

// corruptValueIn flips a byte of value in the file under dir/blobs (a
// blob file) or dir/segments (values packed into the log) that holds it.
func corruptValueIn(t testing.TB, dir string, value []byte) {
	t.Helper()
	var found string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && path != dir && !strings.HasPrefix(path, filepath.Join(dir, "blobs")) &&
			!strings.HasPrefix(path, filepath.Join(dir, "segments")) {
			return filepath.SkipDir
		}
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		at := bytes.Index(b, value)
		if at < 0 {
			return nil
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		mid := at + len(value)/2
		if _, err := f.WriteAt([]byte{b[mid] ^ 0x20}, int64(mid)); err != nil {
			return err
		}
		found = path
		return nil
	})
	if err != nil || found == "" {
		t.Fatalf("corrupt a copy under %s: found %q, err %v", dir, found, err)
	}
}

// healthyReplicas counts the replicas of key's record that the volume
// serves (HEAD of its blob URL, with the record's ETag) and whose file
// passes store.Verify.
func (c *testCluster) healthyReplicas(key string) int {
	var rec Record
	if found, err := c.master.cat.get([]byte(key), &rec); err != nil || !found {
		return 0
	}
	n := 0
	for _, name := range rec.Replicas {
		i := c.volumeIndex(name)
		v := c.vols[i]
		if v == nil {
			continue
		}
		resp, err := c.client.Head(blobURL(v.Addr(), []byte(key), rec.Version))
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("ETag") != rec.ETag() {
			continue
		}
		if v.store.Verify([]byte(key), rec.Version) != nil {
			continue
		}
		n++
	}
	return n
}

// readLoop GETs key through the master (following the redirect) until
// stop is closed, and counts the answers. It records when each read that
// got a 200 with other bytes than want had started.
type readLoop struct {
	ok, notFound, other atomic.Int64
	stop                chan struct{}
	wg                  sync.WaitGroup
	mu                  sync.Mutex
	wrong               []time.Time
}

// wrongSince counts the reads with wrong bytes that started after t.
func (r *readLoop) wrongSince(t time.Time) (n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, at := range r.wrong {
		if at.After(t) {
			n++
		}
	}
	return n
}

func (c *testCluster) startReads(key string, want []byte, readers int) *readLoop {
	r := &readLoop{stop: make(chan struct{})}
	for range readers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case <-r.stop:
					return
				default:
				}
				began := time.Now()
				resp, err := c.client.Get(c.url(key))
				if err != nil {
					r.other.Add(1)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					r.other.Add(1)
				case resp.StatusCode == 200 && bytes.Equal(b, want):
					r.ok.Add(1)
				case resp.StatusCode == 200:
					r.mu.Lock()
					r.wrong = append(r.wrong, began)
					r.mu.Unlock()
				case resp.StatusCode == 404:
					r.notFound.Add(1)
				default:
					r.other.Add(1)
				}
			}
		}()
	}
	return r
}

func (r *readLoop) finish() {
	close(r.stop)
	r.wg.Wait()
}

// quarantined lists the blob files in volume i's quarantine directory.
func (c *testCluster) quarantined(i int) []string {
	ents, _ := os.ReadDir(filepath.Join(c.vcfgs[i].Dir, "quarantine"))
	var out []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".reason") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestScrubQuarantinesAndRepairs rots one byte of one copy on disk: a
// scrub pass quarantines it, reads through the master never return the
// rotten bytes once it is quarantined (before, a read redirected to that
// copy gets them: nothing checks a value while it is sent), and the
// master makes a new copy from the healthy replica, so the key has 2 good
// replicas again.
func TestScrubQuarantinesAndRepairs(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n = 20
	for i := range n {
		key := fmt.Sprintf("s%d", i)
		c.put(key, string(scrubValue(key, 64<<10)))
	}
	const key = "s7"
	want := scrubValue(key, 64<<10)
	rec := c.record(key)
	victim := c.volumeIndex(rec.Replicas[0])
	v := c.vols[victim]
	c.corruptCopy(victim, want)

	reads := c.startReads(key, want, 4)
	passes := v.scrub.passes.Load()
	v.scrubNow()
	// The new copy may land on the same volume right after: look at the
	// quarantine directory, not at the index.
	waitFor(t, 15*time.Second, "the scrub to quarantine the rotten copy", func() bool {
		return len(c.quarantined(victim)) > 0
	})
	quarantined := time.Now() // at or after the quarantine
	if q := c.quarantined(victim); len(q) != 1 {
		t.Fatalf("quarantine of %s holds %q, want one file", rec.Replicas[0], q)
	}
	waitFor(t, 20*time.Second, "2 healthy replicas of "+key, func() bool {
		return c.healthyReplicas(key) == 2
	})
	// Keep reading a little after the repair, then stop.
	base := reads.ok.Load()
	waitFor(t, 10*time.Second, "reads after the repair", func() bool { return reads.ok.Load() > base+20 })
	reads.finish()
	if w := reads.wrongSince(quarantined); w > 0 {
		t.Fatalf("%d reads started after the quarantine returned rotten bytes with 200", w)
	}
	t.Logf("reads: %d ok, %d rotten (before the quarantine), %d not found (redirected to the quarantined copy before the master dropped it), %d other",
		reads.ok.Load(), reads.wrongSince(time.Time{}), reads.notFound.Load(), reads.other.Load())
	if st, got := c.get(key); st != 200 || got != string(want) {
		t.Fatalf("GET %s after repair: status %d, %d bytes, want the value", key, st, len(got))
	}
	waitFor(t, 15*time.Second, "the scrub pass to finish", func() bool { return v.scrub.passes.Load() > passes })
	// Only the rotten copy was touched.
	for i := range n {
		k := fmt.Sprintf("s%d", i)
		if got := c.healthyReplicas(k); got != 2 {
			t.Fatalf("%s: %d healthy replicas, want 2", k, got)
		}
	}
	v.scrub.mu.Lock()
	left := len(v.scrub.lost)
	v.scrub.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d lost-copy reports still queued, want 0", left)
	}
}

// TestScrubReportWaitsForMaster finds a rotten copy while the master is
// down: the report stays queued and reaches the master once it is back.
func TestScrubReportWaitsForMaster(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const key = "lonely"
	want := scrubValue(key, 16<<10)
	c.put(key, string(want))
	rec := c.record(key)
	victim := c.volumeIndex(rec.Replicas[1])
	v := c.vols[victim]
	c.master.Kill()
	c.corruptCopy(victim, want)
	v.scrubNow()
	waitFor(t, 15*time.Second, "a lost-copy report queued", func() bool {
		v.scrub.mu.Lock()
		defer v.scrub.mu.Unlock()
		return len(v.scrub.lost) == 1
	})
	c.startMaster()
	c.waitVolumes(3)
	waitFor(t, 30*time.Second, "2 healthy replicas of "+key, func() bool {
		return c.healthyReplicas(key) == 2
	})
	waitFor(t, 10*time.Second, "the report queue to empty", func() bool {
		v.scrub.mu.Lock()
		defer v.scrub.mu.Unlock()
		return len(v.scrub.lost) == 0
	})
	if st, got := c.get(key); st != 200 || got != string(want) {
		t.Fatalf("GET %s: status %d, %d bytes, want the value", key, st, len(got))
	}
}

// TestLostReportIsChecked sends a forged lost-copy report: the volume
// still holds the version, so the master keeps it as a replica. A report
// with a bad version or volume name is refused.
func TestLostReportIsChecked(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	c.put("kept", "value")
	rec := c.record("kept")
	lost := func(query string) (int, string) {
		resp, err := c.client.Post("http://"+c.master.Addr()+"/_kvdb/lost/kept?"+query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if st, body := lost(fmt.Sprintf("v=%s&vol=%s", formatVersion(rec.Version), rec.Replicas[0])); st != 200 || body != `{"dropped":false}` {
		t.Fatalf("forged report: got %d %s, want 200 {\"dropped\":false}", st, body)
	}
	if got := c.record("kept"); !sameNames(got.Replicas, rec.Replicas) {
		t.Fatalf("replicas after a forged report: got %v, want %v", got.Replicas, rec.Replicas)
	}
	for _, q := range []string{"vol=" + rec.Replicas[0], "v=zz&vol=" + rec.Replicas[0], "v=1", "v=1&vol=a/b"} {
		if st, body := lost(q); st != http.StatusBadRequest {
			t.Errorf("lost?%s: got %d %s, want 400", q, st, body)
		}
	}
	resp, err := c.client.Get("http://" + c.master.Addr() + "/_kvdb/lost/kept?v=1&vol=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET lost: got %d, want 405", resp.StatusCode)
	}
}

// TestScrubDisabled: a negative interval starts no scrub loop.
func TestScrubDisabled(t *testing.T) {
	dir := t.TempDir()
	v, err := NewVolume(VolumeConfig{
		Addr: "127.0.0.1:0", Dir: dir, ScrubInterval: -1, Logger: testLogger(),
		Gossip: GossipConfig{Bind: "127.0.0.1:0", Cluster: "scrub-off", Profile: ProfileTest},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.store.Put([]byte("k"), 1, strings.NewReader("value"), 5); err != nil {
		t.Fatal(err)
	}
	v.scrubNow()
	// Nothing to wait for: no loop runs, so the kick stays buffered.
	select {
	case v.scrub.kick <- struct{}{}:
		t.Fatal("the kick was taken: a scrub loop is running")
	default:
	}
	if _, err := os.Stat(filepath.Join(dir, scrubStateFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("scrub state file: %v, want none", err)
	}
}

// TestScrubResumesAfterRestart: a pass stopped by Close saves its
// position, and the restarted volume resumes it at once.
func TestScrubResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := VolumeConfig{
		Name: "resume", Addr: "127.0.0.1:0", Dir: dir, Logger: testLogger(),
		ScrubRate: 64 << 10, // 64 KiB/s: the pass below takes many seconds
		Gossip:    GossipConfig{Bind: "127.0.0.1:0", Cluster: "scrub-resume", Profile: ProfileTest},
	}
	v, err := NewVolume(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		key := fmt.Sprintf("r%02d", i)
		val := scrubValue(key, 32<<10)
		if _, err := v.store.Put([]byte(key), 1, bytes.NewReader(val), int64(len(val))); err != nil {
			t.Fatal(err)
		}
	}
	// The first version is rotten: its report shows the pass got past it.
	corruptValueIn(t, dir, scrubValue("r00", 32<<10))
	v.scrubNow()
	waitFor(t, 10*time.Second, "the pass to find the first version rotten", func() bool {
		v.scrub.mu.Lock()
		defer v.scrub.mu.Unlock()
		return len(v.scrub.lost) == 1
	})
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	p := (&Volume{cfg: cfg, log: testLogger()}).loadScrubProgress()
	if p.Last == "" || !p.Finished.IsZero() {
		t.Fatalf("scrub state after a stopped pass: %+v, want a position and no finish time", p)
	}
	cfg.ScrubRate = -1
	v, err = NewVolume(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	waitFor(t, 15*time.Second, "the resumed pass to finish", func() bool { return v.scrub.passes.Load() == 1 })
	p = v.loadScrubProgress()
	if p.Last != "" || p.Finished.IsZero() {
		t.Fatalf("scrub state after the pass: %+v, want no position and a finish time", p)
	}
	if got := v.store.Stats().Keys; got != 39 {
		t.Fatalf("volume holds %d versions after the pass, want 39 (one quarantined)", got)
	}
}
