package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ScrubConfig configures one Scrub pass. The zero value scrubs every version
// as fast as the disk allows.
type ScrubConfig struct {
	// Rate caps the bytes read per second, value and trailer bytes alike,
	// averaged over the pass. 0 means unthrottled. A scrub competes with
	// clients for the disk: pick a rate that reads the whole volume in the
	// time you can afford between passes (e.g. 2 TB a week is ~3.3 MB/s).
	Rate int64

	// Start resumes a pass after this position: pass ScrubStats.Last of an
	// earlier, interrupted pass. Empty starts from the first version. A
	// position is opaque; only values returned by Scrub are valid.
	Start []byte

	// clock paces the reads; nil is the real clock. Tests inject a fake one
	// to check the pacing without timing anything.
	clock clock
	// afterRead, if set, is called after a file was read and found bad,
	// before the index is checked again. Tests use it to race a Delete.
	afterRead func(Meta)
}

// Validate reports whether the configuration can be used.
func (c ScrubConfig) Validate() error {
	if c.Rate < 0 {
		return fmt.Errorf("store: scrub config: Rate %d is negative", c.Rate)
	}
	if len(c.Start) > 0 {
		key, _, err := splitIndexKey(c.Start)
		if err == nil {
			err = checkKey(key)
		}
		if err != nil {
			return fmt.Errorf("store: scrub config: Start is not a position returned by Scrub: %w", err)
		}
	}
	return nil
}

// ScrubStats reports what one Scrub pass did, also when it stopped early.
type ScrubStats struct {
	Files int64 // versions whose file was checked, bad ones included
	Bytes int64 // bytes read from blob files, trailers included
	Bad   int64 // versions reported to the bad callback
	// Skipped counts versions deleted, quarantined or replaced while the
	// pass was at them: they are neither checked nor reported.
	Skipped  int64
	Duration time.Duration // wall time of the pass
	// Last is the position of the last version the pass finished with
	// (checked, reported or skipped), nil if none. Pass it as
	// ScrubConfig.Start to resume an interrupted pass after it.
	Last []byte
}

// Scrub checks every version held for bit rot: in index order, it re-reads
// each blob file whole, through one pooled buffer, and checks its length,
// its trailer and its value's checksum against the index, as Verify does.
// On Linux it first drops the file's clean pages from the page cache, so
// that the bytes checked come from the disk, not from memory, and drops
// them again after, so that a pass does not fill the cache with cold values.
//
// Scrub calls bad for every version whose file is missing, has the wrong
// length or contents (err wraps ErrCorrupt), or cannot be opened or read (err
// is the I/O error; it may be transient, so only ErrCorrupt is proof that the
// file is bad). bad runs on Scrub's goroutine, one call at a time, with no
// lock held: it may call any method of the Store, such as Quarantine. A nil
// bad only counts. A version deleted, quarantined or replaced while Scrub
// reads it is not reported: the index is checked again before a report.
//
// Scrub holds no lock while it reads or sleeps, so Puts, Gets and Deletes
// proceed; it sees the index in batches, like Iterate. It stops when ctx is
// done, also in the middle of a file or a sleep, and returns the stats so
// far with an error wrapping ctx.Err(); it returns ErrClosed if the store is
// closed meanwhile. Only index failures and those end a pass early: bad
// files do not.
func (s *Store) Scrub(ctx context.Context, cfg ScrubConfig, bad func(m Meta, err error)) (ScrubStats, error) {
	if err := cfg.Validate(); err != nil {
		return ScrubStats{}, err
	}
	clk := cfg.clock
	if clk == nil {
		clk = realClock{}
	}
	sc := scrubber{s: s, ctx: ctx, cfg: cfg, bad: bad, lim: newLimiter(cfg.Rate, clk)}
	began := clk.now()
	var from []byte
	if len(cfg.Start) > 0 {
		from = after(cfg.Start)
	}
	err := s.iterate(from, func(m Meta, _ record) bool { return sc.version(m) })
	// sc.err, if any, is why the callback stopped the iteration; ctx may
	// also have been cancelled after the last version.
	err = cmp.Or(err, sc.err, ctx.Err())
	sc.st.Duration = clk.now().Sub(began)
	if err != nil {
		return sc.st, fmt.Errorf("store: scrub: %w", err)
	}
	return sc.st, nil
}

// scrubber is the state of one Scrub pass.
type scrubber struct {
	s   *Store
	ctx context.Context
	cfg ScrubConfig
	bad func(Meta, error)
	lim *limiter
	st  ScrubStats
	err error // what stopped the pass
}

// version checks one version listed by the index; false stops the pass.
func (sc *scrubber) version(listed Meta) bool {
	if sc.err = sc.ctx.Err(); sc.err != nil {
		return false
	}
	m, reason, skip, err := sc.check(listed)
	if err != nil {
		// A read stopped by ctx proves nothing about the file: Last stays
		// before it, so a resumed pass checks it.
		sc.err = err
		return false
	}
	switch {
	case skip:
		sc.st.Skipped++
	case reason != nil:
		sc.st.Files++
		sc.st.Bad++
		if sc.bad != nil {
			sc.bad(m, opErr("scrub", m.Key, m.Version, reason))
		}
	default:
		sc.st.Files++
	}
	sc.st.Last = indexKey(listed.Key, listed.Version)
	return true
}

// check reads the file of a listed version. skip reports that the version
// went away or was replaced meanwhile; otherwise reason is why to report it
// (nil: healthy) and m its metadata. err ends the pass: the store was
// closed, the index failed or ctx is done.
func (sc *scrubber) check(listed Meta) (m Meta, reason error, skip bool, err error) {
	s := sc.s
	b, err := s.lookupBlob(listed.Key, listed.Version, true)
	switch {
	case err != nil:
		return Meta{}, nil, false, err
	case !b.held:
		return Meta{}, nil, true, nil
	case b.err != nil:
		// Found under the stripe lock, so the index and the file agreed on
		// it: the file is missing, of the wrong length or unopenable.
		return b.m, b.err, false, nil
	}
	defer b.f.Close()
	drop := func() {
		if b.r.packed() {
			dropRange(b.f, b.r.off, recLen(len(b.m.Key), b.m.Size))
		} else {
			dropCache(b.f)
		}
	}
	drop() // read the disk, not the page cache
	n, reason := s.checkFile(sc.ctx, b.f, b.m, b.r, sc.lim)
	drop() // and leave the cache to the clients
	sc.st.Bytes += n
	if err := sc.ctx.Err(); err != nil {
		return Meta{}, nil, false, err
	}
	if reason == nil {
		return b.m, nil, false, nil
	}
	if sc.cfg.afterRead != nil {
		sc.cfg.afterRead(b.m)
	}
	// The file was read without a lock: make sure it is still the one
	// indexed, not one deleted or replaced meanwhile.
	now, err := s.lookupBlob(listed.Key, listed.Version, false)
	switch {
	case err != nil:
		return Meta{}, nil, false, err
	case !now.held || !sameRecord(now.m, b.m) || now.r.seg != b.r.seg || now.r.off != b.r.off:
		return Meta{}, nil, true, nil
	case now.err != nil:
		return now.m, now.err, false, nil // it has gone missing since
	case !os.SameFile(now.fi, b.fi):
		return Meta{}, nil, true, nil
	}
	return b.m, reason, false, nil
}

func sameRecord(a, b Meta) bool {
	return a.Size == b.Size && a.Checksum == b.Checksum && a.ModTime.Equal(b.ModTime)
}

// blobState is what lookupBlob found for one (key, version).
type blobState struct {
	held bool        // the index holds the version; the rest is unset if not
	m    Meta        // the index's metadata
	r    record      // the index record
	f    *os.File    // the open file, if asked for and err is nil; the caller closes it
	fi   fs.FileInfo // of the file, if err is nil
	err  error       // why the file is unusable: wraps ErrCorrupt when missing or of the wrong length
}

// lookupBlob reads the index record of (key, version) and stats (or, with
// open, opens) its file, both under the version's stripe lock, so that they
// belong together: Put, Delete and Quarantine change a record and its file
// under that lock (and compaction only moves a packed value to a copy). It returns an error only if the store is closed or the
// index fails.
func (s *Store) lookupBlob(key []byte, version uint64, open bool) (blobState, error) {
	ik, mu, err := s.lockVersion(key, version)
	if err != nil {
		return blobState{}, err
	}
	defer s.unlockVersion(mu)
	for attempt := 0; ; attempt++ {
		r, ok, err := s.idx.get(ik)
		if err != nil {
			return blobState{}, fmt.Errorf("index: %w", err)
		}
		if !ok {
			return blobState{}, nil
		}
		b := blobState{held: true, m: r.meta(key, version), r: r}
		path, want := s.blobFile(key, version), r.size+trailerLen(len(key))
		if r.packed() {
			path, want = s.segPath(r.seg), r.valueOff(len(key))+r.size
		}
		if open {
			b.f, b.err = os.Open(path)
			if b.err == nil {
				b.fi, b.err = b.f.Stat()
			}
		} else {
			b.fi, b.err = os.Stat(path)
		}
		// Compaction moves packed values without the stripe (through the
		// log writer) and then removes their old segment: a missing
		// segment is only news if the index still points at it.
		if r.packed() && errors.Is(b.err, fs.ErrNotExist) && attempt < 3 {
			if now, ok, err := s.idx.get(ik); err == nil && ok && (now.seg != r.seg || now.off != r.off) {
				continue
			}
		}
		switch {
		case errors.Is(b.err, fs.ErrNotExist):
			b.err = fmt.Errorf("%w: indexed but its file is missing: %w", ErrCorrupt, b.err)
		case b.err == nil:
			if got := b.fi.Size(); got != want && !(r.packed() && got > want) {
				b.err = fmt.Errorf("%w: file %s has %d bytes, want %d", ErrCorrupt, path, got, want)
			}
		}
		if b.err != nil && b.f != nil {
			b.f.Close()
			b.f = nil
		}
		return b, nil
	}
}

// Quarantine takes (key, version) out of service because its value is bad:
// it moves the blob file into DIR/quarantine (a packed value is copied
// there as a blob file, from its segment), next to a small text file
// saying why (reason, key, version and time), and then removes the version
// from the index (a packed one with a tombstone in the log). Its bytes are
// thus kept for inspection, never served again, and not brought back by
// Rebuild. A quarantined file keeps its trailer: moving it back to
// DIR/blobs/ab (the first two characters of its name) under its original
// name (the part before the first '.') and calling Rebuild restores it.
//
// A version whose file is missing is only removed from the index. If the
// version is not indexed, Quarantine returns an error wrapping ErrNotFound,
// after moving an orphan file of it, if any, into quarantine all the same:
// so repeating a Quarantine that failed half-way finishes it.
//
// The file is moved (and the move made durable) before the index entry is
// removed, so a crash in between leaves an entry whose file is missing
// (Open and Verify report ErrCorrupt), or for a packed value an entry that
// the next Scrub finds bad again, never a bad file that Rebuild could
// index again.
func (s *Store) Quarantine(key []byte, version uint64, reason string) error {
	if err := checkKey(key); err != nil {
		return opErr("quarantine", key, version, err)
	}
	ik, mu, err := s.lockVersion(key, version)
	if err != nil {
		return opErr("quarantine", key, version, err)
	}
	defer s.unlockVersion(mu)
	r, held, err := s.idx.get(ik)
	if err != nil {
		return opErr("quarantine", key, version, fmt.Errorf("index: %w", err))
	}
	if held && r.packed() {
		if err := s.quarantineCopy(key, version, r, reason); err != nil {
			return opErr("quarantine", key, version, err)
		}
		if err := s.tombstone(ik, key, version, r, false); err != nil {
			return opErr("quarantine", key, version, fmt.Errorf("value copied into quarantine, but the index entry is left: %w", err))
		}
		return nil
	}
	if err := s.quarantineFile(key, version, reason); err != nil {
		return opErr("quarantine", key, version, err)
	}
	if !held {
		return opErr("quarantine", key, version, ErrNotFound)
	}
	if err := s.idx.delete(ik); err != nil {
		return opErr("quarantine", key, version, fmt.Errorf("file quarantined, but the index entry is left: %w", noSpace(err)))
	}
	s.forget(ik, r)
	return nil
}

// quarantineTimeFormat stamps quarantined files; it sorts by time.
const quarantineTimeFormat = "20060102T150405.000000000Z"

// quarantineFile moves the blob file of (key, version), if there is one,
// into DIR/quarantine as NAME.TIME (plus .N in the unlikely case that name
// is taken), with NAME.TIME.reason beside it. The caller holds the stripe.
func (s *Store) quarantineFile(key []byte, version uint64, reason string) error {
	src := s.blobFile(key, version)
	if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	rel, _ := filepath.Rel(s.blobsDir, src)
	err := s.quarantineInto(key, version, reason, rel, func(dst string) error {
		if err := os.Rename(src, dst); err != nil {
			return fmt.Errorf("move blob file into quarantine: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The file must be gone from DIR/blobs for good before the index
	// forgets it, or Rebuild could index it again.
	return s.syncDir(filepath.Dir(src))
}

// quarantineCopy writes the packed value r of (key, version) into
// DIR/quarantine as a blob file, value then trailer (from the index), as
// quarantineFile would have moved it. A missing segment leaves nothing to
// copy. The caller holds the stripe.
func (s *Store) quarantineCopy(key []byte, version uint64, r record, reason string) error {
	seg, err := os.Open(s.segPath(r.seg))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer seg.Close()
	where := fmt.Sprintf("%s at offset %d (packed)", filepath.Join("segments", segName(r.seg)), r.off)
	return s.quarantineInto(key, version, reason, where, func(dst string) error {
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("create quarantine copy: %w", noSpace(err))
		}
		_, err = io.Copy(f, io.NewSectionReader(seg, r.valueOff(len(key)), r.size))
		if err == nil {
			_, err = f.Write(appendTrailer(nil, trailer{key: key, version: version, size: r.size, checksum: r.checksum, modNanos: r.modNanos}))
		}
		if err == nil && !s.cfg.NoSync {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
			return fmt.Errorf("write quarantine copy: %w", noSpace(err))
		}
		return nil
	})
}

// quarantineInto picks a free name NAME.TIME in DIR/quarantine, writes the
// note NAME.TIME.reason, has place put the bytes at that name and makes
// both durable. from says where the bytes were, for the note.
func (s *Store) quarantineInto(key []byte, version uint64, reason, from string, place func(dst string) error) error {
	now := time.Now().UTC()
	base := filepath.Join(s.quarantineDir, blobName(key, version)+"."+now.Format(quarantineTimeFormat))
	dst := base
	var note *os.File
	for i := 1; ; i++ {
		// The stripe serialises quarantines of one version and names of
		// different versions differ, so this loops only if the clock
		// repeats itself.
		var err error
		if _, err = os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			note, err = os.OpenFile(dst+".reason", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err == nil {
				break
			}
		}
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create quarantine note: %w", noSpace(err))
		}
		dst = fmt.Sprintf("%s.%d", base, i)
	}
	_, err := fmt.Fprintf(note, "key: %q\nversion: %d\nfile: %s\nquarantined: %s\nreason: %s\n",
		key, version, from, now.Format(time.RFC3339Nano), reason)
	if err == nil && !s.cfg.NoSync {
		err = note.Sync()
	}
	if cerr := note.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(note.Name())
		return fmt.Errorf("write quarantine note: %w", noSpace(err))
	}
	if err := place(dst); err != nil {
		os.Remove(note.Name())
		return err
	}
	return s.syncDir(s.quarantineDir)
}

// clock is the time source of a Scrub's pacing.
type clock interface {
	now() time.Time
	// sleep waits for d, or until ctx is done, then returning ctx.Err().
	sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) now() time.Time { return time.Now() }

func (realClock) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// limiter paces reads to rate bytes per second. It keeps the time at which
// the bytes charged so far are due and, after each read, sleeps until then.
// The time a read took counts towards its own budget, but no more: a chunk
// that took longer than its budget (a slow disk, a slow bad callback before
// it) leaves no credit behind, so the pace resumes without a burst to catch
// up. A nil *limiter does not limit.
type limiter struct {
	rate uint64 // bytes per second, > 0
	clk  clock
	due  time.Time // when the bytes charged so far may have been read
	rem  uint64    // remainder of bytes×1e9 / rate, carried so no nanosecond is lost
}

func newLimiter(rate int64, clk clock) *limiter {
	if rate <= 0 {
		return nil
	}
	// due starts now, not at the zero time, which would give the first
	// chunk a free pass.
	return &limiter{rate: uint64(rate), clk: clk, due: clk.now()}
}

// A paced Scrub reads about a quarter of a second's worth of its rate
// between two sleeps, so the disk sees a steady trickle rather than one
// burst per second; but at least minScrubChunk bytes, below which reads get
// inefficient, and at most the pooled buffer.
const minScrubChunk = 64 << 10

// chunk returns how many bytes to read at once, at most limit.
func (l *limiter) chunk(limit int) int {
	if l == nil || l.rate/4 >= uint64(limit) {
		return limit
	}
	return min(limit, max(int(l.rate/4), minScrubChunk))
}

// wait charges n bytes just read and sleeps until they are due.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return nil
	}
	// n is at most one buffer (bufSize) and rem < rate, so this cannot
	// overflow a uint64.
	ns := uint64(n)*uint64(time.Second) + l.rem
	budget := time.Duration(ns / l.rate)
	l.rem = ns % l.rate
	now := l.clk.now()
	if earliest := now.Add(-budget); l.due.Before(earliest) {
		l.due = earliest
	}
	l.due = l.due.Add(budget)
	if d := l.due.Sub(now); d > 0 {
		return l.clk.sleep(ctx, d)
	}
	return nil
}
