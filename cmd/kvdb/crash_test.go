package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// These tests SIGKILL kvdb processes at the worst moments and check, after
// a restart on the same directories and ports, that what was acknowledged
// is there whole, that nothing half-written is visible, and that no temp
// file or orphan blob is left on any volume.

// crashStream yields size bytes determined by seed without holding them,
// fast enough for hundreds of MB under -race: a pseudo-random block
// repeated, with every 4 KiB stamped with its offset and the seed, so no
// two streams, and no two places in one stream, hold the same bytes.
type crashStream struct {
	seed      uint64
	size, off int64
	block     []byte
}

func newCrashStream(seed uint64, size int64) *crashStream {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	block := make([]byte, 64<<10+13) // not a multiple of 4 KiB: the stamps drift over it
	_, _ = rand.NewChaCha8(s).Read(block)
	return &crashStream{seed: seed, size: size, block: block}
}

func (s *crashStream) Read(b []byte) (int, error) {
	if s.off >= s.size {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), s.size-s.off)]
	for n := 0; n < len(b); {
		n += copy(b[n:], s.block[(s.off+int64(n))%int64(len(s.block)):])
	}
	end := s.off + int64(len(b))
	for p := s.off &^ 4095; p < end; p += 4096 {
		stamp := uint64(p) ^ s.seed<<48
		for j := range int64(8) {
			if q := p + j; q >= s.off && q < end {
				b[q-s.off] = byte(stamp >> (8 * j))
			}
		}
	}
	s.off = end
	return len(b), nil
}

// crashSum is the xxhash64 of a stream: what its ETag carries.
func crashSum(seed uint64, size int64) uint64 {
	h := xxhash.New()
	_, _ = io.Copy(h, newCrashStream(seed, size))
	return h.Sum64()
}

func crashETag(sum uint64) string { return fmt.Sprintf("%q", fmt.Sprintf("%016x", sum)) }

// throttledStream is a crashStream that, once pauseAt bytes are out,
// closes reached and trickles (about 30 MB/s) until full is closed: the
// body is still flowing when the test crashes a node, and not over before.
type throttledStream struct {
	*crashStream
	pauseAt int64
	reached chan struct{}
	full    chan struct{}
	once    sync.Once
}

func (s *throttledStream) Read(b []byte) (int, error) {
	if s.off >= s.pauseAt {
		s.once.Do(func() { close(s.reached) })
		select {
		case <-s.full:
		default:
			time.Sleep(time.Millisecond)
			b = b[:min(len(b), 32<<10)]
		}
	}
	return s.crashStream.Read(b)
}

// crashKill SIGKILLs every process given, then waits for each to be gone.
func crashKill(t *testing.T, ps ...*proc) {
	t.Helper()
	for _, p := range ps {
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range ps {
		err := <-p.exited
		p.exited <- err // for the cleanup's wait
	}
}

// crashRestart starts a killed volume (or master) again with the same
// arguments, on the HTTP and gossip ports it had.
func crashRestart(t *testing.T, p *proc, startMsg string) *proc {
	t.Helper()
	args := append([]string(nil), p.cmd.Args[1:len(p.cmd.Args)-2]...) // without startProc's --log-format json
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--addr":
			args[i+1] = p.field("http")
		case "--gossip":
			args[i+1] = p.field("gossip")
		}
	}
	return startProc(t, startMsg, args...)
}

// crashDir is a node's data directory: its only absolute argument.
func crashDir(t *testing.T, p *proc) string {
	t.Helper()
	for _, a := range p.cmd.Args[1:] {
		if filepath.IsAbs(a) {
			return a
		}
	}
	t.Fatalf("no data directory in %v", p.cmd.Args)
	return ""
}

// crashFiles lists the entries of a volume's tmp directory and the versions
// of key among its blob files (named hex(sha256(key)[:16])-VERSION, see
// store/format.go), and counts all its blob files.
func crashFiles(t *testing.T, dir, key string) (tmp []string, versions []string, blobs int) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		tmp = append(tmp, e.Name())
	}
	sum := sha256.Sum256([]byte(key))
	prefix := hex.EncodeToString(sum[:16]) + "-"
	err = filepath.WalkDir(filepath.Join(dir, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		blobs++
		if v, ok := strings.CutPrefix(d.Name(), prefix); ok {
			versions = append(versions, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tmp, versions, blobs
}

// crashIndexLen is the number of (key, version) entries a volume indexes.
func crashIndexLen(t *testing.T, client *http.Client, p *proc) int {
	t.Helper()
	var page struct {
		Entries []json.RawMessage `json:"entries"`
		Next    string            `json:"next"`
	}
	resp, err := client.Get("http://" + p.field("http") + "/_kvdb/index?limit=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || page.Next != "" {
		t.Fatalf("volume index: %v (next %q)", err, page.Next)
	}
	return len(page.Entries)
}

// crashRecord asks the master for key's ETag (HEAD) and current version
// (the v= of the GET redirect); found is false on 404.
func crashRecord(t *testing.T, client *http.Client, base, key string) (etag, version string, found bool) {
	t.Helper()
	noFollow := &http.Client{
		Transport:     client.Transport,
		Timeout:       client.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := noFollow.Get(base + "/" + key)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return "", "", false
	case http.StatusFound:
	default:
		t.Fatalf("GET %s: got %d, want 302 or 404", key, resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(loc.Query().Get("v"), 16, 64)
	if err != nil {
		t.Fatalf("redirect %s: %v", loc, err)
	}
	return resp.Header.Get("ETag"), fmt.Sprintf("%016x", v), true
}

// crashPendingDeletes sums the master's queued blob deletions.
func crashPendingDeletes(t *testing.T, client *http.Client, base string) int {
	t.Helper()
	var st struct {
		Pending map[string]int `json:"pending_deletes"`
	}
	resp, err := client.Get(base + "/_kvdb/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range st.Pending {
		n += p
	}
	return n
}

// crashGetSum GETs url (following redirects) and returns the status, the
// length and the checksum of the body.
func crashGetSum(t *testing.T, client *http.Client, url string) (int, int64, uint64) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := xxhash.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v after %d bytes", url, err, n)
	}
	return resp.StatusCode, n, h.Sum64()
}

// TestCrashVolumeMidWrite SIGKILLs a volume that is receiving a 200 MB
// PUT, for a new key and for an overwrite, with a spare volume to take its
// place and without one. The PUT either succeeds on replicas that all hold
// the value (with a spare) or fails with 503 (without); after the volume
// restarts (same directory, name and ports) and the cluster settles, the
// key holds the old value whole or the new one whole, as the status said,
// or is absent; no temp file is left, and every blob file on every volume
// is a replica of the version the master's index names.
func TestCrashVolumeMidWrite(t *testing.T) {
	size := int64(200 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	// Flags by environment (see parseFlags): moves may start soon after
	// the volume is back, and repair soon after it died.
	t.Setenv("KVDB_REPAIR_DELAY", "500ms")
	t.Setenv("KVDB_REBALANCE_DELAY", "500ms")
	t.Setenv("KVDB_REBALANCE_RATE", "0")
	newSum := crashSum(2, size)
	for _, volumes := range []int{3, 2} {
		for _, overwrite := range []bool{false, true} {
			name := map[bool]string{false: "new key", true: "overwrite"}[overwrite]
			if volumes == 2 {
				name += ", no spare"
			}
			t.Run(name, func(t *testing.T) {
				crashVolumeMidWrite(t, size, newSum, volumes, overwrite)
			})
		}
	}
}

func crashVolumeMidWrite(t *testing.T, size int64, newSum uint64, volumes int, overwrite bool) {
	const key, oldSize = "crash/volume", 4 << 20
	c := startProcCluster(t, volumes, 2)
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	oldSum := crashSum(1, oldSize)
	if overwrite {
		req, _ := http.NewRequest("PUT", c.url+"/"+key, newCrashStream(1, oldSize))
		req.ContentLength = oldSize
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("PUT old: got %d", resp.StatusCode)
		}
	}

	body := &throttledStream{crashStream: newCrashStream(2, size), pauseAt: size / 5, reached: make(chan struct{}), full: make(chan struct{})}
	defer func() {
		select {
		case <-body.full:
		default:
			close(body.full)
		}
	}()
	req, _ := http.NewRequest("PUT", c.url+"/"+key, body)
	req.ContentLength = size
	type result struct {
		status int
		msg    string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, msg: strings.TrimSpace(string(b))}
	}()
	select {
	case <-body.reached:
	case r := <-done:
		t.Fatalf("the PUT ended before %d bytes were sent: %+v", body.pauseAt, r)
	case <-time.After(60 * time.Second):
		t.Fatal("the body never got going")
	}
	// Kill a volume the value is streaming into: one with a temp file.
	victim := -1
	deadline := time.Now().Add(10 * time.Second)
	for victim < 0 {
		for i, v := range c.vols {
			if tmp, _, _ := crashFiles(t, crashDir(t, v), key); len(tmp) > 0 {
				victim = i
				break
			}
		}
		if victim < 0 {
			if time.Now().After(deadline) {
				t.Fatal("no volume is receiving the value")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	crashKill(t, c.vols[victim])
	close(body.full)
	r := <-done
	t.Logf("killed vol%d %d MB into the body; the PUT ended with %d %q %v", victim+1, body.pauseAt>>20, r.status, r.msg, r.err)
	committed := false
	switch {
	case r.err != nil:
		// The master's answer was lost: either outcome is allowed, whole.
	case r.status == 200 || r.status == 201:
		committed = true
		if want := map[bool]int{false: 201, true: 200}[overwrite]; r.status != want {
			t.Errorf("PUT: got %d, want %d", r.status, want)
		}
	case r.status == 503:
	default:
		t.Fatalf("PUT: got %d (%s), want success or 503", r.status, r.msg)
	}
	if volumes == 2 && r.err == nil && r.status != 503 {
		t.Fatalf("PUT with no volume to replace the dead one: got %d, want 503", r.status)
	}

	c.vols[victim] = crashRestart(t, c.vols[victim], "volume started")
	c.waitLiveVolumes(t, volumes)

	// Settle: no deletion queued, no temp file, and the blob files of key
	// are exactly the replicas of the master's current version.
	var etag, version string
	var found bool
	var problem string
	settleStart := time.Now()
	deadline = settleStart.Add(60 * time.Second)
	for {
		problem = ""
		etag, version, found = crashRecord(t, client, c.url, key)
		if n := crashPendingDeletes(t, client, c.url); n > 0 {
			problem = fmt.Sprintf("%d deletions queued", n)
		}
		total := 0
		for i, v := range c.vols {
			tmp, versions, blobs := crashFiles(t, crashDir(t, v), key)
			total += len(versions)
			switch indexed := crashIndexLen(t, client, v); {
			case len(tmp) > 0:
				problem = fmt.Sprintf("vol%d has temp files %v", i+1, tmp)
			case blobs != indexed:
				problem = fmt.Sprintf("vol%d has %d blob files and indexes %d: orphans", i+1, blobs, indexed)
			case len(versions) > 1 || len(versions) == 1 && versions[0] != version:
				problem = fmt.Sprintf("vol%d holds versions %v of the key, the master's is %q", i+1, versions, version)
			}
		}
		if want := map[bool]int{true: 2}[found]; total != want && problem == "" {
			problem = fmt.Sprintf("%d blob files of the key, want %d", total, want)
		}
		if problem == "" {
			t.Logf("settled %v after the restart: found=%v version %s", time.Since(settleStart).Round(time.Millisecond), found, version)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster did not settle: %s", problem)
		}
		time.Sleep(100 * time.Millisecond)
	}

	newTag, oldTag := crashETag(newSum), crashETag(oldSum)
	switch {
	case committed && etag != newTag:
		t.Fatalf("after an acknowledged PUT: ETag %s (found %v), want the new value's %s", etag, found, newTag)
	case !committed && r.err == nil && overwrite && etag != oldTag:
		t.Fatalf("after a failed overwrite: ETag %s (found %v), want the old value's %s", etag, found, oldTag)
	case !committed && r.err == nil && !overwrite && found:
		t.Fatalf("after a failed PUT of a new key: the key exists (ETag %s)", etag)
	case found && etag != newTag && etag != oldTag:
		t.Fatalf("ETag %s is neither the old value's nor the new one's", etag)
	}
	if !found {
		if st, _, _ := crashGetSum(t, client, c.url+"/"+key); st != 404 {
			t.Fatalf("GET: got %d, want 404", st)
		}
		return
	}
	wantSize, wantSum := size, newSum
	if etag == oldTag {
		wantSize, wantSum = oldSize, oldSum
	}
	if st, n, sum := crashGetSum(t, client, c.url+"/"+key); st != 200 || n != wantSize || sum != wantSum {
		t.Fatalf("GET: got %d, %d bytes, checksum %x; want %d bytes, %x", st, n, sum, wantSize, wantSum)
	}
	// Every replica serves the value whole, straight from its disk.
	v, _ := strconv.ParseUint(version, 16, 64)
	for i, p := range c.vols {
		if _, versions, _ := crashFiles(t, crashDir(t, p), key); len(versions) == 1 {
			u := fmt.Sprintf("http://%s/%s?v=%x", p.field("http"), key, v)
			if st, n, sum := crashGetSum(t, client, u); st != 200 || n != wantSize || sum != wantSum {
				t.Errorf("replica on vol%d: got %d, %d bytes, checksum %x", i+1, st, n, sum)
			}
		}
	}
}

// TestCrashAfterAck writes 50 values of assorted sizes, SIGKILLs the whole
// cluster at once, and restarts it on the same directories and ports:
// every acknowledged value reads back whole.
func TestCrashAfterAck(t *testing.T) {
	c := startProcCluster(t, 3, 2)
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{}}
	type value struct {
		key  string
		size int64
		sum  uint64
	}
	var values []value
	for i := range 50 {
		var size int64
		switch {
		case i < 8:
			size = 0
		case i < 28:
			size = 1 << 10
		case i < 46:
			size = 1 << 20
		default:
			size = 8 << 20
		}
		values = append(values, value{fmt.Sprintf("ack/%02d", i), size, crashSum(uint64(100+i), size)})
	}
	var wg sync.WaitGroup
	work := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				v := values[i]
				req, _ := http.NewRequest("PUT", c.url+"/"+v.key, newCrashStream(uint64(100+i), v.size))
				req.ContentLength = v.size
				if v.size == 0 {
					req.Body = http.NoBody
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("PUT %s: %v", v.key, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 201 || resp.Header.Get("ETag") != crashETag(v.sum) {
					t.Errorf("PUT %s: got %d ETag %s, want 201 %s", v.key, resp.StatusCode, resp.Header.Get("ETag"), crashETag(v.sum))
				}
			}
		}()
	}
	for i := range values {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	crashKill(t, append([]*proc{c.master}, c.vols...)...)
	client.CloseIdleConnections()
	c.restartMaster(t)
	for i, v := range c.vols {
		c.vols[i] = crashRestart(t, v, "volume started")
	}
	c.waitLiveVolumes(t, 3)
	for _, v := range values {
		st, n, sum := crashGetSum(t, client, c.url+"/"+v.key)
		if st != 200 || n != v.size || sum != v.sum {
			t.Errorf("GET %s after the crash: got %d, %d bytes, checksum %x; want %d bytes, %x", v.key, st, n, sum, v.size, v.sum)
		}
	}
}
