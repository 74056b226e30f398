package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node/client"
	"github.com/kvdb/kvdb/store"
)

// waitMasterReady waits until the master answers /_kvdb/ready with 200
// (every volume's index merged).
func (c *testCluster) waitMasterReady() {
	c.t.Helper()
	waitFor(c.t, 15*time.Second, "master ready", func() bool {
		resp, err := c.client.Get("http://" + c.master.Addr() + "/_kvdb/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// verify runs POST /_kvdb/verify and returns the report.
func (c *testCluster) verify(repair, deep bool) *client.VerifyReport {
	c.t.Helper()
	st, body := c.verifyRaw(fmt.Sprintf("repair=%d&deep=%d", b2i(repair), b2i(deep)))
	if st != 200 {
		c.t.Fatalf("verify repair=%v deep=%v: status %d: %s", repair, deep, st, body)
	}
	var rep client.VerifyReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		c.t.Fatalf("verify: %v in %s", err, body)
	}
	return &rep
}

func (c *testCluster) verifyRaw(query string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+c.master.Addr()+"/_kvdb/verify?"+query, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatalf("verify: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("verify: %v", err)
	}
	return resp.StatusCode, string(b)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// findings renders findings as sorted "key@volume" strings, for comparing.
func findings(fs []client.VerifyFinding) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, f.Key+"@"+f.Volume)
	}
	slices.Sort(out)
	return out
}

func dumpReport(rep *client.VerifyReport) string {
	b, _ := json.MarshalIndent(rep, "", "  ")
	return string(b)
}

// TestVerifyClean: a healthy cluster verifies clean, deep or not, and the
// report accounts for every key and version.
func TestVerifyClean(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n = 30
	for i := range n {
		c.put(fmt.Sprintf("v%d", i), fmt.Sprintf("value %d", i))
	}
	c.put("v0", "overwritten") // an old version queued for deletion is not extra
	c.waitMasterReady()
	for _, deep := range []bool{false, true} {
		rep := c.verify(false, deep)
		if !rep.Clean || rep.Keys != n {
			t.Fatalf("deep=%v: clean %v, keys %d, want clean with %d keys\n%s", deep, rep.Clean, rep.Keys, n, dumpReport(rep))
		}
		if len(rep.Volumes) != 3 {
			t.Fatalf("deep=%v: %d volumes, want 3", deep, len(rep.Volumes))
		}
		if deep {
			var files int64
			for _, v := range rep.Volumes {
				files += v.ScrubbedFiles
			}
			if files < 2*n {
				t.Fatalf("deep: scrubbed %d files, want at least %d", files, 2*n)
			}
		}
	}
	for _, q := range []string{"repair=2", "deep=yes"} {
		if st, body := c.verifyRaw(q); st != http.StatusBadRequest {
			t.Errorf("verify?%s: got %d %s, want 400", q, st, body)
		}
	}
	resp, err := c.client.Get("http://" + c.master.Addr() + "/_kvdb/verify")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET verify: got %d, want 405", resp.StatusCode)
	}
}

// TestVerifyFindsAndRepairs injects one fault of each kind straight into
// the volumes' stores and disks: verify reports each exactly, repair
// fixes all but the stray file (report only), and a second verify finds
// only that file.
func TestVerifyFindsAndRepairs(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n = 30
	for i := range n {
		key := fmt.Sprintf("f%d", i)
		c.put(key, string(scrubValue(key, 8<<10)))
	}
	c.waitMasterReady()
	if rep := c.verify(false, false); !rep.Clean {
		t.Fatalf("before any fault: not clean\n%s", dumpReport(rep))
	}
	vol := func(name string) *Volume { return c.vols[c.volumeIndex(name)] }

	// missing: a replica's blob is deleted behind the master's back.
	missRec := c.record("f1")
	missVol := missRec.Replicas[0]
	if err := vol(missVol).store.Delete([]byte("f1"), missRec.Version); err != nil {
		t.Fatal(err)
	}
	// extra: a version nothing references, of a key nobody wrote, and an
	// old version of a key that exists.
	strayVol := c.vcfgs[0].Name
	if _, err := vol(strayVol).store.Put([]byte("stray"), 42, strings.NewReader("nobody's"), 8); err != nil {
		t.Fatal(err)
	}
	oldRec := c.record("f2")
	oldVol := oldRec.Replicas[1]
	if _, err := vol(oldVol).store.Put([]byte("f2"), oldRec.Version-1, strings.NewReader("older"), 5); err != nil {
		t.Fatal(err)
	}
	// mismatch: a replica holds the right version with other bytes (its
	// own index agrees with them, so the file itself is sound).
	misRec := c.record("f3")
	misVol := misRec.Replicas[1]
	other := scrubValue("not f3", 8<<10)
	if err := vol(misVol).store.Delete([]byte("f3"), misRec.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := vol(misVol).store.Put([]byte("f3"), misRec.Version, bytes.NewReader(other), int64(len(other))); err != nil {
		t.Fatal(err)
	}
	// corrupt: bit rot in a replica's file (found by deep only).
	badRec := c.record("f4")
	badVol := badRec.Replicas[0]
	c.corruptCopy(c.volumeIndex(badVol), scrubValue("f4", 8<<10))
	// orphan: a stray file under blobs/.
	orphanVol := c.vcfgs[2].Name
	orphanPath := filepath.Join(c.vcfgs[2].Dir, "blobs", "stray-file")
	if err := os.WriteFile(orphanPath, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}

	wantMissing := []string{"f1@" + missVol}
	wantExtra := findings([]client.VerifyFinding{{Key: "stray", Volume: strayVol}, {Key: "f2", Volume: oldVol}})
	wantMismatch := []string{"f3@" + misVol}
	wantCorrupt := []string{"f4@" + badVol}
	check := func(rep *client.VerifyReport, deep bool) {
		t.Helper()
		if got := findings(rep.Missing); !slices.Equal(got, wantMissing) {
			t.Errorf("missing: got %v, want %v", got, wantMissing)
		}
		if got := findings(rep.Extra); !slices.Equal(got, wantExtra) {
			t.Errorf("extra: got %v, want %v", got, wantExtra)
		}
		if got := findings(rep.Mismatch); !slices.Equal(got, wantMismatch) {
			t.Errorf("mismatch: got %v, want %v", got, wantMismatch)
		}
		if len(rep.Mismatch) == 1 && (rep.Mismatch[0].Want == rep.Mismatch[0].Got || rep.Mismatch[0].Want == "") {
			t.Errorf("mismatch: want %q, got %q: want two different checksums", rep.Mismatch[0].Want, rep.Mismatch[0].Got)
		}
		wantC := []string{}
		if deep {
			wantC = wantCorrupt
		}
		if got := findings(rep.Corrupt); !slices.Equal(got, wantC) {
			t.Errorf("corrupt (deep %v): got %v, want %v", deep, got, wantC)
		}
		if len(rep.Orphans) != 1 || rep.Orphans[0].Volume != orphanVol || rep.Orphans[0].Path != orphanPath || rep.Orphans[0].Kind != "unindexed file" {
			t.Errorf("orphans: got %+v, want the stray file on %s", rep.Orphans, orphanVol)
		}
		want := client.VerifyCounts{Missing: 1, Extra: 2, Mismatch: 1, Orphans: 1}
		if deep {
			want.Corrupt = 1
		}
		if rep.Counts != want || rep.Clean || rep.UnderReplicated != 0 || len(rep.Errors) != 0 {
			t.Errorf("counts %+v (want %+v), clean %v, under-replicated %d, errors %q", rep.Counts, want, rep.Clean, rep.UnderReplicated, rep.Errors)
		}
		if t.Failed() {
			t.Fatalf("report:\n%s", dumpReport(rep))
		}
	}
	check(c.verify(false, false), false)
	check(c.verify(false, true), true)

	rep := c.verify(true, true)
	check(rep, true)
	if want := (client.VerifyCounts{Missing: 1, Extra: 2, Mismatch: 1, Corrupt: 1}); rep.Repaired == nil || *rep.Repaired != want {
		t.Fatalf("repaired: got %+v, want %+v\n%s", rep.Repaired, want, dumpReport(rep))
	}
	// The extra versions are deleted by the GC loop, in the background.
	waitFor(t, 10*time.Second, "the extra versions deleted", func() bool {
		_, err1 := vol(strayVol).store.Get([]byte("stray"), 42)
		_, err2 := vol(oldVol).store.Get([]byte("f2"), oldRec.Version-1)
		return errors.Is(err1, store.ErrNotFound) && errors.Is(err2, store.ErrNotFound)
	})
	after := c.verify(false, true)
	if after.Counts != (client.VerifyCounts{Orphans: 1}) || after.UnderReplicated != 0 || len(after.Orphans) != 1 {
		t.Fatalf("after repair: counts %+v, under-replicated %d, want only the stray file\n%s", after.Counts, after.UnderReplicated, dumpReport(after))
	}
	for i := range n {
		key := fmt.Sprintf("f%d", i)
		if got := c.healthyReplicas(key); got != 2 {
			t.Fatalf("%s: %d healthy replicas after repair, want 2", key, got)
		}
		if st, got := c.get(key); st != 200 || got != string(scrubValue(key, 8<<10)) {
			t.Fatalf("GET %s after repair: status %d, %d bytes", key, st, len(got))
		}
	}
	// The mismatching and the rotten copies were kept for inspection.
	for _, name := range []string{misVol, badVol} {
		if q := c.quarantined(c.volumeIndex(name)); len(q) == 0 {
			t.Errorf("nothing quarantined on %s", name)
		}
	}
}

// TestVerifyVolumeDown: a volume that is down leaves its keys
// under-replicated, which verify reports (and a repair does not hurry).
func TestVerifyVolumeDown(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, func(c *testCluster) { c.mcfg.RepairDelay = time.Hour })
	for i := range 10 {
		c.put(fmt.Sprintf("d%d", i), "x")
	}
	c.waitMasterReady()
	gone := c.vcfgs[0].Name
	held := 0
	for i := range 10 {
		if contains(c.record(fmt.Sprintf("d%d", i)).Replicas, gone) {
			held++
		}
	}
	c.killVolume(0)
	c.waitVolumes(2)
	rep := c.verify(true, false)
	if rep.UnderReplicated != int64(held) || rep.Clean || rep.Counts != (client.VerifyCounts{}) {
		t.Fatalf("with %s down: under-replicated %d (want %d), counts %+v, clean %v\n%s", gone, rep.UnderReplicated, held, rep.Counts, rep.Clean, dumpReport(rep))
	}
	if _, ok := rep.Volumes[gone]; ok {
		t.Fatalf("the report lists %s, which is down", gone)
	}
}

// TestVerifyWithSecretAndKeys runs the scrub and verify paths in a cluster
// with a secret (every request to a volume signed) and API keys: a volume
// reports a lost copy without a key, verify needs a read-write one.
func TestVerifyWithSecretAndKeys(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, func(c *testCluster) {
		withSecret(c)
		c.mcfg.APIKeys = []APIKey{{Token: rwToken}, {Token: roToken, ReadOnly: true}}
		c.token = rwToken
	})
	for i := range 10 {
		key := fmt.Sprintf("sk%d", i)
		c.put(key, string(scrubValue(key, 4<<10)))
	}
	c.waitMasterReady()
	// Healthy replicas, seen from the stores (reads need signed URLs).
	healthy := func(key string) int {
		var rec Record
		if found, err := c.master.cat.get([]byte(key), &rec); err != nil || !found {
			return 0
		}
		n := 0
		for _, name := range rec.Replicas {
			if c.vols[c.volumeIndex(name)].store.Verify([]byte(key), rec.Version) == nil {
				n++
			}
		}
		return n
	}
	rec := c.record("sk3")
	victim := c.volumeIndex(rec.Replicas[0])
	c.corruptCopy(victim, scrubValue("sk3", 4<<10))
	c.vols[victim].scrubNow()
	waitFor(t, 15*time.Second, "the rotten copy quarantined", func() bool { return len(c.quarantined(victim)) == 1 })
	waitFor(t, 15*time.Second, "2 healthy replicas of sk3", func() bool { return healthy("sk3") == 2 })

	if rep := c.verify(true, true); !rep.Clean {
		t.Fatalf("verify with a secret: not clean\n%s", dumpReport(rep))
	}
	for token, want := range map[string]int{"": http.StatusUnauthorized, roToken: http.StatusForbidden} {
		c.token = token
		if st, body := c.verifyRaw("repair=0"); st != want {
			t.Errorf("verify with token %q: got %d %s, want %d", token, st, body, want)
		}
	}
}

// TestVerifyUnderLoad runs verify, then verify --repair, while clients
// overwrite and delete keys: nothing under way is reported (every finding
// is confirmed against the present state) or "repaired" away, and every
// key reads back as its last write left it.
func TestVerifyUnderLoad(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	c.waitMasterReady()
	const writers, keysEach = 4, 10
	stop := make(chan struct{})
	var wg sync.WaitGroup
	final := make([]map[string]string, writers) // "" when deleted
	errs := make(chan error, writers)
	var writes atomic.Int64
	for w := range writers {
		final[w] = map[string]string{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; ; round++ {
				for k := range keysEach {
					select {
					case <-stop:
						return
					default:
					}
					key := fmt.Sprintf("load%d-%d", w, k)
					var req *http.Request
					val := fmt.Sprintf("%s round %d %s", key, round, strings.Repeat("x", 1000*(k%3)))
					if (round+k)%5 == 4 {
						req, _ = http.NewRequest(http.MethodDelete, c.url(key), nil)
						val = ""
					} else {
						req, _ = http.NewRequest(http.MethodPut, c.url(key), strings.NewReader(val))
					}
					resp, err := c.client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					resp.Body.Close()
					writes.Add(1)
					switch {
					case resp.StatusCode < 300:
						final[w][key] = val
					case req.Method == http.MethodDelete && resp.StatusCode == 404:
						final[w][key] = ""
					default:
						errs <- fmt.Errorf("%s %s: %d", req.Method, key, resp.StatusCode)
						return
					}
				}
			}
		}()
	}
	// Verify (every other time with repair) until the writers have
	// done plenty meanwhile.
	for i := 0; i < 6 || writes.Load() < 1000; i++ {
		repair := i%2 == 1
		rep := c.verify(repair, false)
		if rep.Counts != (client.VerifyCounts{}) || rep.UnderReplicated != 0 {
			close(stop)
			wg.Wait()
			t.Fatalf("verify repair=%v under load: counts %+v, under-replicated %d\n%s", repair, rep.Counts, rep.UnderReplicated, dumpReport(rep))
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d writes and deletes during the verifies", writes.Load())
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := range writers {
		for key, want := range final[w] {
			st, got := c.get(key)
			if want == "" && st != 404 || want != "" && (st != 200 || got != want) {
				t.Fatalf("GET %s: got %d %.40q, want %.40q", key, st, got, want)
			}
		}
	}
	if rep := c.verify(false, true); !rep.Clean {
		t.Fatalf("after the load: not clean\n%s", dumpReport(rep))
	}
}
