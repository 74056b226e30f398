package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// --- helpers ---

func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustPut(t testing.TB, s *Store, key string, version uint64, value []byte) Meta {
	t.Helper()
	m, err := s.Put([]byte(key), version, bytes.NewReader(value), int64(len(value)))
	if err != nil {
		t.Fatalf("Put(%q, %d): %v", key, version, err)
	}
	return m
}

// readValue reads exactly the Size bytes of the value through Store.Open.
func readValue(t testing.TB, s *Store, key string, version uint64) ([]byte, Meta) {
	t.Helper()
	f, m, err := s.OpenBlob([]byte(key), version)
	if err != nil {
		t.Fatalf("Open(%q, %d): %v", key, version, err)
	}
	defer f.Close()
	b := make([]byte, m.Size)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatalf("read %q v%d: %v", key, version, err)
	}
	return b, m
}

// filesUnder lists the regular files below dir, relative to it.
func filesUnder(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

// assertInvisible checks that a failed Put left nothing behind.
func assertInvisible(t testing.TB, s *Store, key string, version uint64) {
	t.Helper()
	if _, err := s.Get([]byte(key), version); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(%q, %d) after failed put: got %v, want ErrNotFound", key, version, err)
	}
	if _, err := os.Stat(s.blobPath([]byte(key), version)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blob file of %q v%d: got stat error %v, want not exist", key, version, err)
	}
	if got := filesUnder(t, s.tmpDir); len(got) != 0 {
		t.Errorf("tmp/ after failed put: got %q, want empty", got)
	}
}

// genReader yields n pseudo-random bytes from a seed without holding them.
type genReader struct {
	n int64
	x uint64
}

func newGen(n int64, seed uint64) *genReader { return &genReader{n: n, x: seed | 1} }

func (g *genReader) Read(p []byte) (int, error) {
	if g.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.n {
		p = p[:g.n]
	}
	var w [8]byte
	for i := 0; i < len(p); i += 8 {
		g.x ^= g.x << 13
		g.x ^= g.x >> 7
		g.x ^= g.x << 17
		binary.LittleEndian.PutUint64(w[:], g.x)
		copy(p[i:], w[:])
	}
	g.n -= int64(len(p))
	return len(p), nil
}

func genChecksum(t testing.TB, n int64, seed uint64) uint64 {
	t.Helper()
	h := xxhash.New()
	if _, err := io.CopyBuffer(h, newGen(n, seed), make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	return h.Sum64()
}

// errReader returns n bytes, then err.
type errReader struct {
	n   int
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func testLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, nil))
}

// --- tests ---

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"empty dir", Config{}, false},
		{"negative capacity", Config{Dir: "d", Capacity: -1}, false},
		{"negative reserve", Config{Dir: "d", Reserve: -1}, false},
		{"minimal", Config{Dir: "d"}, true},
		{"full", Config{Dir: "d", Capacity: 1 << 30, Reserve: 1 << 20, NoSync: true}, true},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	if _, err := Open(Config{}); err == nil {
		t.Error("Open(Config{}): got nil error, want one")
	}
}

func TestETag(t *testing.T) {
	tests := []struct {
		sum  uint64
		want string
	}{
		{0, `"0000000000000000"`},
		{1, `"0000000000000001"`},
		{0xdeadbeef, `"00000000deadbeef"`},
		{^uint64(0), `"ffffffffffffffff"`},
		{0x0123456789abcdef, `"0123456789abcdef"`},
	}
	for _, tt := range tests {
		if got := (Meta{Checksum: tt.sum}).ETag(); got != tt.want {
			t.Errorf("ETag of %x: got %s, want %s", tt.sum, got, tt.want)
		}
	}
}

func TestPutGetOpen(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1})
	tests := []struct {
		name    string
		key     string
		value   []byte
		chunked bool // declare size -1
	}{
		{"empty value", "empty", nil, false},
		{"empty value chunked", "empty-chunked", nil, true},
		{"small", "small", []byte("hello, world"), false},
		{"small chunked", "small-chunked", []byte("hello, chunks"), true},
		{"binary key", "\x01\xff\xfe key", []byte{0, 1, 2, 3}, false},
		{"crosses buffer", "big", bytes.Repeat([]byte("0123456789abcdef"), (bufSize+3*bufSize/2)/16+1), false},
		{"crosses buffer chunked", "big-chunked", bytes.Repeat([]byte("fedcba9876543210"), bufSize/16+7), true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version := uint64(i + 1)
			size := int64(len(tt.value))
			if tt.chunked {
				size = -1
			}
			before := time.Now()
			m, err := s.Put([]byte(tt.key), version, bytes.NewReader(tt.value), size)
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			want := Meta{Key: []byte(tt.key), Version: version, Size: int64(len(tt.value)), Checksum: xxhash.Sum64(tt.value)}
			if !bytes.Equal(m.Key, want.Key) || m.Version != want.Version || m.Size != want.Size || m.Checksum != want.Checksum {
				t.Errorf("Put meta: got %+v, want %+v", m, want)
			}
			if m.ModTime.Before(before.Add(-time.Second)) || m.ModTime.After(time.Now().Add(time.Second)) || m.ModTime.Location() != time.UTC {
				t.Errorf("Put ModTime: got %v, want about now, UTC", m.ModTime)
			}
			g, err := s.Get([]byte(tt.key), version)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !g.ModTime.Equal(m.ModTime) || g.ModTime != m.ModTime {
				t.Errorf("Get ModTime: got %v, want %v", g.ModTime, m.ModTime)
			}
			if !bytes.Equal(g.Key, m.Key) || g.Version != m.Version || g.Size != m.Size || g.Checksum != m.Checksum {
				t.Errorf("Get: got %+v, want %+v", g, m)
			}
			got, om := readValue(t, s, tt.key, version)
			if !bytes.Equal(got, tt.value) {
				t.Errorf("read back %d bytes, want the %d bytes written", len(got), len(tt.value))
			}
			if om.Checksum != xxhash.Sum64(got) {
				t.Errorf("Open checksum: got %016x, want %016x", om.Checksum, xxhash.Sum64(got))
			}
			fi, err := os.Stat(s.blobPath([]byte(tt.key), version))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fi.Size(), m.Size+trailerLen(len(tt.key)); got != want {
				t.Errorf("blob file size: got %d, want %d", got, want)
			}
			if err := s.Verify([]byte(tt.key), version); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
	// The Key in a Meta is the caller's copy.
	key := []byte("mutable")
	m := mustPut(t, s, string(key), 1, []byte("v"))
	m.Key[0] = 'X'
	if g, _ := s.Get(key, 1); string(g.Key) != "mutable" {
		t.Errorf("Get after mutating a returned Meta.Key: got key %q, want %q", g.Key, "mutable")
	}
}

func TestOpenFileIsPlainAndPositioned(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1})
	mustPut(t, s, "k", 1, []byte("abcdef"))
	f, m, err := s.OpenBlob([]byte("k"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off != 0 {
		t.Errorf("offset of the opened file: got %d (%v), want 0", off, err)
	}
	// The file outlives a delete of its version.
	if err := s.Delete([]byte("k"), 1); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, m.Size)
	if _, err := io.ReadFull(f, b); err != nil || string(b) != "abcdef" {
		t.Errorf("read after delete: got %q (%v), want %q", b, err, "abcdef")
	}
}

func TestVersionsAndLatest(t *testing.T) {
	s := openStore(t, Config{})
	for _, v := range []uint64{5, 1, 3, 1 << 40, 2} {
		mustPut(t, s, "k", v, []byte(fmt.Sprintf("k@%d", v)))
	}
	// Keys sharing a prefix with "k" must not mix with its versions.
	mustPut(t, s, "k2", 9, []byte("k2"))
	mustPut(t, s, "kk", 10, []byte("kk"))
	mustPut(t, s, "j", 99, []byte("j"))

	latest, err := s.Latest([]byte("k"))
	if err != nil || latest.Version != 1<<40 {
		t.Errorf("Latest(k): got v%d (%v), want v%d", latest.Version, err, uint64(1<<40))
	}
	vs, err := s.Versions([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, m := range vs {
		got = append(got, m.Version)
		if want := fmt.Sprintf("k@%d", m.Version); m.Size != int64(len(want)) || m.Checksum != xxhash.Sum64String(want) || string(m.Key) != "k" {
			t.Errorf("Versions(k) entry %+v: want key k, size %d, checksum of %q", m, len(want), want)
		}
	}
	if want := []uint64{1, 2, 3, 5, 1 << 40}; !slices.Equal(got, want) {
		t.Errorf("Versions(k): got %v, want %v", got, want)
	}
	if _, err := s.Latest([]byte("absent")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Latest(absent): got %v, want ErrNotFound", err)
	}
	if vs, err := s.Versions([]byte("absent")); err != nil || len(vs) != 0 {
		t.Errorf("Versions(absent): got %v, %v; want empty, nil", vs, err)
	}
	if _, err := s.Get([]byte("k"), 4); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(k, 4): got %v, want ErrNotFound", err)
	}
	if _, _, err := s.OpenBlob([]byte("k"), 4); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(k, 4): got %v, want ErrNotFound", err)
	}
	if err := s.Verify([]byte("k"), 4); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify(k, 4): got %v, want ErrNotFound", err)
	}
}

func TestTwoVersionsCoexist(t *testing.T) {
	s := openStore(t, Config{})
	mustPut(t, s, "k", 1, []byte("one"))
	mustPut(t, s, "k", 2, []byte("two"))
	for v, want := range map[uint64]string{1: "one", 2: "two"} {
		if got, _ := readValue(t, s, "k", v); string(got) != want {
			t.Errorf("k v%d: got %q, want %q", v, got, want)
		}
	}
	if st := s.Stats(); st.Keys != 2 || st.Bytes != 6 {
		t.Errorf("Stats: got %d keys, %d bytes; want 2, 6", st.Keys, st.Bytes)
	}
}

// TestOverwriteSameVersion: a version is immutable. A second Put of it
// fails with ErrExists, reads nothing of its body, and the held copy stays
// (before, it was replaced, so a replayed volume write could swap the bytes
// of a value the master had acknowledged).
func TestOverwriteSameVersion(t *testing.T) {
	s := openStore(t, Config{})
	m := mustPut(t, s, "k", 7, []byte("the old value"))
	_, err := s.Put([]byte("k"), 7, strings.NewReader("new"), 3)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Put of v7: got %v, want ErrExists", err)
	}
	got, gm := readValue(t, s, "k", 7)
	if string(got) != "the old value" || gm.Checksum != m.Checksum {
		t.Errorf("after the refused Put: got %q (%+v), want the held copy", got, gm)
	}
	if st := s.Stats(); st.Keys != 1 || st.Bytes != m.Size {
		t.Errorf("Stats: got %d keys, %d bytes; want 1, %d", st.Keys, st.Bytes, m.Size)
	}
	if files := filesUnder(t, s.tmpDir); len(files) != 0 {
		t.Errorf("tmp/ after the refused Put: got %q, want empty", files)
	}
}

func TestDelete(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1})
	mustPut(t, s, "k", 1, []byte("one"))
	mustPut(t, s, "k", 2, []byte("two"))
	if err := s.Delete([]byte("k"), 1); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get([]byte("k"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: got %v, want ErrNotFound", err)
	}
	// The file goes in the background: remove what is queued now, and wait
	// for a batch the background goroutine may have taken already.
	s.bg.removeQueued()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := os.Stat(s.blobPath([]byte("k"), 1))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob file after Delete: got %v, want not exist", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Delete([]byte("k"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: got %v, want ErrNotFound", err)
	}
	if err := s.Delete([]byte("never"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of an absent key: got %v, want ErrNotFound", err)
	}
	if l, err := s.Latest([]byte("k")); err != nil || l.Version != 2 {
		t.Errorf("Latest after Delete of v1: got v%d (%v), want v2", l.Version, err)
	}
	if st := s.Stats(); st.Keys != 1 || st.Bytes != 3 {
		t.Errorf("Stats after Delete: got %d keys, %d bytes; want 1, 3", st.Keys, st.Bytes)
	}
}

func TestBadKeys(t *testing.T) {
	s := openStore(t, Config{})
	bad := []struct {
		name string
		key  []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"too long", bytes.Repeat([]byte("x"), MaxKeyLen+1)},
		{"NUL inside", []byte("a\x00b")},
		{"NUL only", []byte{0}},
		{"NUL at end", []byte("ab\x00")},
	}
	for _, tt := range bad {
		calls := map[string]error{}
		_, calls["Put"] = s.Put(tt.key, 1, strings.NewReader("v"), 1)
		_, calls["Get"] = s.Get(tt.key, 1)
		_, calls["Latest"] = s.Latest(tt.key)
		_, calls["Versions"] = s.Versions(tt.key)
		_, _, calls["OpenBlob"] = s.OpenBlob(tt.key, 1)
		calls["Delete"] = s.Delete(tt.key, 1)
		calls["Verify"] = s.Verify(tt.key, 1)
		for op, err := range calls {
			if !errors.Is(err, ErrBadKey) {
				t.Errorf("%s with %s key: got %v, want ErrBadKey", op, tt.name, err)
			}
		}
	}
	if err := s.Iterate([]byte("a\x00"), func(Meta) bool { return true }); !errors.Is(err, ErrBadKey) {
		t.Errorf("Iterate from a start holding NUL: got %v, want ErrBadKey", err)
	}
	if files := filesUnder(t, s.blobsDir); len(files) != 0 {
		t.Errorf("blob files after bad keys: got %q, want none", files)
	}
	// The longest key is fine.
	long := strings.Repeat("y", MaxKeyLen)
	mustPut(t, s, long, 1, []byte("v"))
	if got, _ := readValue(t, s, long, 1); string(got) != "v" {
		t.Errorf("value under the longest key: got %q, want %q", got, "v")
	}
}

func TestSizeMismatch(t *testing.T) {
	s := openStore(t, Config{})
	tests := []struct {
		name     string
		body     int64
		declared int64
	}{
		{"short", 5, 10},
		{"long", 10, 5},
		{"empty declared", 1, 0},
		{"empty body", 0, 3},
		{"long past a buffer", 2*bufSize + 1, bufSize},
		{"short past a buffer", bufSize + 1, 3 * bufSize},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, version := "mismatch", uint64(i)
			_, err := s.Put([]byte(key), version, newGen(tt.body, 1), tt.declared)
			if !errors.Is(err, ErrSizeMismatch) {
				t.Fatalf("Put of %d bytes declared %d: got %v, want ErrSizeMismatch", tt.body, tt.declared, err)
			}
			assertInvisible(t, s, key, version)
		})
	}
	if files := filesUnder(t, s.blobsDir); len(files) != 0 {
		t.Errorf("blobs/ after mismatches: got %q, want empty", files)
	}
	if st := s.Stats(); st.Keys != 0 || st.Bytes != 0 {
		t.Errorf("Stats after mismatches: got %+v, want no keys", st)
	}
	if _, err := s.Put([]byte("k"), 1, strings.NewReader(""), -2); err == nil {
		t.Error("Put with size -2: got nil error, want one")
	}
}

func TestReaderError(t *testing.T) {
	s := openStore(t, Config{})
	boom := errors.New("connection reset")
	for _, size := range []int64{-1, 3 * bufSize} {
		_, err := s.Put([]byte("k"), 1, &errReader{n: bufSize + 100<<10, err: boom}, size)
		if !errors.Is(err, boom) {
			t.Errorf("Put (size %d) with a failing reader: got %v, want the reader's error", size, err)
		}
		if !strings.Contains(fmt.Sprint(err), `store: put "k" v1`) {
			t.Errorf("error %q does not say what failed on what", err)
		}
		assertInvisible(t, s, "k", 1)
	}
}

func TestCrashLeftoversInTmp(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{SmallValueMax: -1, Dir: dir})
	mustPut(t, s, "k", 1, []byte("kept"))
	s.Close()

	// What a killed write leaves: partial temp files (and, to be safe, a
	// directory).
	for _, name := range []string{"put-123", "put-456"} {
		if err := os.WriteFile(filepath.Join(dir, "tmp", name), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp", "junkdir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Config{SmallValueMax: -1, Dir: dir})
	ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil || len(ents) != 0 {
		t.Errorf("tmp/ after reopen: got %d entries (%v), want none", len(ents), err)
	}
	if got, _ := readValue(t, s, "k", 1); string(got) != "kept" {
		t.Errorf("value after reopen: got %q, want %q", got, "kept")
	}
}

// TestCrashBetweenRenameAndIndex simulates a crash after a blob was renamed
// into place but before it was indexed. Open does not look for such orphans
// (the index is not empty, so it trusts it): the version stays invisible
// until Rebuild, which picks it up. Delete of the version removes the file.
func TestCrashBetweenRenameAndIndex(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{SmallValueMax: -1, Dir: dir})
	mustPut(t, s, "indexed", 1, []byte("in the index"))

	plant := func(key string, version uint64, value string) Meta {
		t.Helper()
		var res reservation
		res.s = s
		tmp, m, err := s.writeTemp([]byte(key), version, nil, strings.NewReader(value), int64(len(value)), &res)
		if err != nil {
			t.Fatal(err)
		}
		dst := s.blobPath([]byte(key), version)
		if err := s.ensureDir(filepath.Dir(dst)); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			t.Fatal(err)
		}
		return m
	}
	orphan := plant("orphan", 3, "not indexed yet")
	s.Close()

	s = openStore(t, Config{SmallValueMax: -1, Dir: dir})
	if _, err := s.Get([]byte("orphan"), 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("orphan after reopen: got %v, want ErrNotFound (Open does not scan for orphans)", err)
	}
	if err := s.Rebuild(); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	g, err := s.Get([]byte("orphan"), 3)
	if err != nil {
		t.Fatalf("orphan after Rebuild: %v", err)
	}
	if g.Size != orphan.Size || g.Checksum != orphan.Checksum || g.ModTime != orphan.ModTime {
		t.Errorf("orphan meta after Rebuild: got %+v, want %+v", g, orphan)
	}
	if got, _ := readValue(t, s, "orphan", 3); string(got) != "not indexed yet" {
		t.Errorf("orphan value: got %q", got)
	}

	// Delete of an orphan's version answers ErrNotFound but removes the file.
	plant("orphan2", 1, "x")
	if err := s.Delete([]byte("orphan2"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of an orphan: got %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(s.blobPath([]byte("orphan2"), 1)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphan file after Delete: got %v, want removed", err)
	}
}

func TestIndexLostRebuilds(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{SmallValueMax: -1, Dir: dir})
	want := map[string]Meta{}
	for i := range 40 {
		key := fmt.Sprintf("key/%d", i%7)
		m := mustPut(t, s, key, uint64(i), bytes.Repeat([]byte{byte(i)}, i*100))
		want[fmt.Sprintf("%s@%d", key, i)] = m
	}
	mustPut(t, s, "gone", 1, []byte("deleted before the loss"))
	if err := s.Delete([]byte("gone"), 1); err != nil {
		t.Fatal(err)
	}
	stats := s.Stats()
	s.Close()

	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	s = openStore(t, Config{SmallValueMax: -1, Dir: dir, Logger: testLogger(&log)})
	if !strings.Contains(log.String(), "rebuilt") {
		t.Errorf("log after reopening without an index: got %q, want a rebuild", log.String())
	}
	checkAll := func() {
		t.Helper()
		n := 0
		err := s.Iterate(nil, func(m Meta) bool {
			n++
			w, ok := want[fmt.Sprintf("%s@%d", m.Key, m.Version)]
			if !ok {
				t.Errorf("unexpected %q v%d after rebuild", m.Key, m.Version)
				return true
			}
			if !bytes.Equal(m.Key, w.Key) || m.Size != w.Size || m.Checksum != w.Checksum || m.ModTime != w.ModTime {
				t.Errorf("after rebuild: got %+v, want %+v", m, w)
			}
			return true
		})
		if err != nil || n != len(want) {
			t.Errorf("Iterate after rebuild: got %d entries (%v), want %d", n, err, len(want))
		}
		if got := s.Stats(); got.Keys != stats.Keys || got.Bytes != stats.Bytes {
			t.Errorf("Stats after rebuild: got %d keys, %d bytes; want %d, %d", got.Keys, got.Bytes, stats.Keys, stats.Bytes)
		}
	}
	checkAll()

	// A rebuild that did not finish (its marker is still there) starts
	// again at the next Open.
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, markerName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	log = syncBuffer{}
	s = openStore(t, Config{SmallValueMax: -1, Dir: dir, Logger: testLogger(&log)})
	if !strings.Contains(log.String(), "did not finish") {
		t.Errorf("log after reopening with the marker: got %q, want a rebuild", log.String())
	}
	if _, err := os.Stat(filepath.Join(dir, markerName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("marker after rebuild: got %v, want removed", err)
	}
	checkAll()
}

func TestCorruptIndexRebuilds(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	m := mustPut(t, s, "k", 1, []byte("value"))
	s.Close()

	manifests, _ := filepath.Glob(filepath.Join(dir, "index", "MANIFEST-*"))
	if len(manifests) != 1 {
		t.Fatalf("manifests: got %q, want one", manifests)
	}
	b, err := os.ReadFile(manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := 7; i < len(b); i++ { // keep the first chunk header's length, break the rest
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(manifests[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	s = openStore(t, Config{Dir: dir, Logger: testLogger(&log)})
	if !strings.Contains(log.String(), "index corrupted") {
		t.Errorf("log: got %q, want the corruption reported", log.String())
	}
	g, err := s.Get([]byte("k"), 1)
	if err != nil || g.Checksum != m.Checksum || g.ModTime != m.ModTime {
		t.Errorf("Get after rebuild from a corrupted index: got %+v (%v), want %+v", g, err, m)
	}
}

func TestRebuildSkipsBadFiles(t *testing.T) {
	var log syncBuffer
	s := openStore(t, Config{SmallValueMax: -1, Logger: testLogger(&log)})
	mustPut(t, s, "a", 1, []byte("alpha"))
	mustPut(t, s, "b", 1, []byte("bravo"))
	mustPut(t, s, "c", 1, []byte("charlie"))

	// Flip one byte of b's trailer (a footer field).
	pb := s.blobPath([]byte("b"), 1)
	b, _ := os.ReadFile(pb)
	b[len(b)-footerLen+10] ^= 1
	os.WriteFile(pb, b, 0o644)
	// A valid blob under a name that does not match its trailer.
	pc := s.blobPath([]byte("c"), 1)
	c, _ := os.ReadFile(pc)
	wrong := s.blobPath([]byte("c"), 2)
	os.MkdirAll(filepath.Dir(wrong), 0o755)
	os.WriteFile(wrong, c, 0o644)
	// Junk.
	os.WriteFile(filepath.Join(s.blobsDir, "README"), []byte("hi"), 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(pc), "short"), []byte("x"), 0o644)

	if err := s.Rebuild(); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	for key, ok := range map[string]bool{"a": true, "b": false, "c": true} {
		_, err := s.Get([]byte(key), 1)
		if ok && err != nil || !ok && !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) after rebuild: got %v, want found %v", key, err, ok)
		}
	}
	if _, err := s.Get([]byte("c"), 2); !errors.Is(err, ErrNotFound) {
		t.Errorf("misnamed file: got %v, want it skipped", err)
	}
	if st := s.Stats(); st.Keys != 2 || st.Bytes != int64(len("alpha")+len("charlie")) {
		t.Errorf("Stats after rebuild: got %+v, want 2 keys", st)
	}
	logged := log.String()
	if n := strings.Count(logged, "rebuild skipped a file"); n != 4 {
		t.Errorf("skipped files reported: got %d, want 4; log:\n%s", n, logged)
	}
	if !strings.Contains(logged, "skipped=4") {
		t.Errorf("summary does not count 4 skipped files; log:\n%s", logged)
	}
}

func TestCapacity(t *testing.T) {
	s := openStore(t, Config{Capacity: 1 << 20})
	mustPut(t, s, "first", 1, make([]byte, 600<<10))
	for _, size := range []int64{600 << 10, -1} {
		_, err := s.Put([]byte("second"), 1, newGen(600<<10, 2), size)
		if !errors.Is(err, ErrNoSpace) {
			t.Errorf("Put (size %d) over capacity: got %v, want ErrNoSpace", size, err)
		}
		assertInvisible(t, s, "second", 1)
	}
	if got, _ := readValue(t, s, "first", 1); len(got) != 600<<10 {
		t.Errorf("read after ErrNoSpace: got %d bytes, want %d", len(got), 600<<10)
	}
	st := s.Stats()
	if st.Total != 1<<20 || st.Free != 1<<20-600<<10 || st.Bytes != 600<<10 {
		t.Errorf("Stats: got %+v, want Total %d, Free %d", st, 1<<20, 1<<20-600<<10)
	}
	if err := s.Delete([]byte("first"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put([]byte("second"), 1, newGen(600<<10, 2), -1); err != nil {
		t.Errorf("Put after freeing room: %v", err)
	}

	// Reserve: a write that would leave less than Reserve free fails.
	r := openStore(t, Config{Reserve: 1 << 62})
	if _, err := r.Put([]byte("k"), 1, strings.NewReader("v"), 1); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Put with a huge Reserve: got %v, want ErrNoSpace", err)
	}
	if _, err := r.Put([]byte("k"), 1, strings.NewReader("v"), -1); !errors.Is(err, ErrNoSpace) {
		t.Errorf("chunked Put with a huge Reserve: got %v, want ErrNoSpace", err)
	}
	assertInvisible(t, r, "k", 1)
	if st := r.Stats(); st.Free != 0 || st.Total <= 0 {
		t.Errorf("Stats with a huge Reserve: got %+v, want Free 0 and the filesystem's Total", st)
	}
}

func TestNoSpaceMapping(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&os.PathError{Op: "write", Path: "f", Err: syscall.ENOSPC}, true},
		{&os.PathError{Op: "write", Path: "f", Err: syscall.EDQUOT}, true},
		{os.NewSyscallError("fallocate", syscall.ENOSPC), true},
		{&os.PathError{Op: "write", Path: "f", Err: syscall.EIO}, false},
		{errors.New("other"), false},
	}
	for _, tt := range tests {
		got := noSpace(fmt.Errorf("context: %w", tt.err))
		if errors.Is(got, ErrNoSpace) != tt.want {
			t.Errorf("noSpace(%v): errors.Is(ErrNoSpace) = %v, want %v", tt.err, !tt.want, tt.want)
		}
		if !errors.Is(got, tt.err) {
			t.Errorf("noSpace(%v) lost the original error: %v", tt.err, got)
		}
	}
	if noSpace(nil) != nil {
		t.Error("noSpace(nil) != nil")
	}
}

func TestVerifyDetectsCorruption(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1})
	value := bytes.Repeat([]byte("0123456789"), 1000)
	mustPut(t, s, "k", 1, value)
	if err := s.Verify([]byte("k"), 1); err != nil {
		t.Fatalf("Verify of a good blob: %v", err)
	}
	path := s.blobPath([]byte("k"), 1)
	good, _ := os.ReadFile(path)
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
	}{
		{"value byte", func(b []byte) []byte { b[len(value)/2] ^= 0x01; return b }},
		{"first value byte", func(b []byte) []byte { b[0] ^= 0x80; return b }},
		{"trailer key", func(b []byte) []byte { b[len(value)] ^= 0x01; return b }},
		{"trailer checksum", func(b []byte) []byte { b[len(b)-footerLen+24] ^= 0x01; return b }},
		{"magic", func(b []byte) []byte { b[len(b)-1] ^= 0x01; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"extended", func(b []byte) []byte { return append(b, 0) }},
	}
	for _, tt := range tests {
		b := tt.mutate(bytes.Clone(good))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Verify([]byte("k"), 1); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Verify with a flipped %s: got %v, want ErrCorrupt", tt.name, err)
		}
	}
	os.Remove(path)
	if err := s.Verify([]byte("k"), 1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Verify with the file missing: got %v, want ErrCorrupt", err)
	}
	if _, _, err := s.OpenBlob([]byte("k"), 1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open with the file missing: got %v, want ErrCorrupt", err)
	}
}

func TestKeysCannotEscape(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{SmallValueMax: -1, Dir: dir})
	keys := []string{
		"../../../../etc/passwd",
		"/absolute/path",
		"a/b/c",
		"..",
		".",
		"./x",
		`..\..\windows`,
		strings.Repeat("../", MaxKeyLen/3),
		strings.Repeat("/", MaxKeyLen),
		"\xff\xfe\n\t",
	}
	for i, key := range keys {
		mustPut(t, s, key, uint64(i), []byte(key))
		path := s.blobPath([]byte(key), uint64(i))
		rel, err := filepath.Rel(s.blobsDir, path)
		if err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 1 {
			t.Errorf("key %q lands at %s: want DIR/blobs/ab/name", key, path)
		}
		name := filepath.Base(path)
		if len(name) != blobNameLen || rel != filepath.Join(name[:2], name) {
			t.Errorf("key %q: file name %q does not follow ab/<hash>-<version>", key, rel)
		}
		if got, _ := readValue(t, s, key, uint64(i)); string(got) != key {
			t.Errorf("key %q: read back %q", key, got)
		}
	}
	for _, f := range filesUnder(t, dir) {
		if top := strings.SplitN(f, string(filepath.Separator), 2)[0]; top != "blobs" && top != "index" && top != "LOCK" {
			t.Errorf("file %s outside blobs/ and index/", f)
		}
	}
	if n := len(filesUnder(t, s.blobsDir)); n != len(keys) {
		t.Errorf("blob files: got %d, want %d", n, len(keys))
	}
}

func TestConcurrentPuts(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1})
	const writers, rounds = 8, 5
	key := []byte("contended")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	// Readers check that Open hands out a file that matches its Meta while
	// the same version is being replaced.
	for range 2 {
		readers.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				f, m, err := s.OpenBlob(key, 0)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					t.Errorf("Open during puts: %v", err)
					return
				}
				h := xxhash.New()
				_, err = io.CopyBuffer(h, io.LimitReader(f, m.Size), buf)
				f.Close()
				if err != nil || h.Sum64() != m.Checksum {
					t.Errorf("Open during puts: content checksum %016x (%v), Meta says %016x", h.Sum64(), err, m.Checksum)
				}
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				// Different versions of one key...
				size := int64(w*1000 + r)
				if _, err := s.Put(key, uint64(1+w), newGen(size, uint64(w*rounds+r+1)), size); err != nil && (r == 0 || !errors.Is(err, ErrExists)) {
					t.Errorf("Put v%d: %v", 1+w, err)
				}
				// ...and all writers on the same version, with different
				// bodies: one wins, the others find it held.
				size = int64(50<<10 + w*1000 + r)
				if _, err := s.Put(key, 0, newGen(size, uint64(1000+w*rounds+r)), -1); err != nil && !errors.Is(err, ErrExists) {
					t.Errorf("Put v0: %v", err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	vs, err := s.Versions(key)
	if err != nil || len(vs) != writers+1 {
		t.Fatalf("Versions: got %d (%v), want %d", len(vs), err, writers+1)
	}
	var total int64
	for _, m := range vs {
		total += m.Size
		if err := s.Verify(key, m.Version); err != nil {
			t.Errorf("Verify v%d: %v", m.Version, err)
		}
	}
	if st := s.Stats(); st.Keys != int64(writers+1) || st.Bytes != total {
		t.Errorf("Stats: got %d keys, %d bytes; want %d, %d", st.Keys, st.Bytes, writers+1, total)
	}
	if files := filesUnder(t, s.tmpDir); len(files) != 0 {
		t.Errorf("tmp/ after concurrent puts: got %q, want empty", files)
	}
	if n := len(filesUnder(t, s.blobsDir)); n != writers+1 {
		t.Errorf("blob files: got %d, want %d", n, writers+1)
	}
}

func TestLargeValueStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 64 MiB")
	}
	s := openStore(t, Config{})
	const size = 64 << 20
	want := genChecksum(t, size, 42)
	for i, declared := range []int64{size, -1} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := s.Put([]byte("large"), uint64(i), newGen(size, 42), declared)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatalf("Put 64 MiB (declared %d): %v", declared, err)
		}
		if m.Size != size || m.Checksum != want {
			t.Errorf("Put 64 MiB: got size %d, checksum %016x; want %d, %016x", m.Size, m.Checksum, size, want)
		}
		// The value must be streamed, not held: allow the pooled 1 MiB
		// buffer and some change.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
			t.Errorf("Put 64 MiB allocated %d bytes, want the value streamed (< 4 MiB)", alloc)
		}
		f, om, err := s.OpenBlob([]byte("large"), uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		h := xxhash.New()
		n, err := io.CopyBuffer(h, io.LimitReader(f, om.Size), make([]byte, 1<<20))
		f.Close()
		if err != nil || n != size || h.Sum64() != want {
			t.Errorf("read back: %d bytes, checksum %016x (%v); want %d, %016x", n, h.Sum64(), err, size, want)
		}
	}
}

func TestIterate(t *testing.T) {
	s := openStore(t, Config{NoSync: true}) // many small puts; durability is not the point here
	var want []string
	for k := range 30 {
		for v := range 1 + k%3 {
			key := fmt.Sprintf("key%02d", k)
			mustPut(t, s, key, uint64(v+1)<<32, []byte(key))
			want = append(want, fmt.Sprintf("%s@%d", key, uint64(v+1)<<32))
		}
	}
	// Enough entries for several batches.
	for v := range 2*iterateBatch + 10 {
		mustPut(t, s, "many", uint64(v), nil)
		want = append(want, fmt.Sprintf("many@%d", v))
	}
	mustPut(t, s, "key", 1, nil) // a prefix of every "keyNN"
	want = append(want, "key@1")
	// Byte order of (key, version): the index key key|0x00|version makes
	// "key" sort before "key00".
	slices.SortFunc(want, func(a, b string) int {
		ka, va, _ := strings.Cut(a, "@")
		kb, vb, _ := strings.Cut(b, "@")
		if c := strings.Compare(ka, kb); c != 0 {
			return c
		}
		var x, y uint64
		fmt.Sscan(va, &x)
		fmt.Sscan(vb, &y)
		return cmpUint(x, y)
	})
	collect := func(start []byte, limit int) []string {
		t.Helper()
		var got []string
		err := s.Iterate(start, func(m Meta) bool {
			got = append(got, fmt.Sprintf("%s@%d", m.Key, m.Version))
			return limit <= 0 || len(got) < limit
		})
		if err != nil {
			t.Fatalf("Iterate(%q): %v", start, err)
		}
		return got
	}
	if got := collect(nil, 0); !slices.Equal(got, want) {
		t.Errorf("Iterate(nil): got %d entries %v..., want %d", len(got), got[:min(5, len(got))], len(want))
	}
	i := slices.Index(want, "key10@4294967296")
	if got := collect([]byte("key10"), 0); !slices.Equal(got, want[i:]) {
		t.Errorf("Iterate(key10): got %d entries, want %d", len(got), len(want)-i)
	}
	if got := collect([]byte("key1"), 0); !slices.Equal(got, want[i:]) {
		t.Errorf("Iterate(key1): got %d entries, want %d", len(got), len(want)-i)
	}
	if got := collect(nil, 3); !slices.Equal(got, want[:3]) {
		t.Errorf("Iterate stopping after 3: got %v, want %v", got, want[:3])
	}
	if got := collect([]byte("zzz"), 0); len(got) != 0 {
		t.Errorf("Iterate past the end: got %v, want none", got)
	}
	// fn may call the store, even delete what it is given.
	n := 0
	err := s.Iterate([]byte("many"), func(m Meta) bool {
		if string(m.Key) != "many" {
			return false
		}
		n++
		if err := s.Delete(m.Key, m.Version); err != nil {
			t.Errorf("Delete inside Iterate: %v", err)
		}
		return true
	})
	if err != nil || n != 2*iterateBatch+10 {
		t.Errorf("Iterate deleting: visited %d (%v), want %d", n, err, 2*iterateBatch+10)
	}
	if vs, _ := s.Versions([]byte("many")); len(vs) != 0 {
		t.Errorf("versions left after deleting while iterating: %d", len(vs))
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestClose(t *testing.T) {
	s := openStore(t, Config{})
	mustPut(t, s, "k", 1, []byte("v"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	calls := map[string]error{}
	_, calls["Put"] = s.Put([]byte("k"), 2, strings.NewReader("v"), 1)
	_, calls["Get"] = s.Get([]byte("k"), 1)
	_, calls["Latest"] = s.Latest([]byte("k"))
	_, calls["Versions"] = s.Versions([]byte("k"))
	_, _, calls["OpenBlob"] = s.OpenBlob([]byte("k"), 1)
	calls["Delete"] = s.Delete([]byte("k"), 1)
	calls["Verify"] = s.Verify([]byte("k"), 1)
	calls["Iterate"] = s.Iterate(nil, func(Meta) bool { return true })
	calls["Rebuild"] = s.Rebuild()
	for op, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", op, err)
		}
	}
	if st := s.Stats(); st.Keys != 1 {
		t.Errorf("Stats after Close: got %+v, want the last counters", st)
	}
}

func TestCloseDuringPutAndIterate(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	for v := range iterateBatch + 1 {
		mustPut(t, s, "k", uint64(v), nil)
	}
	// Close is not held up by a callback, and the next batch sees it.
	err := s.Iterate(nil, func(m Meta) bool {
		if m.Version == 0 {
			if err := s.Close(); err != nil {
				t.Errorf("Close inside Iterate: %v", err)
			}
		}
		return true
	})
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Iterate across Close: got %v, want ErrClosed", err)
	}

	// A Put streaming its body when Close happens fails, leaving nothing.
	s = openStore(t, Config{})
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Put([]byte("k"), 1, pr, 10)
		done <- err
	}()
	pw.Write([]byte("01234"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pw.Write([]byte("56789"))
	pw.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Put across Close: got %v, want ErrClosed", err)
	}
	if files := filesUnder(t, s.tmpDir); len(files) != 0 {
		t.Errorf("tmp/ after a Put across Close: %q", files)
	}
	if files := filesUnder(t, s.blobsDir); len(files) != 0 {
		t.Errorf("blobs/ after a Put across Close: %q", files)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	for i := range 10 {
		mustPut(t, s, fmt.Sprintf("k%d", i), uint64(i), bytes.Repeat([]byte{'x'}, i))
	}
	st := s.Stats()
	// A second Store on the same directory is refused, and leaves the first
	// one's writes in progress alone.
	inflight := filepath.Join(dir, "tmp", "put-inflight")
	if err := os.WriteFile(inflight, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(Config{Dir: dir}); err == nil {
		s2.Close()
		t.Error("second Open of an open directory: got nil error, want one")
	}
	if _, err := os.Stat(inflight); err != nil {
		t.Errorf("temp file of the first Store after a refused second Open: %v", err)
	}
	s.Close()
	s = openStore(t, Config{Dir: dir})
	if got := s.Stats(); got.Keys != st.Keys || got.Bytes != st.Bytes || got.Keys != 10 || got.Bytes != 45 {
		t.Errorf("Stats after reopen: got %+v, want %d keys, %d bytes", got, 10, 45)
	}
	for i := range 10 {
		if got, _ := readValue(t, s, fmt.Sprintf("k%d", i), uint64(i)); len(got) != i {
			t.Errorf("k%d after reopen: got %d bytes, want %d", i, len(got), i)
		}
	}
}

func TestNoSync(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	mustPut(t, s, "k", 1, []byte("fast"))
	if got, _ := readValue(t, s, "k", 1); string(got) != "fast" {
		t.Errorf("NoSync read back: got %q", got)
	}
}

// TestKilledProcess runs a child that writes, starts a Put it never
// finishes and kills itself with SIGKILL, holding the store open. Reopening
// must find every acknowledged value, no partial one, and no reason to
// rebuild (the index's strict journal checks do not fire on a clean kill).
func TestKilledProcess(t *testing.T) {
	const envDir = "KVDB_STORE_TEST_KILLED_DIR"
	if dir := os.Getenv(envDir); dir != "" {
		s, err := Open(Config{SmallValueMax: -1, Dir: dir})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for i := range 20 {
			if _, err := s.Put(fmt.Appendf(nil, "k%d", i), 1, newGen(int64(i)<<12, uint64(i)), int64(i)<<12); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		pr, pw := io.Pipe()
		go s.Put([]byte("partial"), 1, pr, 1<<20)
		pw.Write(make([]byte, 1000)) // returns once Put is reading into its temp file
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}

	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledProcess$")
	cmd.Env = append(os.Environ(), envDir+"="+dir)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: got %v, want killed by SIGKILL; output:\n%s", err, out)
	}
	if n := len(filesUnder(t, filepath.Join(dir, "tmp"))); n != 1 {
		t.Errorf("temp files left by the killed Put: got %d, want 1", n)
	}

	var log syncBuffer
	s := openStore(t, Config{SmallValueMax: -1, Dir: dir, Logger: testLogger(&log)})
	if strings.Contains(log.String(), "rebuild") {
		t.Errorf("reopen after a kill rebuilt the index; log:\n%s", log.String())
	}
	for i := range 20 {
		key := fmt.Sprintf("k%d", i)
		m, err := s.Get([]byte(key), 1)
		if err != nil || m.Size != int64(i)<<12 || m.Checksum != genChecksum(t, int64(i)<<12, uint64(i)) {
			t.Errorf("%s after the kill: got %+v (%v)", key, m, err)
		}
		if err := s.Verify([]byte(key), 1); err != nil {
			t.Errorf("Verify(%s): %v", key, err)
		}
	}
	assertInvisible(t, s, "partial", 1)
	if st := s.Stats(); st.Keys != 20 {
		t.Errorf("Stats after the kill: got %d keys, want 20", st.Keys)
	}
}

func TestRebuildStoppedByClose(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	mustPut(t, s, "k", 1, []byte("v"))
	s.closing.Store(true) // as Close does before waiting for a Rebuild
	if err := s.Rebuild(); !errors.Is(err, ErrClosed) {
		t.Errorf("Rebuild while closing: got %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after a stopped Rebuild: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, markerName)); err != nil {
		t.Fatalf("marker after a stopped Rebuild: %v", err)
	}
	s = openStore(t, Config{Dir: dir})
	if got, _ := readValue(t, s, "k", 1); string(got) != "v" {
		t.Errorf("after reopening: got %q, want %q", got, "v")
	}
}
