package store

import (
	"fmt"
	"os"
	"slices"

	"github.com/syndtr/goleveldb/leveldb"
)

// replay brings the index up to date with the log: it applies every
// record of the log segments past the checkpoint, as the log writer would
// have, had the process not died between a commit's fdatasync and its
// index write (or had the unsynced index write not reached the disk).
// Records are applied by LSN, so replaying one twice changes nothing.
// Compacted segments are not replayed: their records are copies whose
// index switch is made durable before their originals go (compact.go).
func (s *Store) replay() error {
	ckSeq, ckOff, err := s.idx.checkpoint()
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	type seg struct {
		seq uint64
		end int64
	}
	var segs []seg
	s.segs.mu.Lock()
	for seq, g := range s.segs.m {
		if g.kind == segKindLog && seq >= ckSeq {
			segs = append(segs, seg{seq, g.end})
		}
	}
	s.segs.mu.Unlock()
	slices.SortFunc(segs, func(a, b seg) int { return int(a.seq) - int(b.seq) })

	r := replayer{s: s, pending: make(map[string]replayed)}
	buf := make([]byte, scanBufLen)
	lastSeq, lastEnd := ckSeq, ckOff
	for _, g := range segs {
		from := int64(segHeaderLen)
		if g.seq == ckSeq {
			from = max(ckOff, segHeaderLen)
		}
		f, err := os.Open(s.segPath(g.seq))
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		var ferr error
		err = scanSegmentFrom(f, from, g.end, buf, func(rec *scanned) bool {
			ferr = r.apply(g.seq, rec)
			return ferr == nil
		})
		f.Close()
		if err = cmp2(err, ferr); err != nil {
			return fmt.Errorf("replay %s: %w", s.segPath(g.seq), err)
		}
		lastSeq, lastEnd = g.seq, g.end
	}
	if err := r.flush(); err != nil {
		return fmt.Errorf("replay: index: %w", noSpace(err))
	}
	for _, v := range r.unlink {
		if err := s.removeBlobFile(v.key, v.version); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
	}
	if r.n > 0 {
		s.log.Info("store: replayed the log into the index", "dir", s.dir, "records", r.n, "applied", r.applied)
	}
	if err := s.idx.setCheckpoint(lastSeq, lastEnd); err != nil {
		return fmt.Errorf("replay: index: %w", noSpace(err))
	}
	return nil
}

func cmp2(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// replayed is an index entry changed by the replay and not written yet.
type replayed struct {
	rec  record
	held bool
}

type replayer struct {
	s       *Store
	b       leveldb.Batch
	pending map[string]replayed
	unlink  []versionRef // blob files deleted by the replayed tombstones
	n       int          // records read
	applied int          // records that changed the index
}

func (r *replayer) get(ik []byte) (record, bool, error) {
	if p, ok := r.pending[string(ik)]; ok {
		return p.rec, p.held, nil
	}
	return r.s.idx.get(ik)
}

func (r *replayer) apply(seq uint64, rec *scanned) error {
	r.n++
	if rec.bad != nil {
		return nil // torn or rotten: never acknowledged, or lost to rot
	}
	ik := indexKey(rec.key, rec.version)
	cur, held, err := r.get(ik)
	if err != nil {
		return err
	}
	var buf [maxRecordLen]byte
	switch {
	case rec.typ == recPut:
		if held && (!cur.packed() || cur.lsn >= rec.lsn) {
			return nil
		}
		nr := record{size: rec.size, checksum: rec.checksum, modNanos: rec.modNanos, seg: seq, off: rec.off, lsn: rec.lsn}
		r.b.Put(ik, appendRecord(buf[:0], nr))
		r.pending[string(ik)] = replayed{rec: nr, held: true}
	case rec.target != 0: // a packed value's tombstone
		if !held || !cur.packed() || cur.lsn >= rec.lsn {
			return nil
		}
		r.b.Delete(ik)
		r.pending[string(ik)] = replayed{}
	default: // a blob file's tombstone
		if !held || cur.packed() || cur.modNanos != rec.modNanos {
			return nil
		}
		r.b.Delete(ik)
		r.pending[string(ik)] = replayed{}
		r.unlink = append(r.unlink, versionRef{key: slices.Clone(rec.key), version: rec.version})
	}
	r.applied++
	if r.b.Len() >= indexBatchLen {
		return r.flush()
	}
	return nil
}

func (r *replayer) flush() error {
	if r.b.Len() == 0 {
		return nil
	}
	if err := r.s.idx.write(&r.b); err != nil {
		return err
	}
	r.b.Reset()
	clear(r.pending)
	return nil
}

// logEnd returns the end of the newest log segment: where the log goes on.
func (s *Store) logEnd() (seq uint64, off int64) {
	s.segs.mu.Lock()
	defer s.segs.mu.Unlock()
	for q, g := range s.segs.m {
		if g.kind == segKindLog && q >= seq {
			seq, off = q, g.end
		}
	}
	return seq, off
}
