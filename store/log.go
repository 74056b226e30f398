package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/syndtr/goleveldb/leveldb"
)

// The log writer: one goroutine appends the records of every packed Put
// and every Delete waiting at the moment (group commit), makes them
// durable with one fdatasync, then writes their index changes in one
// goleveldb batch, and only then answers them. That index write is not
// synced: it carries the log checkpoint (the log position it brings the
// index up to), and Open replays the log records past the checkpoint, so
// the log is the index's write-ahead log. Concurrent writers thus share
// one fsync per batch instead of paying four or five each. There is no
// timer: a batch is whatever queued up while the previous one was being
// synced, so a lone writer pays no extra latency.

const (
	opPut = iota + 1
	opDelete
	opSwitch // compaction moves records; always committed alone
	opSync   // no record: makes every record appended so far durable

	maxBatchReqs  = 256     // records per commit; well under IOV_MAX
	maxBatchBytes = 4 << 20 // bytes per commit
	zeroChunk     = 2 << 20 // log segments are zeroed this far ahead ...
	zeroLowWater  = 1 << 20 // ... once fewer than this many zeroed bytes are left
)

// logReq is one request to the log writer. The requester holds the stripe
// lock of ik (and the store's read lock) until done is closed, so no two
// requests for one (key, version) are ever in flight together.
type logReq struct {
	op  byte
	ik  []byte
	buf []byte // the encoded record, LSN and CRC left for the writer; nil for opSwitch
	rec record // opPut: the index record; the writer sets its location
	// lazy, for opDelete, lets the commit skip the fdatasync when no
	// request in its batch needs one: the tombstone is durable after the
	// next synced commit or opSync (Store.DeleteNoSync).
	lazy bool
	sw   []switchItem
	// was, for opDelete, is the record the delete removed, as the writer
	// found it, if wasHeld.
	was     record
	wasHeld bool
	err     error
	done    chan struct{}
}

// switchItem moves the index entry ik from one location to another, if it
// is still at from (same segment, offset and LSN).
type switchItem struct {
	ik       []byte
	from, to record
}

// segState is the store's view of one segment.
type segState struct {
	seq    uint64
	kind   byte
	size   int64    // bytes the segment takes on disk
	end    int64    // where its records end: size, or a compacted segment's footer
	live   int64    // bytes of the records of indexed values (and of a compacted segment's tombstones)
	births []uint64 // sorted birth sequences of the puts it may hold
	active bool     // being appended to
	// incomplete marks a compacted segment without a valid footer: one a
	// compaction was writing when the process died (removed at Open if
	// nothing in the index points into it), or one whose footer rotted.
	// Its births are unknown: it may hold any.
	incomplete bool
}

func (g *segState) garbage() int64 { return max(g.size-g.live, 0) }

// segSet is the set of segments; its mutex guards the map and the states.
type segSet struct {
	saveMu sync.Mutex // serialises saveNextSeq
	mu     sync.Mutex
	m      map[uint64]*segState
	next   uint64 // the next sequence number: above every one ever used
	// making holds the log segments being created: each one's file may
	// exist before its header does, until add registers it.
	making map[uint64]bool
	// files holds read-only descriptors of segments for small reads
	// (lookup), at most maxSegFiles; one is closed when its segment is
	// removed.
	files map[uint64]*os.File
}

// maxSegFiles bounds the segment descriptors kept open for reads.
const maxSegFiles = 64

// forget removes segment seq from the set and closes its read descriptor.
// The caller holds mu.
func (ss *segSet) forget(seq uint64) {
	delete(ss.m, seq)
	if f := ss.files[seq]; f != nil {
		f.Close()
		delete(ss.files, seq)
	}
}

// closeFiles closes every cached read descriptor.
func (ss *segSet) closeFiles() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for seq, f := range ss.files {
		f.Close()
		delete(ss.files, seq)
	}
}

// segFile returns a read descriptor of segment seq, opened once and kept.
// A reader may find it closed (os.ErrClosed) if the segment is removed or
// the descriptor evicted meanwhile: it looks the value up again.
func (s *Store) segFile(seq uint64) (*os.File, error) {
	s.segs.mu.Lock()
	f := s.segs.files[seq]
	s.segs.mu.Unlock()
	if f != nil {
		return f, nil
	}
	f, err := os.Open(s.segPath(seq))
	if err != nil {
		return nil, err
	}
	s.segs.mu.Lock()
	defer s.segs.mu.Unlock()
	if _, live := s.segs.m[seq]; !live {
		f.Close() // removed meanwhile
		return nil, fs.ErrNotExist
	}
	if g := s.segs.files[seq]; g != nil {
		f.Close()
		return g, nil
	}
	if s.segs.files == nil {
		s.segs.files = make(map[uint64]*os.File)
	}
	if len(s.segs.files) >= maxSegFiles {
		for old, g := range s.segs.files { // evict one, any
			g.Close()
			delete(s.segs.files, old)
			break
		}
	}
	s.segs.files[seq] = f
	return f, nil
}

func (ss *segSet) alloc() uint64 {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	seq := ss.next
	ss.next++
	return seq
}

// allocMaking allocates the sequence number of a log segment about to be
// created; it is in the making (isMaking) until add registers it or
// made gives it up.
func (ss *segSet) allocMaking() uint64 {
	seq := ss.alloc()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.making == nil {
		ss.making = make(map[uint64]bool)
	}
	ss.making[seq] = true
	return seq
}

// made ends segment seq's making without registering it (its creation
// failed and its file is removed).
func (ss *segSet) made(seq uint64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.making, seq)
}

// isMaking reports whether segment seq is being created: a scan that finds
// its file without a header yet must not take it for a damaged one.
func (ss *segSet) isMaking(seq uint64) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.making[seq]
}

func (ss *segSet) add(g *segState) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if g.end == 0 {
		g.end = g.size
	}
	ss.m[g.seq] = g
	delete(ss.making, g.seq)
	if g.seq >= ss.next {
		ss.next = g.seq + 1
	}
}

// adjust adds delta live bytes to segment seq, if it is known.
func (ss *segSet) adjust(seq uint64, delta int64) {
	ss.mu.Lock()
	if g := ss.m[seq]; g != nil {
		g.live += delta
	}
	ss.mu.Unlock()
}

// holdsBirth reports whether a segment other than those in except may hold
// a record born in segment birth.
func (ss *segSet) holdsBirth(birth uint64, except ...uint64) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for seq, g := range ss.m {
		if slices.Contains(except, seq) {
			continue
		}
		if _, ok := slices.BinarySearch(g.births, birth); ok || g.incomplete {
			return true
		}
	}
	return false
}

func (s *Store) segPath(seq uint64) string { return filepath.Join(s.segsDir, segName(seq)) }

type logWriter struct {
	s    *Store
	reqs chan *logReq
	quit chan struct{}
	done chan struct{}
	pool sync.Pool // of *logReq

	// Owned by the run goroutine.
	f      *os.File // the active segment; nil until the first record
	seq    uint64
	end    int64 // where the next record goes
	broken bool  // a write or fsync failed: the next record starts a new segment
	// dirty: records were written to the active segment since its last
	// fdatasync (lazy tombstones only).
	dirty bool
	// lazyErr is the failure of an fdatasync that had lazy tombstones to
	// make durable: they may be lost, so every later opSync reports it.
	lazyErr error
	carry   *logReq
	iov     [][]byte
	group   []*logReq
	lb      leveldb.Batch
	z       zeroer
	// skipIndex makes commits stop after the fdatasync, as if the process
	// died there: tests check that Open replays the log.
	skipIndex atomic.Bool
}

func newLogWriter(s *Store) *logWriter {
	w := &logWriter{s: s, reqs: make(chan *logReq, maxBatchReqs), quit: make(chan struct{}), done: make(chan struct{})}
	w.pool.New = func() any { return &logReq{done: make(chan struct{}, 1)} }
	w.z.cond.L = &w.z.mu
	go w.run()
	return w
}

func (w *logWriter) get() *logReq {
	r := w.pool.Get().(*logReq)
	return r
}

func (w *logWriter) put(r *logReq) {
	done := r.done
	*r = logReq{done: done}
	w.pool.Put(r)
}

// submit hands r to the writer and waits for its commit. The caller holds
// the store's read lock, so the writer, which Close stops only once it has
// the write lock, is running.
func (w *logWriter) submit(r *logReq) error {
	w.reqs <- r
	<-r.done
	return r.err
}

// sync makes every record appended so far durable. The caller holds the
// store's read lock, as for submit.
func (w *logWriter) sync() error {
	r := w.get()
	r.op = opSync
	err := w.submit(r)
	w.put(r)
	return err
}

// stop ends the writer once no request is in flight, and closes the active
// segment, cutting off the zeros past its last record.
func (w *logWriter) stop() error {
	close(w.quit)
	<-w.done
	w.z.reset(nil, 0, 0)
	if w.f == nil {
		return nil
	}
	err := w.syncDirty()
	if !w.broken && err == nil {
		err = w.f.Truncate(w.end)
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	w.s.segs.mu.Lock()
	if g := w.s.segs.m[w.seq]; g != nil {
		g.active = false
		if !w.broken {
			g.size, g.end = w.end, w.end
		}
	}
	w.s.segs.mu.Unlock()
	return err
}

func (w *logWriter) run() {
	defer close(w.done)
	batch := make([]*logReq, 0, maxBatchReqs)
	for {
		var first *logReq
		if w.carry != nil {
			first, w.carry = w.carry, nil
		} else {
			select {
			case first = <-w.reqs:
			case <-w.quit:
				return
			}
		}
		batch = append(batch[:0], first)
		if first.op != opSwitch {
			// Let writers that are runnable here queue their records
			// first, to share this commit's fdatasync.
			runtime.Gosched()
			n := len(first.buf)
		drain:
			for len(batch) < maxBatchReqs && n < maxBatchBytes {
				select {
				case r := <-w.reqs:
					if r.op == opSwitch {
						w.carry = r
						break drain
					}
					batch = append(batch, r)
					n += len(r.buf)
				default:
					break drain
				}
			}
		}
		w.commit(batch)
		for _, r := range batch {
			r.done <- struct{}{}
		}
	}
}

// commit appends the records of batch, syncs them, then writes the index.
// It sets err on every request that failed.
func (w *logWriter) commit(batch []*logReq) {
	s := w.s
	w.iov, w.group = w.iov[:0], w.group[:0]
	start := int64(0)
	sync := false
	for _, r := range batch {
		if r.op == opSync || (r.buf != nil && !r.lazy) {
			sync = true
			break
		}
	}
	flush := func() {
		if len(w.iov) == 0 {
			return
		}
		if err := w.writeSync(start, sync); err != nil {
			w.broken = true
			for _, r := range w.group {
				r.err = err
			}
		}
		w.iov, w.group = w.iov[:0], w.group[:0]
	}
	for _, r := range batch {
		if r.buf == nil {
			continue
		}
		n := int64(len(r.buf))
		if w.f == nil || w.broken || w.end+n > s.cfg.SegmentSize {
			flush()
			if err := w.roll(); err != nil {
				r.err = err
				continue
			}
		}
		if len(w.iov) == 0 {
			start = w.end
		}
		lsn := lsnOf(w.seq, w.end)
		sealRec(r.buf, lsn)
		if r.op == opPut {
			r.rec.seg, r.rec.off, r.rec.lsn = w.seq, w.end, lsn
		}
		w.iov = append(w.iov, r.buf)
		w.group = append(w.group, r)
		w.end += n
	}
	flush()
	if sync && w.f != nil && !w.broken {
		// An opSync with nothing of its own to write.
		if err := w.syncDirty(); err != nil {
			w.broken = true
		}
	}
	for _, r := range batch {
		if r.op == opSync && r.err == nil {
			r.err = w.lazyErr
		}
	}
	if w.f != nil {
		s.segs.mu.Lock()
		if g := s.segs.m[w.seq]; g != nil {
			g.size, g.end = w.end, w.end
		}
		s.segs.mu.Unlock()
	}

	// The index, for the records now durable.
	w.lb.Reset()
	var buf [maxRecordLen]byte
	var ierr error
	for _, r := range batch {
		if r.err != nil {
			continue
		}
		switch r.op {
		case opPut:
			w.lb.Put(r.ik, appendRecord(buf[:0], r.rec))
		case opDelete:
			was, ok, err := s.idx.get(r.ik)
			if err != nil {
				r.err = fmt.Errorf("index: %w", err)
				continue
			}
			if ok {
				r.was, r.wasHeld = was, true
				w.lb.Delete(r.ik)
			}
		case opSwitch:
			for i, it := range r.sw {
				cur, ok, err := s.idx.get(it.ik)
				if err != nil {
					ierr = err
					break
				}
				if ok && cur.seg == it.from.seg && cur.off == it.from.off && cur.lsn == it.from.lsn {
					w.lb.Put(it.ik, appendRecord(buf[:0], it.to))
				} else {
					r.sw[i].to.seg = 0 // not moved: the value went away meanwhile
				}
			}
			if ierr != nil {
				r.err = fmt.Errorf("index: %w", ierr)
			}
		}
	}
	if w.skipIndex.Load() {
		return // a test simulates a crash before the index write
	}
	if w.lb.Len() > 0 {
		// The checkpoint moves only over durable records: Open replays
		// from it, and lazy tombstones not yet synced may be lost.
		if w.f != nil && !w.dirty {
			w.lb.Put(metaCheckpoint, appendCheckpoint(nil, w.seq, w.end))
		}
		if err := s.idx.writeLogged(&w.lb); err != nil {
			err = fmt.Errorf("index: %w", noSpace(err))
			for _, r := range batch {
				if r.err == nil {
					r.err = err
				}
			}
			return
		}
	}
	// Account for what is now in the index.
	for _, r := range batch {
		if r.err != nil {
			continue
		}
		switch r.op {
		case opPut:
			s.segs.adjust(r.rec.seg, int64(len(r.buf)))
			s.keys.Add(1)
			s.bytes.Add(r.rec.size)
		case opDelete:
			if r.wasHeld {
				s.forget(r.ik, r.was)
			}
		case opSwitch:
			for _, it := range r.sw {
				if it.to.seg != 0 {
					n := recLen(len(it.ik)-versionLen-1, it.to.size)
					s.segs.adjust(it.from.seg, -n)
					s.segs.adjust(it.to.seg, n)
				}
			}
		}
	}
}

// forget updates the counters for an index entry that was removed.
func (s *Store) forget(ik []byte, was record) {
	s.keys.Add(-1)
	s.bytes.Add(-was.size)
	if was.packed() {
		s.segs.adjust(was.seg, -recLen(len(ik)-versionLen-1, was.size))
	}
}

// writeSync writes w.iov at off in the active segment and, if sync, makes
// it durable with everything written before it.
func (w *logWriter) writeSync(off int64, sync bool) error {
	n := int64(0)
	for _, b := range w.iov {
		n += int64(len(b))
	}
	w.z.wait(off + n)
	if err := writevAt(w.f, w.iov, off); err != nil {
		return fmt.Errorf("write segment %s: %w", w.f.Name(), noSpace(err))
	}
	if w.s.cfg.NoSync {
		return nil
	}
	if !sync {
		w.dirty = true
		return nil
	}
	if err := w.syncActive(); err != nil {
		return err
	}
	// Zeros ahead save a small commit the journal's; a commit of large
	// values would only write its bytes twice (and wait for the zeros).
	if n < zeroLowWater/2 {
		w.z.kick(off + n)
	}
	return nil
}

// syncDirty fdatasyncs the active segment if lazy tombstones wait for it.
// It is not tried again after a failure: lazyErr reports the loss.
func (w *logWriter) syncDirty() error {
	if !w.dirty {
		return nil
	}
	err := w.syncActive()
	w.dirty = false
	return err
}

// syncActive fdatasyncs the active segment. A failure that may have lost
// lazy tombstones is kept in lazyErr.
func (w *logWriter) syncActive() error {
	if err := fdatasync(w.f); err != nil {
		err = fmt.Errorf("fdatasync segment %s: %w", w.f.Name(), noSpace(err))
		if w.dirty {
			w.lazyErr = err
		}
		return err
	}
	w.s.syncs.Add(1)
	w.dirty = false
	return nil
}

// roll seals the active segment, if any, and starts a new one.
func (w *logWriter) roll() error {
	s := w.s
	w.z.reset(nil, 0, 0)
	if w.f != nil {
		_ = w.syncDirty() // lazy tombstones are durable before the segment is sealed
		// Cut the zeros past the last record; if that is lost in a crash,
		// they are just garbage for compaction.
		if !w.broken {
			_ = w.f.Truncate(w.end)
		}
		w.f.Close()
		s.segs.mu.Lock()
		if g := s.segs.m[w.seq]; g != nil {
			g.active = false
			if !w.broken {
				g.size, g.end = w.end, w.end
			} else if fi, err := os.Stat(s.segPath(w.seq)); err == nil {
				g.size, g.end = fi.Size(), fi.Size()
			}
		}
		s.segs.mu.Unlock()
		w.f = nil
	}
	seq := s.segs.allocMaking()
	path := s.segPath(seq)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		s.segs.made(seq)
		return fmt.Errorf("create segment: %w", noSpace(err))
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(path)
		s.segs.made(seq)
		return err
	}
	if _, err := f.WriteAt(appendSegHeader(nil, segKindLog, seq), 0); err != nil {
		return fail(fmt.Errorf("write segment header: %w", noSpace(err)))
	}
	// The first commit's fdatasync makes the header durable with its
	// records; the directory entry needs its own fsync.
	if err := s.syncDir(s.segsDir); err != nil {
		return fail(err)
	}
	if err := s.saveNextSeq(); err != nil {
		return fail(err)
	}
	s.segs.add(&segState{seq: seq, kind: segKindLog, size: segHeaderLen, end: segHeaderLen, births: []uint64{seq}, active: true})
	w.f, w.seq, w.end, w.broken = f, seq, segHeaderLen, false
	if !s.cfg.NoSync {
		w.z.reset(f, segHeaderLen, s.cfg.SegmentSize)
		w.z.kick(w.end)
	}
	return nil
}

// zeroer writes and syncs zeros ahead of the log writer in the active
// segment, in the background, so that commits overwrite allocated blocks.
type zeroer struct {
	mu     sync.Mutex
	cond   sync.Cond
	f      *os.File
	zeroed int64 // bytes before this offset are allocated and durable
	limit  int64
	busy   bool
	buf    []byte
	wg     sync.WaitGroup
	err    atomic.Pointer[error] // the last zeroing failure, for tests
}

// wait returns once no zeroing in flight overlaps bytes before end.
func (z *zeroer) wait(end int64) {
	z.mu.Lock()
	for z.busy && end > z.zeroed {
		z.cond.Wait()
	}
	z.mu.Unlock()
}

// kick starts zeroing past end if fewer than zeroLowWater zeroed bytes
// are left ahead of it.
func (z *zeroer) kick(end int64) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.f == nil || z.busy || z.zeroed >= z.limit || z.zeroed-end >= zeroLowWater {
		return
	}
	from := max(z.zeroed, end)
	to := min(from+zeroChunk, z.limit)
	if to <= from {
		return
	}
	if z.buf == nil {
		z.buf = make([]byte, 1<<20)
	}
	z.busy = true
	f, buf := z.f, z.buf
	z.wg.Add(1)
	go func() {
		defer z.wg.Done()
		err := writeZeros(f, buf, from, to)
		z.mu.Lock()
		if err == nil {
			z.zeroed = to
		} else {
			z.err.Store(&err)
			z.limit = 0 // stop zeroing this segment; commits just grow the file
		}
		z.busy = false
		z.cond.Broadcast()
		z.mu.Unlock()
	}()
}

// reset waits for zeroing in flight, then zeroes f from start to limit
// (nil: nothing).
func (z *zeroer) reset(f *os.File, start, limit int64) {
	z.mu.Lock()
	for z.busy {
		z.cond.Wait()
	}
	z.f, z.zeroed, z.limit = f, start, limit
	z.mu.Unlock()
	z.wg.Wait()
}

func writeZeros(f *os.File, zeros []byte, from, to int64) error {
	for off := from; off < to; {
		// Each write ends on a multiple of len(zeros), so that the page
		// cache takes the next one in large aligned folios: unaligned
		// writes leave a run of small folios at every boundary, and
		// sendfile of the values later written over them is slower.
		z := int64(len(zeros))
		n := min(z-off%z, to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return fdatasync(f)
}

// saveNextSeq records the next segment number in the index (synced), after
// a number was taken for a new segment.
func (s *Store) saveNextSeq() error {
	s.segs.saveMu.Lock()
	defer s.segs.saveMu.Unlock()
	s.segs.mu.Lock()
	next := s.segs.next
	s.segs.mu.Unlock()
	if err := s.idx.setNextSeq(next); err != nil {
		return fmt.Errorf("index: %w", noSpace(err))
	}
	return nil
}

// loadSegments reads the header (and footer) of every segment file. A
// compacted segment without a valid footer is marked incomplete (see
// dropUnswitched). Files that are not valid segments are left alone for
// Orphans to report; a log segment whose header is all zeros was created
// by a roll that never committed a record, and goes.
func (s *Store) loadSegments() error {
	ents, err := os.ReadDir(s.segsDir)
	if err != nil {
		return fmt.Errorf("read segment directory: %w", err)
	}
	removed := false
	for _, e := range ents {
		seq, ok := parseSegName(e.Name())
		if !ok {
			continue
		}
		s.segs.mu.Lock()
		s.segs.next = max(s.segs.next, seq+1)
		s.segs.mu.Unlock()
		path := filepath.Join(s.segsDir, e.Name())
		si, err := openSegment(path)
		if errors.Is(err, errIncomplete) {
			s.segs.add(&segState{seq: si.seq, kind: segKindCompact, size: si.size, end: si.size, incomplete: true})
			continue
		}
		if err != nil && zeroHeader(path) {
			s.log.Warn("store: removing a segment left unfinished by a crash", "path", path, "err", err)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove unfinished segment: %w", err)
			}
			removed = true
			continue
		}
		if err != nil {
			s.log.Warn("store: ignoring a bad segment file", "path", path, "err", err)
			continue
		}
		s.segs.add(&segState{seq: si.seq, kind: si.kind, size: si.size, end: si.end, births: si.births})
	}
	if removed {
		return s.syncDir(s.segsDir)
	}
	return nil
}

// zeroHeader reports whether the file at path is shorter than a segment
// header or starts with one made of zeros only.
func zeroHeader(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var h [segHeaderLen]byte
	n, _ := f.ReadAt(h[:], 0)
	return isZero(h[:n])
}

// dropUnswitched removes the incomplete compacted segments that nothing in
// the index points into: compactions the process died in before they
// switched the index (their originals are still there). One the index
// uses (a footer lost to rot) stays, for compaction to rewrite. It runs
// after the index is counted.
func (s *Store) dropUnswitched() error {
	s.segs.mu.Lock()
	var drop []uint64
	for seq, g := range s.segs.m {
		if g.incomplete {
			if g.live == 0 {
				drop = append(drop, seq)
			} else {
				s.log.Warn("store: a compacted segment lost its footer; its values stay in use", "path", s.segPath(seq))
			}
		}
	}
	for _, seq := range drop {
		s.segs.forget(seq)
	}
	s.segs.mu.Unlock()
	for _, seq := range drop {
		s.log.Warn("store: removing a compacted segment left unfinished by a crash", "path", s.segPath(seq))
		if err := os.Remove(s.segPath(seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove unfinished segment: %w", err)
		}
	}
	if len(drop) > 0 {
		return s.syncDir(s.segsDir)
	}
	return nil
}
