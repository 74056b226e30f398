package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// OrphanKind says on which side of the store an Orphan is missing.
type OrphanKind int

const (
	// UnindexedFile is a file under DIR/blobs that no index entry
	// describes: a blob left by a crash between a Put's rename and its
	// index write, or by a lost index record, or something that is not a
	// blob at all. It is also a packed value (a put record in a segment)
	// that is neither indexed nor deleted by a tombstone, a file under
	// DIR/segments that is not a segment, or a segment whose header is bad.
	UnindexedFile OrphanKind = iota + 1
	// MissingFile is an index entry whose blob file (or, for a packed
	// value, segment file) does not exist or is too short.
	MissingFile
)

// String returns "unindexed file" or "missing file".
func (k OrphanKind) String() string {
	switch k {
	case UnindexedFile:
		return "unindexed file"
	case MissingFile:
		return "missing file"
	}
	return fmt.Sprintf("OrphanKind(%d)", int(k))
}

// Orphan is one disagreement between DIR/blobs and the index, found by
// Orphans.
type Orphan struct {
	Kind OrphanKind
	// Path is the file's path under DIR/blobs; for a MissingFile, the path
	// where the file should be. For a packed value it is the path of its
	// segment file, followed by "@" and the offset of its record when the
	// record was found.
	Path string
	// Meta describes the version: from the index for a MissingFile, from
	// the file's trailer for an UnindexedFile. Its Key is nil when the
	// trailer cannot be read (Err says why).
	Meta Meta
	// Err, for an UnindexedFile, is why Rebuild would not index it either:
	// a bad trailer or a name that does not match it (both wrap
	// ErrCorrupt), or an entry that does not belong in DIR/blobs at all.
	// It is nil for a valid blob, which Rebuild would index and Delete or
	// Quarantine of its version removes, and for a MissingFile.
	Err error
}

// Orphans calls fn for every disagreement between the blob files and the
// index, until fn returns false: first each index entry whose file is
// missing (MissingFile, in index order), then each file or directory under
// DIR/blobs that no index entry describes, then each packed value in the
// segments that is neither indexed nor deleted (UnindexedFile). Deleted
// packed values waiting for compaction, and the copies compaction leaves
// behind, are garbage, not orphans. It is what a
// consistency check reports besides the bad files that Scrub finds. Delete
// or Quarantine clears a MissingFile; a valid UnindexedFile is indexed by
// Rebuild or removed by Delete of its version; any other has to be removed
// by hand.
//
// Each candidate is confirmed under the version's lock, so versions being
// written or deleted meanwhile are not reported. Orphans reads every
// file's trailer (one small read each) but no value of a blob file, reads
// the segments whole (twice: tombstones first), and holds no lock while
// reading or calling fn; fn may call the Store. It returns ctx's error
// (wrapped) when ctx is done, and ErrClosed if the store is closed
// meanwhile.
func (s *Store) Orphans(ctx context.Context, fn func(Orphan) bool) error {
	w := orphanWalk{s: s, ctx: ctx, fn: fn}
	err := w.missing()
	if err == nil && !w.stopped {
		if err = w.unindexed(); errors.Is(err, errStopped) {
			err = nil
		}
	}
	if err == nil && !w.stopped {
		err = w.segments()
	}
	if err != nil {
		return fmt.Errorf("store: orphans: %w", err)
	}
	return nil
}

type orphanWalk struct {
	s       *Store
	ctx     context.Context
	fn      func(Orphan) bool
	stopped bool // fn returned false
	tail    [maxTrailerLen]byte
}

func (w *orphanWalk) report(o Orphan) {
	if !w.fn(o) {
		w.stopped = true
	}
}

// missing reports the index entries whose file is missing.
func (w *orphanWalk) missing() error {
	var err error
	segSize := make(map[uint64]int64) // -1: missing
	ierr := w.s.iterate(nil, func(m Meta, r record) bool {
		if err = w.ctx.Err(); err != nil {
			return false
		}
		path := w.s.blobFile(m.Key, m.Version)
		if r.packed() {
			path = w.s.segPath(r.seg)
			size, ok := segSize[r.seg]
			if !ok {
				size = -1
				if fi, serr := os.Stat(path); serr == nil {
					size = fi.Size()
				}
				segSize[r.seg] = size
			}
			if size >= r.valueOff(len(m.Key))+r.size {
				return true
			}
			delete(segSize, r.seg) // look again next time
		} else if _, serr := os.Stat(path); !errors.Is(serr, fs.ErrNotExist) {
			return true
		}
		// Confirm under the lock: a Delete removes the entry first, and
		// compaction moves packed values.
		var b blobState
		if b, err = w.s.lookupBlob(m.Key, m.Version, false); err != nil {
			return false
		}
		if b.held && errors.Is(b.err, ErrCorrupt) && (errors.Is(b.err, fs.ErrNotExist) || b.r.packed()) {
			p := w.s.blobFile(m.Key, m.Version)
			if b.r.packed() {
				p = w.s.segPath(b.r.seg)
			}
			w.report(Orphan{Kind: MissingFile, Path: p, Meta: b.m})
		}
		return !w.stopped
	})
	if ierr != nil {
		return ierr
	}
	return err
}

// unindexed walks DIR/blobs and reports what is not indexed.
func (w *orphanWalk) unindexed() error {
	return walkBlobs(w.s.blobsDir, readDir, func(path string) bool {
		w.report(Orphan{Kind: UnindexedFile, Path: path, Err: errors.New("not a blob directory")})
		return !w.stopped
	}, func(path, prefix string, _ fs.DirEntry) error {
		if err := w.file(path, prefix); err != nil || w.stopped {
			return cmp.Or(err, errStopped)
		}
		return nil
	})
}

var errStopped = errors.New("stopped")

// file checks one entry of a blob directory whose name (or names) make
// prefix.
func (w *orphanWalk) file(path, prefix string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if w.s.closing.Load() {
		return ErrClosed
	}
	t, err := readTrailer(path, &w.tail)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // deleted since the directory was read
	}
	if err != nil {
		w.report(Orphan{Kind: UnindexedFile, Path: path, Err: err})
		return nil
	}
	m := record{size: t.size, checksum: t.checksum, modNanos: t.modNanos}.meta(t.key, t.version) // copies the key
	if name := blobName(t.key, t.version); name != filepath.Base(path) || !strings.HasPrefix(name, prefix) {
		w.report(Orphan{Kind: UnindexedFile, Path: path, Meta: m,
			Err: fmt.Errorf("%w: trailer names %q v%d, which belongs in %s", ErrCorrupt, t.key, t.version, blobRel(name))})
		return nil
	}
	orphan, err := w.s.unindexed(m.Key, m.Version)
	if err != nil {
		return err
	}
	if orphan {
		w.report(Orphan{Kind: UnindexedFile, Path: path, Meta: m})
	}
	return nil
}

// unindexed reports whether the file of (key, version) exists while the
// index does not hold the version, both looked at under the version's lock,
// so that a Put between its rename and its index write is not caught in
// the middle.
func (s *Store) unindexed(key []byte, version uint64) (bool, error) {
	ik, mu, err := s.lockVersion(key, version)
	if err != nil {
		return false, err
	}
	defer s.unlockVersion(mu)
	_, held, err := s.idx.get(ik)
	if err != nil {
		return false, fmt.Errorf("index: %w", err)
	}
	if held || s.bg.queued(ik) {
		return false, nil
	}
	_, err = os.Lstat(s.blobFile(key, version))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// readDir is os.ReadDir, but a directory removed meanwhile is empty.
func readDir(dir string) ([]fs.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return ents, err
}

// segments reports what in DIR/segments the index does not account for:
// files that are not segments, and packed values neither indexed nor
// deleted. A first pass finds the puts that are not indexed; a second,
// started after, looks for tombstones deleting them: a Delete appends its
// tombstone before it unindexes, so the second pass sees the tombstone of
// any version the first found unindexed. Compaction waits meanwhile, so
// that no segment changes between the passes.
func (w *orphanWalk) segments() error {
	s := w.s
	type cand struct {
		o   Orphan
		ik  string
		lsn uint64
	}
	var cands []cand
	err := func() error {
		s.compactMu.Lock()
		defer s.compactMu.Unlock()
		buf := make([]byte, scanBufLen)
		var ferr error
		err := w.eachSegment(true, buf, func(path string, r *scanned) bool {
			if r.typ != recPut || r.bad != nil {
				return true
			}
			orphan, err := s.unindexedPacked(r.key, r.version, r.lsn)
			if err != nil {
				ferr = err
				return false
			}
			if orphan {
				m := record{size: r.size, checksum: r.checksum, modNanos: r.modNanos}.meta(r.key, r.version)
				cands = append(cands, cand{
					o:  Orphan{Kind: UnindexedFile, Path: fmt.Sprintf("%s@%d", path, r.off), Meta: m},
					ik: string(indexKey(r.key, r.version)), lsn: r.lsn,
				})
			}
			return true
		})
		if err = cmp.Or(err, ferr); err != nil || w.stopped || len(cands) == 0 {
			return err
		}
		tombs := make(map[string]uint64, len(cands))
		for _, c := range cands {
			tombs[c.ik] = 0
		}
		err = w.eachSegment(false, buf, func(_ string, r *scanned) bool {
			if r.typ == recDelete {
				ik := string(indexKey(r.key, r.version))
				if t, ok := tombs[ik]; ok {
					tombs[ik] = max(t, r.lsn)
				}
			}
			return true
		})
		if err != nil {
			return err
		}
		for i := range cands {
			if tombs[cands[i].ik] > cands[i].lsn {
				cands[i].ik = "" // deleted: garbage for compaction
			}
		}
		return nil
	}()
	if err != nil {
		return err
	}
	for _, c := range cands {
		if c.ik == "" {
			continue
		}
		if w.report(c.o); w.stopped {
			return nil
		}
	}
	return nil
}

// eachSegment scans every segment file, calling fn for each record. With
// report, it also reports the files that are not segments.
func (w *orphanWalk) eachSegment(report bool, buf []byte, fn func(path string, r *scanned) bool) error {
	s := w.s
	ents, err := readDir(s.segsDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		path := filepath.Join(s.segsDir, e.Name())
		seq, ok := parseSegName(e.Name())
		if !ok {
			if report {
				w.report(Orphan{Kind: UnindexedFile, Path: path, Err: errors.New("not a segment file")})
			}
			if w.stopped {
				return nil
			}
			continue
		}
		si, err := openSegment(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil && s.segs.isMaking(seq) {
			// The log writer is creating it: its header is not written yet.
			continue
		}
		if err != nil {
			if report {
				w.report(Orphan{Kind: UnindexedFile, Path: path, Err: err})
			}
			if w.stopped {
				return nil
			}
			continue
		}
		if err := w.ctx.Err(); err != nil {
			return err
		}
		if s.closing.Load() {
			return ErrClosed
		}
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		var stop bool
		err = scanSegment(f, si.end, buf, func(r *scanned) bool {
			if !fn(path, r) || w.stopped {
				stop = true
				return false
			}
			return true
		})
		f.Close()
		if err != nil || stop {
			return err
		}
	}
	return nil
}

// unindexedPacked reports whether the put with LSN lsn of (key, version)
// is not in the index, neither that put nor a newer one, looked at under
// the version's lock (a Put's record is durable in the log a moment
// before it is indexed).
func (s *Store) unindexedPacked(key []byte, version, lsn uint64) (bool, error) {
	ik, mu, err := s.lockVersion(key, version)
	if err != nil {
		return false, err
	}
	defer s.unlockVersion(mu)
	r, held, err := s.idx.get(ik)
	if err != nil {
		return false, fmt.Errorf("index: %w", err)
	}
	return !held || (r.packed() && r.lsn < lsn), nil
}
