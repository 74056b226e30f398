package store

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"time"
)

// background runs what Put and Delete leave for later: removing the blob
// files of deleted versions, and compacting segments. Both goroutines
// start with the Store and stop at Close, before Close waits for the
// index.
type background struct {
	s        *Store
	quit     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu      sync.Mutex
	unlinks []versionRef   // blob files to remove once their version is unindexed
	pending map[string]int // index keys of the versions in unlinks, until removed
	kick    chan struct{}
}

type versionRef struct {
	key     []byte
	version uint64
}

func (b *background) start(s *Store) {
	b.s = s
	b.quit = make(chan struct{})
	b.kick = make(chan struct{}, 1)
	b.wg.Add(2)
	go b.unlinkLoop()
	go b.compactLoop()
}

// stop ends both goroutines, removing the files still queued first. It is
// safe to call more than once.
func (b *background) stop() {
	b.stopOnce.Do(func() {
		if b.quit == nil { // never started: Open failed
			return
		}
		close(b.quit)
		b.wg.Wait()
	})
}

// unlink queues the blob file of a deleted version for removal.
func (b *background) unlink(key []byte, version uint64) {
	b.mu.Lock()
	b.unlinks = append(b.unlinks, versionRef{key: append([]byte(nil), key...), version: version})
	if b.pending == nil {
		b.pending = make(map[string]int)
	}
	b.pending[string(indexKey(key, version))]++
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *background) unlinkLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.kick:
			b.removeQueued()
		case <-b.quit:
			b.removeQueued()
			return
		}
	}
}

// removeQueued removes the queued files whose versions are still not
// indexed: a Put of the same version since has renamed a new file into
// the same path, which must stay.
func (b *background) removeQueued() {
	b.mu.Lock()
	q := b.unlinks
	b.unlinks = nil
	b.mu.Unlock()
	for _, v := range q {
		ik, mu, err := b.s.lockVersion(v.key, v.version)
		if err != nil {
			return // closed: the files stay as orphans, as after a crash
		}
		if _, held, err := b.s.idx.get(ik); err == nil && !held {
			_ = b.s.removeBlobFile(v.key, v.version)
		}
		b.done(ik)
		b.s.unlockVersion(mu)
	}
}

func (b *background) done(ik []byte) {
	b.mu.Lock()
	if b.pending[string(ik)]--; b.pending[string(ik)] <= 0 {
		delete(b.pending, string(ik))
	}
	b.mu.Unlock()
}

// queued reports whether the blob file of ik waits to be removed. The
// caller holds the version's stripe, as removeQueued does.
func (b *background) queued(ik []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending[string(ik)] > 0
}

func (b *background) compactLoop() {
	defer b.wg.Done()
	s := b.s
	if s.cfg.CompactRate < 0 {
		<-b.quit
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-b.quit
		cancel()
	}()
	t := time.NewTicker(s.cfg.compactEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if err := s.compact(ctx, newLimiter(s.cfg.CompactRate, realClock{})); err != nil &&
			!errors.Is(err, ErrClosed) && ctx.Err() == nil {
			s.log.Warn("store: compaction failed", "dir", s.dir, "err", err)
		}
	}
}

// Compaction. A sealed segment whose bytes are at least compactGarbage
// garbage (records of deleted versions, tombstones, zeros) is rewritten:
// its live records are copied, with their LSNs, into a new segment of kind
// compacted, with the tombstones that are still needed; once that is
// durable the index entries are switched to the copies (through the log
// writer, which re-checks that each entry still points at the original),
// and the old segment is removed. Readers that opened the old file keep
// reading it (Linux keeps an unlinked file's data while it is open); a
// reader between its index lookup and its open retries (see open).
// Several mostly-empty segments are merged into one output, up to
// SegmentSize. Compaction runs in the background, paced at CompactRate,
// and never holds a lock while it copies: writes go on meanwhile.

const compactGarbage = 0.5

// compact runs compaction passes until no segment needs one, or ctx is
// done. lim, if not nil, paces the bytes read and written.
func (s *Store) compact(ctx context.Context, lim *limiter) error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	for {
		srcs := s.pickCompaction()
		if len(srcs) == 0 {
			return nil
		}
		if err := s.compactSegments(ctx, srcs, lim); err != nil {
			return err
		}
	}
}

// pickCompaction chooses the sealed segments to compact together: the
// ones that are at least compactGarbage garbage, most garbage first, as
// many as fit in one segment.
func (s *Store) pickCompaction() []segState {
	s.segs.mu.Lock()
	defer s.segs.mu.Unlock()
	var cands []segState
	for _, g := range s.segs.m {
		if !g.active && g.size > segHeaderLen && float64(g.garbage()) >= compactGarbage*float64(g.size) {
			cands = append(cands, *g)
		}
	}
	slices.SortFunc(cands, func(a, b segState) int {
		return cmp.Or(cmp.Compare(b.garbage(), a.garbage()), cmp.Compare(a.seq, b.seq))
	})
	// The output holds the live records (at most a segment's worth) and
	// the tombstones still needed, so at most the sources' size: keep that
	// under 3 GiB, for offsets to fit in 32 bits.
	var out []segState
	var live, size int64
	for _, g := range cands {
		if len(out) > 0 && (live+g.live > s.cfg.SegmentSize-segHeaderLen-segFooterLen || size+g.size > 3<<30) {
			continue
		}
		out = append(out, g)
		live += g.live
		size += g.size
	}
	return out
}

// compactSegments rewrites srcs into one new segment and removes them.
func (s *Store) compactSegments(ctx context.Context, srcs []segState, lim *limiter) (err error) {
	seq := s.segs.alloc()
	if err := s.saveNextSeq(); err != nil {
		return err
	}
	path := s.segPath(seq)
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("compact: create segment: %w", noSpace(err))
	}
	keep := false
	defer func() {
		if out != nil {
			out.Close()
		}
		if !keep {
			os.Remove(path)
		}
	}()
	bw := bufio.NewWriterSize(out, 1<<20)
	bw.Write(appendSegHeader(nil, segKindCompact, seq))
	off := int64(segHeaderLen)

	var moves []switchItem
	births := make(map[uint64]bool)
	type tomb struct {
		raw     []byte
		home    uint64 // the segment it was found in
		target  uint64
		key     []byte
		version uint64
	}
	var tombs []tomb
	buf := make([]byte, scanBufLen)
	for _, src := range srcs {
		f, err := os.Open(s.segPath(src.seq))
		if err != nil {
			return fmt.Errorf("compact: %w", err)
		}
		var ferr error
		serr := scanSegment(f, src.end, buf, func(sc *scanned) bool {
			if ferr = ctx.Err(); ferr != nil {
				return false
			}
			rec := sc.rec
			if err := lim.wait(ctx, len(rec)); err != nil {
				ferr = err
				return false
			}
			switch sc.typ {
			case recDelete:
				raw := slices.Clone(rec)
				tombs = append(tombs, tomb{raw: raw, home: src.seq, target: sc.target,
					key: raw[recHeaderLen : recHeaderLen+len(sc.key)], version: sc.version})
			case recPut:
				ik := indexKey(sc.key, sc.version)
				if err := s.rlock(); err != nil {
					ferr = err
					return false
				}
				cur, ok, err := s.idx.get(ik)
				s.mu.RUnlock()
				if err != nil {
					ferr = fmt.Errorf("index: %w", err)
					return false
				}
				if !ok || cur.seg != src.seq || cur.off != sc.off || cur.lsn != sc.lsn {
					return true // garbage
				}
				if _, err := bw.Write(rec); err != nil {
					ferr = fmt.Errorf("compact: write: %w", noSpace(err))
					return false
				}
				to := cur
				to.seg, to.off = seq, off
				moves = append(moves, switchItem{ik: ik, from: cur, to: to})
				births[birthOf(sc.lsn)] = true
				off += int64(len(rec))
			}
			return true
		})
		f.Close()
		if err := cmp.Or(ferr, serr); err != nil {
			return err
		}
	}
	// A tombstone is kept while a segment other than its own (the output
	// included) may hold a record born where the put it deletes was born.
	var pinned int64
	for _, t := range tombs {
		if t.target == 0 {
			// A blob file's: kept while a file of that version exists.
			if _, err := os.Lstat(s.blobFile(t.key, t.version)); errors.Is(err, fs.ErrNotExist) {
				continue
			}
		} else if !births[t.target] && !s.segs.holdsBirth(t.target, t.home) {
			continue
		}
		if _, err := bw.Write(t.raw); err != nil {
			return fmt.Errorf("compact: write: %w", noSpace(err))
		}
		off += int64(len(t.raw))
		pinned += int64(len(t.raw))
	}
	blist := make([]uint64, 0, len(births))
	for b := range births {
		blist = append(blist, b)
	}
	slices.Sort(blist)
	if len(moves) > 0 || pinned > 0 {
		if _, err := bw.Write(encodeFooter(blist, off)); err != nil {
			return fmt.Errorf("compact: write: %w", noSpace(err))
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("compact: write: %w", noSpace(err))
		}
		if !s.cfg.NoSync {
			if err := out.Sync(); err != nil {
				return fmt.Errorf("compact: fsync: %w", noSpace(err))
			}
		}
		if err := out.Close(); err != nil {
			return fmt.Errorf("compact: close: %w", noSpace(err))
		}
		out = nil
		if err := s.syncDir(s.segsDir); err != nil {
			return err
		}
		keep = true
		s.segs.add(&segState{seq: seq, kind: segKindCompact, size: off + int64(8*len(blist)) + segFooterLen,
			end: off, live: pinned, births: blist})
	}

	// Switch the index to the copies, a chunk per commit so that writes
	// are held up for a moment only.
	const chunk = 512
	for i := 0; i < len(moves); i += chunk {
		if err := s.rlock(); err != nil {
			return err
		}
		req := s.w.get()
		req.op, req.sw = opSwitch, moves[i:min(i+chunk, len(moves))]
		err := s.w.submit(req)
		s.w.put(req)
		s.mu.RUnlock()
		if err != nil {
			return fmt.Errorf("compact: %w", err)
		}
	}
	// Once the switches are durable the originals can go.
	if err := s.rlock(); err != nil {
		return err
	}
	err = s.idx.barrier()
	s.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("compact: index: %w", noSpace(err))
	}
	for _, src := range srcs {
		if err := os.Remove(s.segPath(src.seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("compact: remove segment: %w", err)
		}
		s.segs.mu.Lock()
		s.segs.forget(src.seq)
		s.segs.mu.Unlock()
	}
	return s.syncDir(s.segsDir)
}
