package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// --- helpers ---

// fakeClock advances only when slept on, and records every sleep.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
	// onSleep, if set, runs at each sleep (with mu released).
	onSleep func(n int)
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
	n, hook := len(c.sleeps), c.onSleep
	c.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return nil
}

func (c *fakeClock) total() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum time.Duration
	for _, d := range c.sleeps {
		sum += d
	}
	return sum
}

// report is one call of Scrub's bad callback.
type report struct {
	key     string
	version uint64
	err     error
}

// scrub runs Scrub and collects what it reports.
func scrub(t testing.TB, s *Store, ctx context.Context, cfg ScrubConfig) ([]report, ScrubStats, error) {
	t.Helper()
	var got []report
	st, err := s.Scrub(ctx, cfg, func(m Meta, err error) {
		got = append(got, report{string(m.Key), m.Version, err})
	})
	return got, st, err
}

// fileSize is the size on disk of the blob file of a value of n bytes.
func fileSize(key string, n int) int64 { return int64(n) + trailerLen(len(key)) }

// plantUnindexed writes a valid blob file for (key, version) without
// indexing it, as a crash between rename and index write would.
func plantUnindexed(t testing.TB, s *Store, key string, version uint64, value string) Meta {
	t.Helper()
	res := reservation{s: s}
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

func mutateFile(t testing.TB, path string, mutate func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, mutate(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

// --- tests ---

func TestScrubConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  ScrubConfig
		ok   bool
	}{
		{"zero", ScrubConfig{}, true},
		{"rate", ScrubConfig{Rate: 10 << 20}, true},
		{"negative rate", ScrubConfig{Rate: -1}, false},
		{"position", ScrubConfig{Start: indexKey([]byte("k"), 7)}, true},
		{"bare key", ScrubConfig{Start: []byte("k")}, false},
		{"empty key in position", ScrubConfig{Start: indexKey(nil, 7)}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	s := openStore(t, Config{})
	if _, err := s.Scrub(t.Context(), ScrubConfig{Rate: -1}, nil); err == nil {
		t.Error("Scrub with a negative rate: got nil error, want one")
	}
}

func TestScrubHealthy(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
	var want int64
	put := func(key string, version uint64, value []byte) {
		mustPut(t, s, key, version, value)
		want += fileSize(key, len(value))
	}
	put("empty", 1, nil)
	put("big", 1, bytes.Repeat([]byte("0123456789abcdef"), (2*bufSize+100)/16)) // several buffers
	for v := range 2*iterateBatch + 3 {                                         // several index batches
		put("many", uint64(v), fmt.Appendf(nil, "value %d", v))
	}
	n := int64(2*iterateBatch + 5)

	got, st, err := scrub(t, s, t.Context(), ScrubConfig{})
	if err != nil {
		t.Fatalf("Scrub: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("Scrub of a healthy store reported %v", got)
	}
	if st.Files != n || st.Bytes != want || st.Bad != 0 || st.Skipped != 0 {
		t.Errorf("stats: got %+v, want %d files, %d bytes, none bad or skipped", st, n, want)
	}
	if wantLast := indexKey([]byte("many"), 2*iterateBatch+2); !bytes.Equal(st.Last, wantLast) {
		t.Errorf("Last: got %q, want %q", st.Last, wantLast)
	}
	// A nil callback is allowed.
	if _, err := s.Scrub(t.Context(), ScrubConfig{}, nil); err != nil {
		t.Errorf("Scrub with a nil callback: %v", err)
	}

	empty := openStore(t, Config{SmallValueMax: -1})
	_, st, err = scrub(t, empty, t.Context(), ScrubConfig{})
	if err != nil || st.Files != 0 || st.Last != nil {
		t.Errorf("Scrub of an empty store: got %+v, %v; want nothing, nil", st, err)
	}
}

func TestScrubFindsRot(t *testing.T) {
	value := bytes.Repeat([]byte("0123456789"), 1000)
	tests := []struct {
		name    string
		damage  func(t *testing.T, path string)
		corrupt bool // the report wraps ErrCorrupt (else it is an I/O error)
	}{
		{"value byte flipped", func(t *testing.T, p string) {
			mutateFile(t, p, func(b []byte) []byte { b[len(value)/2] ^= 0x01; return b })
		}, true},
		{"trailer byte flipped", func(t *testing.T, p string) {
			mutateFile(t, p, func(b []byte) []byte { b[len(b)-footerLen+20] ^= 0x01; return b })
		}, true},
		{"truncated", func(t *testing.T, p string) {
			if err := os.Truncate(p, int64(len(value)/2)); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"extended", func(t *testing.T, p string) {
			mutateFile(t, p, func(b []byte) []byte { return append(b, 0) })
		}, true},
		{"missing", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"unopenable", func(t *testing.T, p string) {
			// A symlink to itself fails to open with ELOOP, even for root.
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Base(p), p); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
			for i := range 5 {
				mustPut(t, s, fmt.Sprintf("k%d", i), 1, value)
			}
			mustPut(t, s, "k2", 2, value) // the neighbouring version stays healthy
			tt.damage(t, s.blobPath([]byte("k2"), 1))

			got, st, err := scrub(t, s, t.Context(), ScrubConfig{})
			if err != nil {
				t.Fatalf("Scrub: %v", err)
			}
			if len(got) != 1 || got[0].key != "k2" || got[0].version != 1 {
				t.Fatalf("reports: got %v, want exactly k2 v1", got)
			}
			if errors.Is(got[0].err, ErrCorrupt) != tt.corrupt {
				t.Errorf("report error %v: got ErrCorrupt %v, want %v", got[0].err, !tt.corrupt, tt.corrupt)
			}
			if !tt.corrupt && !errors.Is(got[0].err, syscall.ELOOP) {
				t.Errorf("report error: got %v, want ELOOP", got[0].err)
			}
			if st.Files != 6 || st.Bad != 1 {
				t.Errorf("stats: got %+v, want 6 files, 1 bad", st)
			}
			// Verify finds the same on demand.
			if err := s.Verify([]byte("k2"), 1); tt.corrupt && !errors.Is(err, ErrCorrupt) || err == nil {
				t.Errorf("Verify: got %v, want an error (ErrCorrupt: %v)", err, tt.corrupt)
			}
			if err := s.Verify([]byte("k2"), 2); err != nil {
				t.Errorf("Verify of the healthy neighbour: %v", err)
			}
		})
	}
}

// TestScrubRechecksBeforeReporting races a Delete, a replacement and a
// Quarantine against the read of a bad file: none of them may be reported,
// but a file that went missing meanwhile is.
func TestScrubRechecksBeforeReporting(t *testing.T) {
	tests := []struct {
		name   string
		race   func(t *testing.T, s *Store) // runs after the bad file was read
		report bool
	}{
		{"nothing happens", func(*testing.T, *Store) {}, true},
		{"deleted", func(t *testing.T, s *Store) {
			if err := s.Delete([]byte("k"), 1); err != nil {
				t.Error(err)
			}
		}, false},
		{"quarantined", func(t *testing.T, s *Store) {
			if err := s.Quarantine([]byte("k"), 1, "by someone else"); err != nil {
				t.Error(err)
			}
		}, false},
		{"replaced", func(t *testing.T, s *Store) {
			if err := s.Delete([]byte("k"), 1); err != nil {
				t.Error(err)
			}
			mustPut(t, s, "k", 1, []byte("a new copy"))
		}, false},
		{"file removed", func(t *testing.T, s *Store) { os.Remove(s.blobPath([]byte("k"), 1)) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
			mustPut(t, s, "k", 1, []byte("the original value"))
			mutateFile(t, s.blobPath([]byte("k"), 1), func(b []byte) []byte { b[3] ^= 0x10; return b })
			cfg := ScrubConfig{afterRead: func(Meta) { tt.race(t, s) }}
			got, st, err := scrub(t, s, t.Context(), cfg)
			if err != nil {
				t.Fatalf("Scrub: %v", err)
			}
			if tt.report {
				if len(got) != 1 || !errors.Is(got[0].err, ErrCorrupt) || st.Bad != 1 || st.Skipped != 0 {
					t.Errorf("got %v, %+v; want one ErrCorrupt report", got, st)
				}
			} else if len(got) != 0 || st.Skipped != 1 || st.Files != 0 {
				t.Errorf("got %v, %+v; want no report and one skipped", got, st)
			}
		})
	}
}

func TestScrubCancel(t *testing.T) {
	t.Run("before", func(t *testing.T) {
		s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
		mustPut(t, s, "k", 1, []byte("v"))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, st, err := scrub(t, s, ctx, ScrubConfig{})
		if !errors.Is(err, context.Canceled) || st.Files != 0 || st.Last != nil {
			t.Errorf("Scrub with a cancelled context: got %+v, %v; want nothing done, context.Canceled", st, err)
		}
	})

	// Cancelled between two chunks of one file: the file is neither
	// counted nor reported, and Last stays before it.
	t.Run("mid-file", func(t *testing.T) {
		s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
		mustPut(t, s, "a", 1, []byte("small"))
		mustPut(t, s, "b", 1, make([]byte, 4*minScrubChunk))
		ctx, cancel := context.WithCancel(t.Context())
		clk := newFakeClock()
		clk.onSleep = func(n int) {
			if n == 3 { // a's trailer, a's value, b's trailer
				cancel()
			}
		}
		got, st, err := scrub(t, s, ctx, ScrubConfig{Rate: 1000, clock: clk})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Scrub: got %v, want context.Canceled", err)
		}
		if len(got) != 0 || st.Files != 1 || !bytes.Equal(st.Last, indexKey([]byte("a"), 1)) {
			t.Errorf("got %v, %+v; want only a checked, nothing reported", got, st)
		}
	})

	// Cancelled during a long sleep on the real clock: Scrub returns
	// without waiting for it (the test would time out otherwise).
	t.Run("sleeping", func(t *testing.T) {
		s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
		mustPut(t, s, "k", 1, make([]byte, 1000))
		ctx, cancel := context.WithCancel(t.Context())
		asleep := make(chan struct{})
		clk := &notifyClock{asleep: asleep}
		done := make(chan error, 1)
		go func() {
			_, err := s.Scrub(ctx, ScrubConfig{Rate: 1, clock: clk}, nil) // 1000 s of budget
			done <- err
		}()
		<-asleep
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Scrub cancelled while sleeping: got %v, want context.Canceled", err)
		}
	})

	// The callback may cancel: the pass stops right after the report.
	t.Run("from the callback", func(t *testing.T) {
		s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
		for i := range 4 {
			mustPut(t, s, fmt.Sprintf("k%d", i), 1, []byte("v"))
		}
		os.Remove(s.blobPath([]byte("k1"), 1))
		ctx, cancel := context.WithCancel(t.Context())
		var n int
		st, err := s.Scrub(ctx, ScrubConfig{}, func(Meta, error) { n++; cancel() })
		if !errors.Is(err, context.Canceled) || n != 1 || st.Files != 2 || !bytes.Equal(st.Last, indexKey([]byte("k1"), 1)) {
			t.Errorf("got %+v, %v, %d reports; want 2 files, stopped after k1", st, err, n)
		}
	})
}

// notifyClock is the real clock, telling when it starts to sleep.
type notifyClock struct {
	realClock
	asleep chan struct{}
	once   sync.Once
}

func (c *notifyClock) sleep(ctx context.Context, d time.Duration) error {
	c.once.Do(func() { close(c.asleep) })
	return c.realClock.sleep(ctx, d)
}

func TestScrubResume(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
	for i := range 10 {
		mustPut(t, s, fmt.Sprintf("k%d", i), 1, []byte("v"))
	}
	for _, k := range []string{"k3", "k7"} {
		mutateFile(t, s.blobPath([]byte(k), 1), func(b []byte) []byte { b[0] ^= 1; return b })
	}
	// The first pass is interrupted at its first report.
	ctx, cancel := context.WithCancel(t.Context())
	var first []string
	st, err := s.Scrub(ctx, ScrubConfig{}, func(m Meta, _ error) {
		first = append(first, string(m.Key))
		cancel()
	})
	if !errors.Is(err, context.Canceled) || !slices.Equal(first, []string{"k3"}) || st.Files != 4 {
		t.Fatalf("first pass: got %q, %+v, %v; want k3 reported, 4 files, cancelled", first, st, err)
	}
	got, st, err := scrub(t, s, t.Context(), ScrubConfig{Start: st.Last})
	if err != nil || len(got) != 1 || got[0].key != "k7" || st.Files != 6 {
		t.Errorf("resumed pass: got %v, %+v, %v; want only k7 reported, 6 files", got, st, err)
	}
	if want := indexKey([]byte("k9"), 1); !bytes.Equal(st.Last, want) {
		t.Errorf("resumed pass Last: got %q, want %q", st.Last, want)
	}
	// Resuming after the end does nothing; Last stays unset.
	got, st, err = scrub(t, s, t.Context(), ScrubConfig{Start: st.Last})
	if err != nil || len(got) != 0 || st.Files != 0 || st.Last != nil {
		t.Errorf("pass resumed at the end: got %v, %+v, %v; want nothing", got, st, err)
	}
	// A position between versions works too.
	_, st, err = scrub(t, s, t.Context(), ScrubConfig{Start: indexKey([]byte("k5"), 0)})
	if err != nil || st.Files != 5 {
		t.Errorf("pass from k5 v0: got %+v, %v; want 5 files (k5..k9)", st, err)
	}
}

func TestScrubRate(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
	sizes := []int{0, 10, 3000, 5*minScrubChunk + 17} // the last one takes several chunks
	var want int64
	for i, n := range sizes {
		key := fmt.Sprintf("k%d", i)
		mustPut(t, s, key, 1, make([]byte, n))
		want += fileSize(key, n)
	}
	const rate = 1000 // bytes per second: chunks of minScrubChunk
	clk := newFakeClock()
	got, st, err := scrub(t, s, t.Context(), ScrubConfig{Rate: rate, clock: clk})
	if err != nil || len(got) != 0 {
		t.Fatalf("Scrub: got %v, %v", got, err)
	}
	if st.Bytes != want {
		t.Errorf("bytes read: got %d, want %d", st.Bytes, want)
	}
	// The fake clock only moves when slept on, so the sleeps add up to
	// the whole budget, to the nanosecond.
	budget := time.Duration(want) * time.Second / rate
	if total := clk.total(); total != budget {
		t.Errorf("sleeps: got %v in total, want %v for %d bytes at %d B/s", total, budget, want, rate)
	}
	if st.Duration != budget {
		t.Errorf("Duration: got %v, want %v", st.Duration, budget)
	}
	// One sleep per trailer, one per value chunk.
	if n, wantN := len(clk.sleeps), 4+0+1+1+6; n != wantN {
		t.Errorf("number of sleeps: got %d, want %d", n, wantN)
	}
	// Unthrottled, nothing sleeps.
	clk = newFakeClock()
	if _, _, err := scrub(t, s, t.Context(), ScrubConfig{clock: clk}); err != nil || len(clk.sleeps) != 0 {
		t.Errorf("unthrottled Scrub: slept %v (%v), want never", clk.sleeps, err)
	}
}

func TestLimiter(t *testing.T) {
	type step struct {
		idle  time.Duration // the clock moves on by itself (reading, a callback)
		bytes int
		sleep time.Duration // want
	}
	tests := []struct {
		name  string
		rate  int64
		steps []step
	}{
		{"exact", 1000, []step{{0, 500, 500 * time.Millisecond}, {0, 1000, time.Second}}},
		{"reading time counts", 1000, []step{{0, 500, 500 * time.Millisecond}, {100 * time.Millisecond, 500, 400 * time.Millisecond}}},
		{"slow read, no sleep", 1000, []step{{0, 500, 500 * time.Millisecond}, {2 * time.Second, 500, 0}}},
		{"idle earns one chunk at most", 1000, []step{{0, 100, 100 * time.Millisecond}, {10 * time.Second, 500, 0}, {0, 500, 500 * time.Millisecond}}},
		{"remainders carried", 3, []step{{0, 1, 333333333}, {0, 1, 333333333}, {0, 1, 333333334}}},
		{"fast disk", 1 << 40, []step{{0, 1 << 20, 953}, {0, 1 << 20, 954}}}, // 953.67 ns each
	}
	for _, tt := range tests {
		clk := newFakeClock()
		l := newLimiter(tt.rate, clk)
		for i, st := range tt.steps {
			clk.advance(st.idle)
			before := len(clk.sleeps)
			if err := l.wait(t.Context(), st.bytes); err != nil {
				t.Fatal(err)
			}
			var got time.Duration
			if len(clk.sleeps) > before {
				got = clk.sleeps[before]
			}
			if got != st.sleep {
				t.Errorf("%s: step %d: slept %v, want %v", tt.name, i, got, st.sleep)
			}
		}
	}
	if l := newLimiter(0, newFakeClock()); l != nil || l.wait(t.Context(), 1<<20) != nil || l.chunk(bufSize) != bufSize {
		t.Error("rate 0: want a nil limiter that never waits and reads whole buffers")
	}
	for _, tt := range []struct {
		rate int64
		want int
	}{{1, minScrubChunk}, {1000, minScrubChunk}, {1 << 20, 256 << 10}, {16 << 20, 1 << 20}} {
		if got := newLimiter(tt.rate, realClock{}).chunk(1 << 20); got != tt.want {
			t.Errorf("chunk at %d B/s: got %d, want %d", tt.rate, got, tt.want)
		}
	}
}

func TestScrubClosed(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1, NoSync: true})
	mustPut(t, s, "a", 1, []byte("v"))
	mustPut(t, s, "b", 1, []byte("v"))
	os.Remove(s.blobPath([]byte("a"), 1))
	_, err := s.Scrub(t.Context(), ScrubConfig{}, func(Meta, error) { s.Close() })
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Scrub across Close: got %v, want ErrClosed", err)
	}
	if _, err := s.Scrub(t.Context(), ScrubConfig{}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Scrub after Close: got %v, want ErrClosed", err)
	}
	if err := s.Quarantine([]byte("a"), 1, "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Quarantine after Close: got %v, want ErrClosed", err)
	}
	if err := s.Orphans(t.Context(), func(Orphan) bool { return true }); !errors.Is(err, ErrClosed) {
		t.Errorf("Orphans after Close: got %v, want ErrClosed", err)
	}
}

// quarantined lists DIR/quarantine.
func quarantined(t testing.TB, s *Store) []string {
	t.Helper()
	names := filesUnder(t, s.quarantineDir)
	slices.Sort(names)
	return names
}

func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{SmallValueMax: -1, Dir: dir})
	if fi, err := os.Stat(filepath.Join(dir, "quarantine")); err != nil || !fi.IsDir() {
		t.Fatalf("quarantine/ after Open: got %v, want a directory", err)
	}
	mustPut(t, s, "a", 1, []byte("alpha"))
	mustPut(t, s, "b", 1, []byte("bravo, version one"))
	mustPut(t, s, "b", 2, []byte("bravo, version two"))
	mustPut(t, s, "c", 1, []byte("charlie"))
	before := s.Stats()
	path := s.blobPath([]byte("b"), 1)
	mutateFile(t, path, func(b []byte) []byte { b[4] ^= 0x20; return b })
	rotten, _ := os.ReadFile(path)

	// The usual use: quarantine what Scrub reports, from its callback.
	var reports int
	_, err := s.Scrub(t.Context(), ScrubConfig{}, func(m Meta, err error) {
		reports++
		if qerr := s.Quarantine(m.Key, m.Version, err.Error()); qerr != nil {
			t.Errorf("Quarantine from the callback: %v", qerr)
		}
	})
	if err != nil || reports != 1 {
		t.Fatalf("Scrub: %d reports (%v), want 1", reports, err)
	}

	checkGone := func(when string) {
		t.Helper()
		if _, err := s.Get([]byte("b"), 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Get(b, 1): got %v, want ErrNotFound", when, err)
		}
		if _, _, err := s.OpenBlob([]byte("b"), 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Open(b, 1): got %v, want ErrNotFound", when, err)
		}
		if m, err := s.Latest([]byte("b")); err != nil || m.Version != 2 {
			t.Errorf("%s: Latest(b): got v%d (%v), want v2", when, m.Version, err)
		}
		var seen []string
		s.Iterate(nil, func(m Meta) bool {
			seen = append(seen, fmt.Sprintf("%s@%d", m.Key, m.Version))
			return true
		})
		if want := []string{"a@1", "b@2", "c@1"}; !slices.Equal(seen, want) {
			t.Errorf("%s: Iterate: got %v, want %v", when, seen, want)
		}
		if st := s.Stats(); st.Keys != before.Keys-1 || st.Bytes != before.Bytes-int64(len("bravo, version one")) {
			t.Errorf("%s: Stats: got %+v, want one version fewer than %+v", when, st, before)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: blob file: got %v, want moved away", when, err)
		}
		if got, _, err := scrub(t, s, t.Context(), ScrubConfig{}); err != nil || len(got) != 0 {
			t.Errorf("%s: Scrub: got %v, %v; want nothing", when, got, err)
		}
	}
	checkGone("after Quarantine")

	names := quarantined(t, s)
	if len(names) != 2 || names[1] != names[0]+".reason" || !strings.HasPrefix(names[0], filepath.Base(path)+".") {
		t.Fatalf("quarantine/: got %q, want %s.<time> and its .reason", names, filepath.Base(path))
	}
	if b, _ := os.ReadFile(filepath.Join(s.quarantineDir, names[0])); !bytes.Equal(b, rotten) {
		t.Errorf("quarantined file: got %q, want the rotten bytes %q", b, rotten)
	}
	note, _ := os.ReadFile(filepath.Join(s.quarantineDir, names[1]))
	for _, want := range []string{`key: "b"`, "version: 1", "value checksum"} {
		if !strings.Contains(string(note), want) {
			t.Errorf("quarantine note %q does not contain %q", note, want)
		}
	}

	if err := s.Quarantine([]byte("b"), 1, "again"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Quarantine: got %v, want ErrNotFound", err)
	}
	if err := s.Quarantine([]byte("never"), 1, "absent"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Quarantine of an absent version: got %v, want ErrNotFound", err)
	}
	if err := s.Quarantine(nil, 1, "bad key"); !errors.Is(err, ErrBadKey) {
		t.Errorf("Quarantine of an empty key: got %v, want ErrBadKey", err)
	}
	if n := len(quarantined(t, s)); n != 2 {
		t.Errorf("quarantine/ after failed Quarantines: got %d files, want 2", n)
	}

	// Neither a reopen, nor Rebuild, nor an Open that finds the index
	// lost brings it back.
	s.Close()
	s = openStore(t, Config{SmallValueMax: -1, Dir: dir})
	checkGone("after reopening")
	if err := s.Rebuild(); err != nil {
		t.Fatal(err)
	}
	checkGone("after Rebuild")
	s.Close()
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	s = openStore(t, Config{SmallValueMax: -1, Dir: dir, Logger: testLogger(&log)})
	if !strings.Contains(log.String(), "rebuilt") {
		t.Fatalf("reopening without an index did not rebuild; log:\n%s", log.String())
	}
	checkGone("after losing the index")
}

func TestQuarantineMissingAndOrphan(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1})
	mustPut(t, s, "k", 1, []byte("value"))
	os.Remove(s.blobPath([]byte("k"), 1))
	// Only the entry remains: Quarantine removes it, with nothing to move.
	if err := s.Quarantine([]byte("k"), 1, "missing"); err != nil {
		t.Fatalf("Quarantine of a version whose file is missing: %v", err)
	}
	if _, err := s.Get([]byte("k"), 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Quarantine: got %v, want ErrNotFound", err)
	}
	if st := s.Stats(); st.Keys != 0 || st.Bytes != 0 {
		t.Errorf("Stats: got %+v, want empty", st)
	}
	if names := quarantined(t, s); len(names) != 0 {
		t.Errorf("quarantine/: got %q, want empty", names)
	}

	// A file with no entry (a Quarantine interrupted after its move would
	// leave the reverse): ErrNotFound, but the file goes to quarantine.
	plantUnindexed(t, s, "orphan", 3, "unindexed")
	if err := s.Quarantine([]byte("orphan"), 3, "orphan"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Quarantine of an unindexed file: got %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(s.blobPath([]byte("orphan"), 3)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unindexed file after Quarantine: got %v, want moved", err)
	}
	if names := quarantined(t, s); len(names) != 2 {
		t.Errorf("quarantine/: got %q, want the file and its note", names)
	}

	// Quarantining the same version twice never overwrites the first copy.
	mustPut(t, s, "twice", 1, []byte("first"))
	if err := s.Quarantine([]byte("twice"), 1, "one"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "twice", 1, []byte("second"))
	if err := s.Quarantine([]byte("twice"), 1, "two"); err != nil {
		t.Fatal(err)
	}
	if names := quarantined(t, s); len(names) != 6 {
		t.Errorf("quarantine/: got %q, want 3 files and their notes", names)
	}
}

// orphanKey identifies an Orphan in tests.
func orphanKey(o Orphan) string {
	return fmt.Sprintf("%v %s %q v%d err=%v", o.Kind, o.Path, o.Meta.Key, o.Meta.Version, o.Err != nil)
}

func collectOrphans(t testing.TB, s *Store) []Orphan {
	t.Helper()
	var got []Orphan
	if err := s.Orphans(t.Context(), func(o Orphan) bool { got = append(got, o); return true }); err != nil {
		t.Fatalf("Orphans: %v", err)
	}
	return got
}

func TestOrphans(t *testing.T) {
	s := openStore(t, Config{SmallValueMax: -1})
	for _, k := range []string{"a", "b", "c", "d"} {
		mustPut(t, s, k, 1, []byte("value of "+k))
	}
	if got := collectOrphans(t, s); len(got) != 0 {
		t.Fatalf("Orphans of a healthy store: got %v", got)
	}

	// An index entry without its file.
	missing := s.blobPath([]byte("b"), 1)
	os.Remove(missing)
	// A valid blob without an index entry.
	planted := plantUnindexed(t, s, "planted", 9, "not indexed")
	plantedPath := s.blobPath([]byte("planted"), 9)
	// A valid blob under a name that does not match its trailer.
	c, _ := os.ReadFile(s.blobPath([]byte("c"), 1))
	misnamed := s.blobPath([]byte("c"), 2)
	os.MkdirAll(filepath.Dir(misnamed), 0o755)
	os.WriteFile(misnamed, c, 0o644)
	// Junk in a blob directory, at the top and a stray directory.
	junk := filepath.Join(filepath.Dir(s.blobPath([]byte("a"), 1)), "junk")
	os.WriteFile(junk, []byte("x"), 0o644)
	readme := filepath.Join(s.blobsDir, "README")
	os.WriteFile(readme, []byte("hi"), 0o644)
	strayDir := filepath.Join(s.blobsDir, "zz")
	os.Mkdir(strayDir, 0o755)

	got := collectOrphans(t, s)
	byPath := map[string]Orphan{}
	for _, o := range got {
		byPath[o.Path] = o
	}
	if len(got) != 6 || len(byPath) != 6 {
		t.Fatalf("Orphans: got %d, want 6:%s", len(got), fmtOrphans(got))
	}
	if got[0].Path != missing || got[0].Kind != MissingFile {
		t.Errorf("first orphan: got %s, want the missing file (missing files come first)", orphanKey(got[0]))
	}
	tests := []struct {
		path    string
		kind    OrphanKind
		key     string
		corrupt bool // Err wraps ErrCorrupt
		err     bool // Err is set
	}{
		{missing, MissingFile, "b", false, false},
		{plantedPath, UnindexedFile, "planted", false, false},
		{misnamed, UnindexedFile, "c", true, true},
		{junk, UnindexedFile, "", true, true},
		{readme, UnindexedFile, "", false, true},
		{strayDir, UnindexedFile, "", false, true},
	}
	for _, tt := range tests {
		o, ok := byPath[tt.path]
		if !ok {
			t.Errorf("%s not reported", tt.path)
			continue
		}
		if o.Kind != tt.kind || string(o.Meta.Key) != tt.key || (o.Err != nil) != tt.err || errors.Is(o.Err, ErrCorrupt) != tt.corrupt {
			t.Errorf("%s: got %s (%v), want kind %v, key %q, err %v, corrupt %v", tt.path, orphanKey(o), o.Err, tt.kind, tt.key, tt.err, tt.corrupt)
		}
	}
	if o := byPath[plantedPath]; o.Meta.Version != 9 || o.Meta.Size != planted.Size || o.Meta.Checksum != planted.Checksum || !o.Meta.ModTime.Equal(planted.ModTime) {
		t.Errorf("planted orphan Meta: got %+v, want %+v", o.Meta, planted)
	}
	if o := byPath[missing]; o.Meta.Version != 1 || o.Meta.Size != int64(len("value of b")) {
		t.Errorf("missing file Meta: got %+v, want b v1 from the index", o.Meta)
	}
	if MissingFile.String() != "missing file" || UnindexedFile.String() != "unindexed file" {
		t.Errorf("OrphanKind strings: %q, %q", MissingFile, UnindexedFile)
	}

	// fn stops the walk; so does ctx.
	n := 0
	if err := s.Orphans(t.Context(), func(Orphan) bool { n++; return false }); err != nil || n != 1 {
		t.Errorf("Orphans stopped by fn: %d calls (%v), want 1", n, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Orphans(ctx, func(Orphan) bool { return true }); !errors.Is(err, context.Canceled) {
		t.Errorf("Orphans with a cancelled context: got %v, want context.Canceled", err)
	}

	// What the orphans' doc says clears them does.
	if err := s.Quarantine([]byte("b"), 1, "file missing"); err != nil {
		t.Error(err)
	}
	if err := s.Delete([]byte("planted"), 9); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of the planted orphan: got %v, want ErrNotFound", err)
	}
	for _, p := range []string{misnamed, junk, readme, strayDir} {
		os.Remove(p)
	}
	if got := collectOrphans(t, s); len(got) != 0 {
		t.Errorf("Orphans after clearing: got%s", fmtOrphans(got))
	}
}

func fmtOrphans(os []Orphan) string {
	var b strings.Builder
	for _, o := range os {
		fmt.Fprintf(&b, "\n\t%s (%v)", orphanKey(o), o.Err)
	}
	return b.String()
}

// TestScrubConcurrentWrites runs Scrub and Orphans over and over while
// writers put, replace and delete versions: nothing may be reported.
func TestScrubConcurrentWrites(t *testing.T) {
	s := openStore(t, Config{NoSync: true}) // durability is not the point
	const writers, rounds = 4, 60
	for w := range writers {
		for v := range 3 {
			mustPut(t, s, fmt.Sprintf("w%d", w), uint64(v), make([]byte, 1000*v))
		}
	}
	var done atomic.Int32
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			defer done.Add(1)
			key := fmt.Appendf(nil, "w%d", w)
			for r := range rounds {
				v := uint64(r + 3)
				size := int64((r*7919 + w*104729) % (3 * minScrubChunk))
				if _, err := s.Put(key, v, newGen(size, v), size); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				if r%3 == 0 { // a version is immutable: a second Put changes nothing
					if _, err := s.Put(key, v, newGen(size, v+1), size); !errors.Is(err, ErrExists) {
						t.Errorf("Put again: got %v, want ErrExists", err)
						return
					}
				}
				if err := s.Delete(key, v-3); err != nil {
					t.Errorf("Delete: %v", err)
					return
				}
			}
		})
	}
	passes := 0
	for done.Load() < writers || passes < 2 {
		got, _, err := scrub(t, s, t.Context(), ScrubConfig{})
		if err != nil || len(got) != 0 {
			t.Fatalf("Scrub during writes: got %v, %v; want nothing", got, err)
		}
		if o := collectOrphans(t, s); len(o) != 0 {
			t.Fatalf("Orphans during writes: got%s", fmtOrphans(o))
		}
		passes++
	}
	wg.Wait()
	got, st, err := scrub(t, s, t.Context(), ScrubConfig{})
	if err != nil || len(got) != 0 || st.Files != writers*3 || st.Skipped != 0 {
		t.Errorf("Scrub after the writes: got %v, %+v, %v; want %d healthy files", got, st, err, writers*3)
	}
	t.Logf("%d passes of Scrub and Orphans ran during the writes", passes)
}

// A log segment the writer is creating has a file before it has a header:
// the orphan scan must not report it as a damaged file, though it does
// report such a file that no one is creating.
func TestOrphansSegmentInTheMaking(t *testing.T) {
	s := openStore(t, Config{})
	mustPut(t, s, "a", 1, []byte("packed"))
	seq := s.segs.allocMaking()
	path := s.segPath(seq)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := collectOrphans(t, s); len(got) != 0 {
		t.Fatalf("a segment in the making was reported: %s", fmtOrphans(got))
	}
	s.segs.made(seq) // given up, and left behind
	got := collectOrphans(t, s)
	if len(got) != 1 || got[0].Path != path || got[0].Err == nil {
		t.Fatalf("a headerless segment no one is creating: got %s", fmtOrphans(got))
	}
	os.Remove(path)
}

// Orphan scans while small writes roll segment after segment find nothing:
// every value written is indexed, and no segment is half made. (The window
// between a segment's file and its header is a few microseconds: this
// rarely meets it, TestOrphansSegmentInTheMaking always does.)
func TestOrphansWhileRolling(t *testing.T) {
	s := openStore(t, Config{SegmentSize: minSegmentSize})
	done := make(chan struct{})
	var scans int
	go func() {
		defer close(done)
		val := bytes.Repeat([]byte("r"), 16<<10)
		for i := range 400 { // about 6 segments
			// Not mustPut: t.Fatal belongs to the test's own goroutine.
			if _, err := s.Put(fmt.Appendf(nil, "roll/%d", i), 1, bytes.NewReader(val), int64(len(val))); err != nil {
				t.Errorf("Put roll/%d: %v", i, err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			t.Logf("%d scans", scans)
			s.segs.mu.Lock()
			n := len(s.segs.m)
			s.segs.mu.Unlock()
			if n < 5 {
				t.Errorf("%d segments: the writes did not roll", n)
			}
			return
		default:
		}
		if got := collectOrphans(t, s); len(got) != 0 {
			<-done
			t.Fatalf("scan %d: %s", scans, fmtOrphans(got))
		}
		scans++
	}
}
