package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Tests of packed values: values of at most SmallValueMax bytes, appended
// to the log of segments (segment.go, log.go, compact.go).

// packedCfg packs values up to 4 KiB into 1 MiB segments, and leaves
// compaction to the test.
func packedCfg(dir string) Config {
	return Config{Dir: dir, SmallValueMax: 4 << 10, SegmentSize: 1 << 20, CompactRate: -1}
}

func value(seed, n int) []byte {
	b := make([]byte, n)
	newGen(int64(n), uint64(seed)*2+1).Read(b)
	return b
}

func segFiles(t testing.TB, s *Store) []string {
	t.Helper()
	return filesUnder(t, s.segsDir)
}

func TestPackedPutGetOpen(t *testing.T) {
	s := openStore(t, packedCfg(t.TempDir()))
	tests := []struct {
		name     string
		size     int
		declared bool
		packed   bool
	}{
		{"empty", 0, true, true},
		{"one byte", 1, true, true},
		{"1 KiB", 1 << 10, true, true},
		{"at the threshold", 4 << 10, true, true},
		{"one past", 4<<10 + 1, true, false},
		{"chunked small", 1000, false, true},
		{"chunked at the threshold", 4 << 10, false, true},
		{"chunked past", 4<<10 + 1, false, false},
		{"chunked large", 100 << 10, false, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, v := []byte("k/"+tt.name), uint64(i+1)
			val := value(i, tt.size)
			size := int64(-1)
			if tt.declared {
				size = int64(len(val))
			}
			m, err := s.Put(key, v, bytes.NewReader(val), size)
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if m.Size != int64(len(val)) {
				t.Errorf("Put: size %d, want %d", m.Size, len(val))
			}
			_, ferr := os.Stat(s.blobPath(key, v))
			if gotFile := ferr == nil; gotFile == tt.packed {
				t.Errorf("blob file exists: %v, want %v", gotFile, !tt.packed)
			}
			f, om, err := s.OpenBlob(key, v)
			if err != nil {
				t.Fatalf("OpenBlob: %v", err)
			}
			defer f.Close()
			if !(om.ModTime.Equal(m.ModTime) && om.Size == m.Size && om.Checksum == m.Checksum && om.Version == m.Version) {
				t.Errorf("OpenBlob meta %+v, Put said %+v", om, m)
			}
			pos, _ := f.Seek(0, io.SeekCurrent)
			if tt.packed && (pos <= segHeaderLen || filepath.Dir(f.Name()) != s.segsDir) {
				t.Errorf("packed value opened as %s at %d, want inside a segment", f.Name(), pos)
			}
			got := make([]byte, m.Size)
			if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, val) {
				t.Errorf("read back %d bytes (%v), want the value", len(got), err)
			}
			// A range: seek relative to where OpenBlob left the file.
			if m.Size > 10 {
				f2, _, err := s.OpenBlob(key, v)
				if err != nil {
					t.Fatal(err)
				}
				defer f2.Close()
				if _, err := f2.Seek(7, io.SeekCurrent); err != nil {
					t.Fatal(err)
				}
				part := make([]byte, 3)
				if _, err := io.ReadFull(f2, part); err != nil || !bytes.Equal(part, val[7:10]) {
					t.Errorf("bytes 7-9: got %x (%v), want %x", part, err, val[7:10])
				}
			}
			if err := s.Verify(key, v); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if _, err := s.Put(key, v, bytes.NewReader(val), size); !errors.Is(err, ErrExists) {
				t.Errorf("second Put: got %v, want ErrExists", err)
			}
		})
	}
	if n := len(filesUnder(t, s.tmpDir)); n != 0 {
		t.Errorf("tmp/: %d files left", n)
	}
}

// Values over 64 KiB are packed too, up to the default SmallValueMax,
// staged in at most bigStaged large buffers at once: past that, and for a
// body of unknown length over 64 KiB, a value gets a blob file. Commits
// of large values roll segments, and a reopen replays them.
func TestPackedLargeValues(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentSize: 4 << 20, CompactRate: -1}
	s := openStore(t, cfg)
	want := map[string][]byte{}
	put := func(key string, v []byte, size int64, packed bool) {
		t.Helper()
		if _, err := s.Put([]byte(key), 1, bytes.NewReader(v), size); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
		want[key] = v
		_, err := os.Stat(s.blobPath([]byte(key), 1))
		if gotFile := err == nil; gotFile == packed {
			t.Errorf("%s (%d bytes, declared %d): blob file %v, want %v", key, len(v), size, gotFile, !packed)
		}
	}
	put("at the default", value(1, DefaultSmallValueMax), DefaultSmallValueMax, true)
	put("one past", value(2, DefaultSmallValueMax+1), DefaultSmallValueMax+1, false)
	put("chunked 64 KiB", value(3, stagedSmall), -1, true)
	put("chunked past 64 KiB", value(4, stagedSmall+1), -1, false)

	// Every large buffer taken: the next large value streams to a file;
	// one given back: it is packed again. Small values are not held up.
	var release []func()
	for range bigStaged {
		sb, rel := s.stageBuf(100 << 10)
		if sb == nil {
			t.Fatalf("stageBuf: no buffer with %d taken", len(release))
		}
		release = append(release, rel)
	}
	put("budget spent", value(5, 200<<10), 200<<10, false)
	put("small while spent", value(6, 1000), 1000, true)
	release[0]()
	put("budget back", value(7, 200<<10), 200<<10, true)
	for _, rel := range release[1:] {
		rel()
	}
	if n := s.bigInUse.Load(); n != 0 {
		t.Fatalf("bigInUse %d after every buffer came back", n)
	}

	// Concurrent writers of values across the range, more than the
	// budget: all whole, whichever way each was stored.
	maps.Copy(want, putConcurrently(t, s, 2*bigStaged, 4*bigStaged, "w/%03d", func(i int) int {
		return i * 65521 % (DefaultSmallValueMax + 1)
	}))
	if n := s.bigInUse.Load(); n != 0 {
		t.Errorf("bigInUse %d after the writers", n)
	}
	if n := len(segFiles(t, s)); n < 4 {
		t.Errorf("%d segments for tens of MiB of packed values in 4 MiB segments", n)
	}
	checkHolds(t, s, want)

	// Commits lost from the index, as in a crash: Open replays them.
	s.w.skipIndex.Store(true)
	for i := range 6 {
		k := fmt.Sprintf("lost/%d", i)
		v := value(100+i, 300<<10+i)
		mustPut(t, s, k, 1, v)
		want[k] = v
	}
	s.Close()
	var log syncBuffer
	cfg.Logger = testLogger(&log)
	s = openStore(t, cfg)
	if !strings.Contains(log.String(), "replayed") {
		t.Errorf("no replay after lost index writes:\n%s", log.String())
	}
	checkHolds(t, s, want)
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, s, want)
}

func TestPackedSizeMismatch(t *testing.T) {
	s := openStore(t, packedCfg(t.TempDir()))
	for _, tt := range []struct {
		body     int
		declared int64
	}{{10, 11}, {12, 11}, {4 << 10, 100}} {
		_, err := s.Put([]byte("k"), 1, bytes.NewReader(make([]byte, tt.body)), tt.declared)
		if !errors.Is(err, ErrSizeMismatch) {
			t.Errorf("body %d, declared %d: got %v, want ErrSizeMismatch", tt.body, tt.declared, err)
		}
		assertInvisible(t, s, "k", 1)
	}
	if _, err := s.Put([]byte("k"), 1, &errReader{n: 100, err: errors.New("boom")}, 200); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("reader error: got %v", err)
	}
	assertInvisible(t, s, "k", 1)
}

func TestPackedDeleteAndReput(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, packedCfg(dir))
	mustPut(t, s, "k", 1, []byte("one"))
	mustPut(t, s, "k", 2, []byte("two"))
	if err := s.Delete([]byte("k"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("k"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	if _, _, err := s.OpenBlob([]byte("k"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBlob after Delete: %v", err)
	}
	if err := s.Delete([]byte("k"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v", err)
	}
	if st := s.Stats(); st.Keys != 1 || st.Bytes != 3 {
		t.Errorf("Stats: %+v, want 1 key of 3 bytes", st)
	}
	// A version deleted may be written again (a repair copying it back).
	mustPut(t, s, "k", 1, []byte("uno"))
	if got, _ := readValue(t, s, "k", 1); string(got) != "uno" {
		t.Errorf("after re-put: got %q", got)
	}
	s.Close()
	// The tombstone must not hide the newer put after a rebuild.
	s = openStore(t, packedCfg(dir))
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	if got, _ := readValue(t, s, "k", 1); string(got) != "uno" {
		t.Errorf("after rebuild: got %q, want %q", got, "uno")
	}
	if st := s.Stats(); st.Keys != 2 || st.Bytes != 6 {
		t.Errorf("Stats after rebuild: %+v, want 2 keys of 6 bytes", st)
	}
}

// fillPacked writes n packed values k/<i> v1 of 1..3 KiB and returns them.
func fillPacked(t testing.TB, s *Store, n int) map[string][]byte {
	t.Helper()
	return putConcurrently(t, s, 8, n, "k/%05d", func(i int) int { return 1024 + (i*37)%2048 })
}

// putConcurrently writes n values v1, the i-th of size(i) bytes under the
// key fmt.Sprintf(keyFormat, i), from the given number of writers at
// once, and returns those written.
func putConcurrently(t testing.TB, s *Store, writers, n int, keyFormat string, size func(i int) int) map[string][]byte {
	t.Helper()
	vals := make(map[string][]byte, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				k := fmt.Sprintf(keyFormat, i)
				v := value(i, size(i))
				if _, err := s.Put([]byte(k), 1, bytes.NewReader(v), int64(len(v))); err != nil {
					t.Errorf("Put %s: %v", k, err)
					return
				}
				mu.Lock()
				vals[k] = v
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return vals
}

// checkHolds checks that s holds exactly the values in want, each whole.
// deletePacked deletes the keys k/NNNNN that fillPacked wrote whose
// number i has del(i), from s and from vals.
func deletePacked(t testing.TB, s *Store, vals map[string][]byte, del func(i int) bool) {
	t.Helper()
	for i := range len(vals) {
		k := fmt.Sprintf("k/%05d", i)
		if _, ok := vals[k]; !ok || !del(i) {
			continue
		}
		if err := s.Delete([]byte(k), 1); err != nil {
			t.Fatal(err)
		}
		delete(vals, k)
	}
}

func checkHolds(t testing.TB, s *Store, want map[string][]byte) {
	t.Helper()
	var got []string
	if err := s.Iterate(nil, func(m Meta) bool { got = append(got, string(m.Key)); return true }); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Fatalf("held %d keys, want %d; first differences: %v", len(got), len(keys), firstDiff(got, keys))
	}
	for k, v := range want {
		if b, _ := readValue(t, s, k, 1); !bytes.Equal(b, v) {
			t.Errorf("%s: value differs", k)
		}
		if err := s.Verify([]byte(k), 1); err != nil {
			t.Errorf("Verify %s: %v", k, err)
		}
	}
	var n int64
	for _, v := range want {
		n += int64(len(v))
	}
	if st := s.Stats(); st.Keys != int64(len(want)) || st.Bytes != n {
		t.Errorf("Stats: %+v, want %d keys of %d bytes", st, len(want), n)
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("at %d: %q vs %q", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d vs %d", len(a), len(b))
}

func TestPackedReopenAndRebuild(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, packedCfg(dir))
	vals := fillPacked(t, s, 1500) // ~3 MiB: several segments
	for i := 0; i < 1500; i += 3 {
		k := fmt.Sprintf("k/%05d", i)
		if err := s.Delete([]byte(k), 1); err != nil {
			t.Fatal(err)
		}
		delete(vals, k)
	}
	if n := len(segFiles(t, s)); n < 3 {
		t.Errorf("%d segment files, want several", n)
	}
	if n := len(filesUnder(t, s.blobsDir)); n != 0 {
		t.Errorf("%d blob files, want none", n)
	}
	checkHolds(t, s, vals)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	s = openStore(t, Config{Dir: dir, SmallValueMax: 4 << 10, SegmentSize: 1 << 20, CompactRate: -1, Logger: testLogger(&log)})
	if strings.Contains(log.String(), "rebuild") {
		t.Errorf("reopen rebuilt the index:\n%s", log.String())
	}
	checkHolds(t, s, vals)
	// Without its index, the store finds the same values in its segments:
	// the deleted ones stay deleted.
	s.Close()
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Config{Dir: dir, SmallValueMax: 4 << 10, SegmentSize: 1 << 20, CompactRate: -1, Logger: testLogger(&log)})
	if !strings.Contains(log.String(), "rebuilding") && !strings.Contains(log.String(), "replayed") {
		t.Errorf("no rebuild or replay after the index was lost:\n%s", log.String())
	}
	checkHolds(t, s, vals)
	mustPut(t, s, "after", 1, []byte("x")) // LSNs go on above the old ones
	if o := collectOrphans(t, s); len(o) != 0 {
		t.Errorf("Orphans: %s", fmtOrphans(o))
	}
}

// TestReplay loses the index writes of commits, as a crash between a
// commit's fdatasync and its (unsynced) index write would: Open replays
// the log from the checkpoint and finds the puts and deletes.
func TestReplay(t *testing.T) {
	dir := t.TempDir()
	cfg := packedCfg(dir)
	cfg.SmallValueMax = 64 << 10 // some file values too
	s := openStore(t, cfg)
	mustPut(t, s, "before", 1, []byte("kept"))
	mustPut(t, s, "gone", 1, []byte("deleted after the checkpoint"))
	mustPut(t, s, "file", 1, value(3, 100<<10))
	s.w.skipIndex.Store(true)
	want := map[string][]byte{"before": []byte("kept")}
	for i := range 300 {
		k := fmt.Sprintf("lost/%d", i)
		v := value(i, 100+i*10)
		mustPut(t, s, k, 1, v)
		want[k] = v
	}
	for _, k := range []string{"gone", "file"} {
		if err := s.Delete([]byte(k), 1); err != nil {
			t.Fatal(err)
		}
		delete(want, k)
	}
	s.Close()
	var log syncBuffer
	cfg.Logger = testLogger(&log)
	s = openStore(t, cfg)
	if !strings.Contains(log.String(), "replayed") || strings.Contains(log.String(), "rebuild") {
		t.Errorf("log:\n%s", log.String())
	}
	checkHolds(t, s, want)
	if _, err := os.Stat(s.blobPath([]byte("file"), 1)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blob file deleted before the crash: %v", err)
	}
	// The replay moved the checkpoint: a second Open replays nothing.
	s.Close()
	log = syncBuffer{}
	s = openStore(t, cfg)
	if strings.Contains(log.String(), "replayed") {
		t.Errorf("second open replayed again:\n%s", log.String())
	}
	checkHolds(t, s, want)
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: 4 << 10, CompactRate: -1})
	const writers, each = 16, 16
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.Put(fmt.Appendf(nil, "w%d/%d", w, i), 1, bytes.NewReader(make([]byte, 1024)), 1024); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	n := s.syncs.Load()
	t.Logf("%d puts from %d writers took %d log fsyncs", writers*each, writers, n)
	if n >= writers*each {
		t.Errorf("%d fsyncs for %d puts: commits are not shared", n, writers*each)
	}
}

func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, packedCfg(dir))
	vals := fillPacked(t, s, 2000)
	before := segFiles(t, s)
	// A reader holding a value of an old segment open keeps reading it
	// after compaction removes the segment.
	f, m, err := s.OpenBlob([]byte("k/00001"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deletePacked(t, s, vals, func(i int) bool { return i%10 != 1 })
	if err := s.compact(t.Context(), nil); err != nil {
		t.Fatalf("compact: %v", err)
	}
	after := segFiles(t, s)
	if len(after) >= len(before) {
		t.Errorf("segments: %d before compaction, %d after", len(before), len(after))
	}
	for _, name := range before[:len(before)-1] { // all but the active one
		if slices.Contains(after, name) {
			t.Errorf("segment %s survived compaction", name)
		}
	}
	got := make([]byte, m.Size)
	if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, vals["k/00001"]) {
		t.Errorf("reader open across compaction: %v, value differs: %v", err, !bytes.Equal(got, vals["k/00001"]))
	}
	checkHolds(t, s, vals)
	if o := collectOrphans(t, s); len(o) != 0 {
		t.Errorf("Orphans after compaction: %s", fmtOrphans(o))
	}
	if got, st, err := scrub(t, s, t.Context(), ScrubConfig{}); err != nil || len(got) != 0 || st.Files != int64(len(vals)) {
		t.Errorf("Scrub after compaction: %v, %+v, %v", got, st, err)
	}
	// More deletes, a second generation, then a rebuild: tombstones
	// carried by compaction keep the deleted values deleted.
	for k := range vals {
		if k[len(k)-1] == '1' {
			if err := s.Delete([]byte(k), 1); err != nil {
				t.Fatal(err)
			}
			delete(vals, k)
		}
	}
	mustPut(t, s, "k/new", 1, value(7, 100))
	vals["k/new"] = value(7, 100)
	if err := s.compact(t.Context(), nil); err != nil {
		t.Fatalf("compact: %v", err)
	}
	checkHolds(t, s, vals)
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, s, vals)
	s.Close()
	s = openStore(t, packedCfg(dir))
	checkHolds(t, s, vals)
	// Everything deleted: compaction leaves only the active segment.
	for k := range vals {
		if err := s.Delete([]byte(k), 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.compact(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, s, nil)
	t.Logf("segments: %d before, %d after the first compaction, %d at the end", len(before), len(after), len(segFiles(t, s)))
}

// TestIncompleteCompactedSegment: a compacted segment without its footer
// is removed at Open when nothing points into it (a compaction the process
// died in), and kept when the index uses it (the footer rotted).
func TestIncompleteCompactedSegment(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, packedCfg(dir))
	vals := fillPacked(t, s, 1500)
	for i := range 1500 {
		if i%5 != 0 {
			k := fmt.Sprintf("k/%05d", i)
			if err := s.Delete([]byte(k), 1); err != nil {
				t.Fatal(err)
			}
			delete(vals, k)
		}
	}
	if err := s.compact(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	var out uint64
	s.segs.mu.Lock()
	for seq, g := range s.segs.m {
		if g.kind == segKindCompact {
			out = seq
		}
	}
	next := s.segs.next
	s.segs.mu.Unlock()
	if out == 0 {
		t.Fatal("no compacted segment")
	}
	s.Close()
	// A copy under a new number, cut short: an unfinished compaction.
	b, err := os.ReadFile(s.segPath(out))
	if err != nil {
		t.Fatal(err)
	}
	cut := b[:len(b)/2]
	copy(cut[16:24], binary.BigEndian.AppendUint64(nil, next)) // the header names its file
	binary.BigEndian.PutUint32(cut[12:], crc32.Update(crc32.Checksum(cut[:12], castagnoli), castagnoli, cut[16:24]))
	os.WriteFile(s.segPath(next), cut, 0o644)
	// The footer of the one in use rots.
	mutateFile(t, s.segPath(out), func(b []byte) []byte { b[len(b)-1] ^= 1; return b })

	var log syncBuffer
	cfg := packedCfg(dir)
	cfg.Logger = testLogger(&log)
	s = openStore(t, cfg)
	if _, err := os.Stat(s.segPath(next)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unfinished compacted segment after Open: %v", err)
	}
	if _, err := os.Stat(s.segPath(out)); err != nil {
		t.Errorf("compacted segment in use after Open: %v", err)
	}
	if !strings.Contains(log.String(), "lost its footer") {
		t.Errorf("log:\n%s", log.String())
	}
	checkHolds(t, s, vals)
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, s, vals)
}

func TestCompactionRacesDeletes(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, packedCfg(dir))
	vals := fillPacked(t, s, 2000)
	deletePacked(t, s, vals, func(i int) bool { return i%4 != 0 })
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if err := s.compact(ctx, nil); err != nil && ctx.Err() == nil {
				t.Errorf("compact: %v", err)
				return
			}
		}
	})
	for w := range 4 {
		wg.Go(func() {
			for i := w * 4; i < 2000; i += 16 {
				k := fmt.Sprintf("k/%05d", i)
				if err := s.Delete([]byte(k), 1); err != nil {
					t.Errorf("Delete %s: %v", k, err)
					return
				}
				mu.Lock()
				delete(vals, k)
				mu.Unlock()
				nk := fmt.Sprintf("n/%05d", i)
				v := value(i+5000, 500)
				if _, err := s.Put([]byte(nk), 1, bytes.NewReader(v), 500); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				mu.Lock()
				vals[nk] = v
				mu.Unlock()
			}
		})
	}
	for w := range 2 { // readers
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i = (i + 2) % 2000 {
				f, _, err := s.OpenBlob(fmt.Appendf(nil, "k/%05d", i), 1)
				if err == nil {
					f.Close()
				} else if !errors.Is(err, ErrNotFound) {
					t.Errorf("OpenBlob: %v", err)
					return
				}
			}
		})
	}
	for range 30 {
		if o := collectOrphans(t, s); len(o) != 0 {
			t.Errorf("Orphans during compaction: %s", fmtOrphans(o))
			break
		}
		if got, _, err := scrub(t, s, t.Context(), ScrubConfig{}); err != nil || len(got) != 0 {
			t.Errorf("Scrub during compaction: %v, %v", got, err)
			break
		}
	}
	cancel()
	wg.Wait()
	if err := s.compact(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, s, vals)
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, s, vals)
}

func TestPackedScrubQuarantine(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, packedCfg(dir))
	good := value(1, 2000)
	bad := value(2, 2000)
	mustPut(t, s, "good", 1, good)
	mustPut(t, s, "bad", 1, bad)
	// Bit rot in the middle of one value, inside its segment.
	seg := filepath.Join(s.segsDir, segFiles(t, s)[0])
	mutateFile(t, seg, func(b []byte) []byte {
		i := bytes.Index(b, bad)
		b[i+1000] ^= 0x20
		return b
	})
	if err := s.Verify([]byte("bad"), 1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Verify of the rotten value: got %v, want ErrCorrupt", err)
	}
	got, st, err := scrub(t, s, t.Context(), ScrubConfig{})
	if err != nil || len(got) != 1 || got[0].key != "bad" || !errors.Is(got[0].err, ErrCorrupt) || st.Files != 2 {
		t.Fatalf("Scrub: %v, %+v, %v; want bad reported", got, st, err)
	}
	if err := s.Quarantine([]byte("bad"), 1, "rot"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("bad"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Quarantine: %v", err)
	}
	// The quarantined copy is a blob file with its trailer.
	var copyPath string
	for _, n := range filesUnder(t, s.quarantineDir) {
		if !strings.HasSuffix(n, ".reason") {
			copyPath = filepath.Join(s.quarantineDir, n)
		}
	}
	var tb [maxTrailerLen]byte
	tr, err := readTrailer(copyPath, &tb)
	if err != nil || string(tr.key) != "bad" || tr.size != 2000 {
		t.Fatalf("quarantined copy %s: %+v, %v", copyPath, tr, err)
	}
	// Rebuild does not bring it back (the tombstone) ...
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("bad"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Rebuild: %v", err)
	}
	checkHolds(t, s, map[string][]byte{"good": good})
	// ... but moving the copy into blobs/ restores it (rotten, as it was).
	name := blobName([]byte("bad"), 1)
	dst := filepath.Join(s.blobsDir, blobRel(name))
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.Rename(copyPath, dst); err != nil {
		t.Fatal(err)
	}
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify([]byte("bad"), 1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("restored copy: Verify got %v, want ErrCorrupt (the rot came along)", err)
	}
}

func TestPackedOrphans(t *testing.T) {
	s := openStore(t, packedCfg(t.TempDir()))
	mustPut(t, s, "a", 1, []byte("aaa"))
	mustPut(t, s, "b", 1, []byte("bbb"))
	// An index entry lost (as if the index lost a write): its record is an
	// unindexed packed value.
	if err := s.idx.delete(indexKey([]byte("b"), 1)); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(s.segsDir, "junk")
	os.WriteFile(stray, []byte("x"), 0o644)
	got := collectOrphans(t, s)
	var keys []string
	for _, o := range got {
		keys = append(keys, orphanKey(o))
	}
	seg := s.segPath(1)
	want := []string{
		fmt.Sprintf("unindexed file %s \"\" v0 err=true", stray),
		fmt.Sprintf("unindexed file %s@%d \"b\" v1 err=false", seg, segHeaderLen+recLen(1, 3)),
	}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("Orphans: got\n%s\nwant\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
	// Rebuild indexes it again.
	os.Remove(stray)
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	if got, _ := readValue(t, s, "b", 1); string(got) != "bbb" {
		t.Errorf("after Rebuild: %q", got)
	}
	// A missing segment: every value in it is a MissingFile.
	s.Close()
	os.Rename(seg, seg+".away")
	s = openStore(t, packedCfg(filepath.Dir(s.segsDir)))
	got = collectOrphans(t, s)
	if len(got) != 3 || got[0].Kind != MissingFile || got[0].Path != seg || got[1].Kind != MissingFile {
		t.Errorf("Orphans with the segment gone: %s", fmtOrphans(got))
	}
	if _, _, err := s.OpenBlob([]byte("a"), 1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("OpenBlob with the segment gone: %v, want ErrCorrupt", err)
	}
}

func TestDeleteThenPutBeforeUnlink(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1, CompactRate: -1})
	s.bg.stop() // keep the unlink queued
	mustPut(t, s, "k", 1, []byte("old"))
	if err := s.Delete([]byte("k"), 1); err != nil {
		t.Fatal(err)
	}
	if o := collectOrphans(t, s); len(o) != 0 {
		t.Errorf("a file waiting for removal is reported: %s", fmtOrphans(o))
	}
	mustPut(t, s, "k", 1, []byte("new"))
	s.bg.removeQueued()
	if got, _ := readValue(t, s, "k", 1); string(got) != "new" {
		t.Errorf("after the queued removal: %q, want the new file kept", got)
	}
	if err := s.Delete([]byte("k"), 1); err != nil {
		t.Fatal(err)
	}
	s.bg.removeQueued()
	if _, err := os.Stat(s.blobPath([]byte("k"), 1)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("file after the queued removal: %v", err)
	}
}

// TestLegacyLayout checks that blob files of volumes written before the
// one-level layout (DIR/blobs/ab/cd/name) are still read, verified,
// rebuilt, quarantined and deleted where they are.
func TestLegacyLayout(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, SmallValueMax: -1, CompactRate: -1})
	s.bg.stop() // removeQueued below does the queued removals, and only it
	for i, k := range []string{"a", "b", "c"} {
		mustPut(t, s, k, 1, value(i, 5000))
		name := blobName([]byte(k), 1)
		legacy := filepath.Join(s.blobsDir, legacyRel(name))
		os.MkdirAll(filepath.Dir(legacy), 0o755)
		if err := os.Rename(s.blobPath([]byte(k), 1), legacy); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want map[string][]byte) {
		t.Helper()
		for k, v := range want {
			if got, _ := readValue(t, s, k, 1); !bytes.Equal(got, v) {
				t.Errorf("%s: value differs", k)
			}
			if err := s.Verify([]byte(k), 1); err != nil {
				t.Error(err)
			}
		}
		if o := collectOrphans(t, s); len(o) != 0 {
			t.Errorf("Orphans: %s", fmtOrphans(o))
		}
		if got, _, err := scrub(t, s, t.Context(), ScrubConfig{}); err != nil || len(got) != 0 {
			t.Errorf("Scrub: %v %v", got, err)
		}
	}
	want := map[string][]byte{"a": value(0, 5000), "b": value(1, 5000), "c": value(2, 5000)}
	check(want)
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	check(want)
	if err := s.Delete([]byte("a"), 1); err != nil {
		t.Fatal(err)
	}
	s.bg.removeQueued()
	if err := s.Quarantine([]byte("b"), 1, "test"); err != nil {
		t.Fatal(err)
	}
	delete(want, "a")
	delete(want, "b")
	check(want)
	for _, k := range []string{"a", "b"} {
		if _, err := os.Stat(filepath.Join(s.blobsDir, legacyRel(blobName([]byte(k), 1)))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("legacy file of %s after Delete/Quarantine: %v", k, err)
		}
	}
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	check(want)
}

func TestConfigPacking(t *testing.T) {
	for _, tt := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Dir: "d", SmallValueMax: -1}, true},
		{Config{Dir: "d", SmallValueMax: -2}, false},
		{Config{Dir: "d", SmallValueMax: MaxSmallValueMax}, true},
		{Config{Dir: "d", SmallValueMax: MaxSmallValueMax + 1}, false},
		{Config{Dir: "d", SegmentSize: 1 << 19}, false},
		{Config{Dir: "d", SegmentSize: 2 << 30}, false},
		{Config{Dir: "d", SegmentSize: 1 << 20, CompactRate: -1}, true},
		{Config{Dir: "d", CompactRate: -2}, false},
	} {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%+v): got %v, want ok %v", tt.cfg, err, tt.ok)
		}
	}
}

func FuzzScanSegment(f *testing.F) {
	rec := make([]byte, recLen(1, 3))
	putHeader(rec, logRec{typ: recPut, key: []byte("k"), version: 1, size: 3})
	copy(rec[recHeaderLen+1:], "abc")
	sealRec(rec, lsnOf(1, segHeaderLen))
	f.Add(append(appendSegHeader(nil, segKindLog, 1), rec...))
	f.Add(append(appendSegHeader(nil, segKindLog, 1), make([]byte, 64)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), segName(1))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		fl, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fl.Close()
		err = scanSegment(fl, int64(len(data)), nil, func(r *scanned) bool {
			if r.off < segHeaderLen || r.off+int64(len(r.rec)) > int64(len(data)) || checkKey(r.key) != nil {
				t.Fatalf("bad record %+v", r)
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// DeleteNoSync unindexes at once and leaves the fdatasync to the next Sync
// or durable write; a crash that loses its tombstone leaves the value whole
// or gone, and the store writable.
func TestDeleteNoSync(t *testing.T) {
	dir := t.TempDir()
	cfg := packedCfg(dir)
	s := openStore(t, cfg)
	const n = 64
	for i := range n {
		mustPut(t, s, fmt.Sprintf("k%d", i), 1, value(i, 500))
	}
	before := s.syncs.Load()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := s.DeleteNoSync(fmt.Appendf(nil, "k%d", i), 1); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range n {
		if _, err := s.Get(fmt.Appendf(nil, "k%d", i), 1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("k%d after DeleteNoSync: %v, want ErrNotFound", i, err)
		}
	}
	if got := s.syncs.Load(); got != before {
		t.Errorf("%d lazy deletes took %d fdatasyncs, want none", n, got-before)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := s.syncs.Load(); got != before+1 {
		t.Errorf("Sync took %d fdatasyncs, want 1", got-before)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := s.syncs.Load(); got != before+1 {
		t.Errorf("a Sync with nothing to sync took an fdatasync")
	}
	// A durable write makes the lazy tombstones before it durable too.
	if err := s.DeleteNoSync([]byte("absent"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteNoSync of a missing version: %v", err)
	}
	mustPut(t, s, "x", 1, []byte("x"))
	if err := s.DeleteNoSync([]byte("x"), 1); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "y", 1, []byte("y"))
	if s.w.dirty {
		t.Error("a durable put left a lazy tombstone before it unsynced")
	}

	// A crash loses the last lazy tombstone: cut it off the segment.
	mustPut(t, s, "z", 1, value(7, 300))
	seq, end := s.logEnd()
	if err := s.DeleteNoSync([]byte("z"), 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Truncate(s.segPath(seq), end); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, cfg)
	if _, err := s.Get([]byte("z"), 1); err == nil {
		if got, _ := readValue(t, s, "z", 1); !bytes.Equal(got, value(7, 300)) {
			t.Errorf("z after losing its tombstone: %d bytes, not whole", len(got))
		}
	} else if !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	checkHolds(t, s, map[string][]byte{"y": []byte("y")})
	mustPut(t, s, "after", 1, []byte("written after the lost tail"))
	s.Close()
	s = openStore(t, cfg)
	if got, _ := readValue(t, s, "after", 1); string(got) != "written after the lost tail" {
		t.Errorf("after reopening: %q", got)
	}
}

// ReadPacked reads small packed values through kept segment descriptors,
// before and after compaction moves them (and closes the descriptors of
// the segments it removes), leaves other values to OpenBlob, and keeps at
// most maxSegFiles descriptors.
func TestReadPacked(t *testing.T) {
	dir := t.TempDir()
	cfg := packedCfg(dir)
	cfg.SmallValueMax = 16 << 10
	s := openStore(t, cfg)
	vals := fillPacked(t, s, 2000)
	mustPut(t, s, "file", 1, value(9, 20<<10)) // over SmallValueMax: a blob file
	check := func(when string) {
		t.Helper()
		for k, v := range vals {
			m, got, ok, err := s.ReadPacked([]byte(k), 1, 1<<20, []byte("prefix"))
			if err != nil || !ok {
				t.Fatalf("%s: ReadPacked(%s): ok %v, %v", when, k, ok, err)
			}
			if !bytes.Equal(got[len("prefix"):], v) || string(got[:len("prefix")]) != "prefix" || m.Size != int64(len(v)) {
				t.Fatalf("%s: ReadPacked(%s): %d bytes, not the value", when, k, len(got))
			}
		}
		s.segs.mu.Lock()
		n := len(s.segs.files)
		s.segs.mu.Unlock()
		if n > maxSegFiles {
			t.Fatalf("%s: %d segment descriptors kept, at most %d", when, n, maxSegFiles)
		}
	}
	check("before compaction")
	if _, _, ok, err := s.ReadPacked([]byte("file"), 1, 1<<20, nil); ok || err != nil {
		t.Errorf("a blob file's value: ok %v, %v; want false and no error", ok, err)
	}
	var big string
	for k, v := range vals {
		if len(v) > 100 {
			big = k
			break
		}
	}
	if _, _, ok, err := s.ReadPacked([]byte(big), 1, 100, nil); ok || err != nil {
		t.Errorf("a value over max: ok %v, %v; want false and no error", ok, err)
	}
	if _, _, _, err := s.ReadPacked([]byte("absent"), 1, 1<<20, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("a version not held: %v, want ErrNotFound", err)
	}
	// Compaction moves the survivors and removes the segments they were in,
	// while readers read.
	deletePacked(t, s, vals, func(i int) bool { return i%10 != 1 })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for k, v := range vals {
					_, got, ok, err := s.ReadPacked([]byte(k), 1, 1<<20, nil)
					if err != nil || (ok && !bytes.Equal(got, v)) {
						t.Errorf("during compaction: ReadPacked(%s): ok %v, %d bytes, %v", k, ok, len(got), err)
						return
					}
				}
			}
		})
	}
	if err := s.compact(t.Context(), nil); err != nil {
		t.Fatalf("compact: %v", err)
	}
	close(stop)
	wg.Wait()
	check("after compaction")
	s.segs.mu.Lock()
	for seq := range s.segs.files {
		if _, live := s.segs.m[seq]; !live {
			t.Errorf("a descriptor of removed segment %d is kept", seq)
		}
	}
	s.segs.mu.Unlock()
}

// writeZeros zeroes exactly [from, to), whatever their alignment, in
// writes that end on multiples of the buffer's length.
func TestWriteZeros(t *testing.T) {
	for _, tt := range []struct{ from, to int64 }{{24, 3<<20 + 5}, {0, 1 << 20}, {1<<20 - 8, 1<<20 + 8}, {77, 78}, {5, 5}} {
		f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
		if err != nil {
			t.Fatal(err)
		}
		size := tt.to + 100
		fill := bytes.Repeat([]byte{0xa5}, int(size))
		if _, err := f.WriteAt(fill, 0); err != nil {
			t.Fatal(err)
		}
		if err := writeZeros(f, make([]byte, 1<<20), tt.from, tt.to); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.Name())
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range got {
			if zero := int64(i) >= tt.from && int64(i) < tt.to; (c == 0) != zero {
				t.Fatalf("[%d, %d): byte %d is %#x", tt.from, tt.to, i, c)
			}
		}
	}
}
