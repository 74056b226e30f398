package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Rebuild recreates the whole index from the trailers of the blob files and
// from the segments: it drops the index, scans DIR/blobs and indexes every
// file whose trailer is intact and matches its file name, then reads every
// segment and indexes each packed value whose newest record (by LSN) is a
// put, not a tombstone. Files that fail are skipped, reported to
// Config.Logger and left in place; they stay invisible (Delete of their
// version removes them); so are packed records whose value fails its
// checksum. Rebuild reads trailers only, not values, of blob files:
// Verify checks values. It reads segments whole.
//
// Every other method waits while Rebuild runs. A marker file makes an
// interrupted Rebuild start again at the next Open.
func (s *Store) Rebuild() error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("store: rebuild %s: %w", s.dir, ErrClosed)
	}
	if err := s.rebuildLocked(); err != nil {
		// If no index could be opened, s.idx is nil and every method but
		// Rebuild and Close fails with ErrClosed.
		return fmt.Errorf("store: rebuild %s: %w", s.dir, err)
	}
	return nil
}

// rebuildLocked runs with s.mu held exclusively (or before Open returns).
// s.idx may be nil on entry (a corrupted index) and is nil on return only if
// a fresh index could not be opened.
func (s *Store) rebuildLocked() error {
	began := time.Now()
	s.log.Info("store: rebuilding index from blob files", "dir", s.dir)
	marker := filepath.Join(s.dir, markerName)
	if err := s.writeMarker(marker); err != nil {
		return err
	}
	if s.idx != nil {
		if err := s.idx.close(); err != nil {
			s.log.Warn("store: closing the old index", "dir", s.dir, "err", err)
		}
		s.idx = nil
	}
	if err := os.RemoveAll(s.indexDir); err != nil {
		return fmt.Errorf("remove index: %w", err)
	}
	idx, _, err := openIndex(s.indexDir, s.cfg.NoSync)
	if err != nil {
		return fmt.Errorf("create index: %w", err)
	}
	s.idx = idx

	sc := scan{s: s, batch: indexBatch{x: idx}}
	if err := sc.run(); err != nil {
		return err
	}
	if err := sc.batch.flush(); err != nil {
		return fmt.Errorf("index: %w", noSpace(err))
	}
	if err := sc.segments(); err != nil {
		return err
	}
	if err := s.count(); err != nil {
		return err
	}
	if err := os.Remove(marker); err != nil {
		return err
	}
	if err := s.syncDir(s.dir); err != nil {
		return err
	}
	s.log.Info("store: index rebuilt", "dir", s.dir, "files", sc.files, "segments", sc.segs, "indexed", s.keys.Load(),
		"bytes", s.bytes.Load(), "skipped", sc.skipped, "elapsed", time.Since(began))
	return nil
}

func (s *Store) writeMarker(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write rebuild marker: %w", noSpace(err))
	}
	_, err = io.WriteString(f, "an index rebuild is in progress; Open restarts it\n")
	if err == nil && !s.cfg.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write rebuild marker: %w", noSpace(err))
	}
	return s.syncDir(s.dir)
}

// scan walks DIR/blobs/ab/cd/* for Rebuild.
type scan struct {
	s                                 *Store
	batch                             indexBatch
	tail                              [maxTrailerLen]byte
	files, skipped, keys, bytes, segs int64
}

const rebuildProgressEvery = 100000

func (sc *scan) run() error {
	return walkBlobs(sc.s.blobsDir, os.ReadDir, func(path string) bool {
		sc.skip(path, errors.New("not a blob directory"))
		return true
	}, sc.file)
}

// walkBlobs calls file for every entry of the blob directories under dir:
// dir/ab/<name> (prefix "ab") and, in the legacy layout, dir/ab/cd/<name>
// (prefix "abcd"). Anything else is passed to stray. It stops when stray
// returns false or file returns an error; readDir lists a directory.
func walkBlobs(dir string, readDir func(string) ([]fs.DirEntry, error), stray func(path string) bool,
	file func(path, prefix string, e fs.DirEntry) error) error {
	top, err := readDir(dir)
	if err != nil {
		return fmt.Errorf("read blob directory: %w", err)
	}
	for _, d1 := range top {
		p1 := filepath.Join(dir, d1.Name())
		if !d1.IsDir() || !isHexDir(d1.Name()) {
			if !stray(p1) {
				return nil
			}
			continue
		}
		mid, err := readDir(p1)
		if err != nil {
			return fmt.Errorf("read blob directory: %w", err)
		}
		for _, d2 := range mid {
			p2 := filepath.Join(p1, d2.Name())
			if !d2.IsDir() {
				if err := file(p2, d1.Name(), d2); err != nil {
					return err
				}
				continue
			}
			if !isHexDir(d2.Name()) {
				if !stray(p2) {
					return nil
				}
				continue
			}
			files, err := readDir(p2)
			if err != nil {
				return fmt.Errorf("read blob directory: %w", err)
			}
			for _, f := range files {
				if err := file(filepath.Join(p2, f.Name()), d1.Name()+d2.Name(), f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func isHexDir(name string) bool {
	if len(name) != 2 {
		return false
	}
	for _, c := range []byte(name) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// file indexes one blob file, at path in a directory whose name or names
// make prefix. It returns an error only if the index cannot be written; a
// bad file is skipped.
func (sc *scan) file(path, prefix string, e fs.DirEntry) error {
	if sc.s.closing.Load() {
		return ErrClosed
	}
	sc.files++
	if sc.files%rebuildProgressEvery == 0 {
		sc.s.log.Info("store: rebuild progress", "dir", sc.s.dir, "files", sc.files, "skipped", sc.skipped)
	}
	t, err := sc.readTrailer(path)
	if err != nil {
		sc.skip(path, err)
		return nil
	}
	if name := blobName(t.key, t.version); name != e.Name() || !strings.HasPrefix(name, prefix) {
		sc.skip(path, fmt.Errorf("%w: trailer names %q v%d, which belongs in %s", ErrCorrupt, t.key, t.version, blobRel(name)))
		return nil
	}
	if err := sc.batch.put(indexKey(t.key, t.version), record{size: t.size, checksum: t.checksum, modNanos: t.modNanos}); err != nil {
		return fmt.Errorf("index: %w", noSpace(err))
	}
	sc.keys++
	sc.bytes += t.size
	return nil
}

// readTrailer reads and decodes the trailer of a blob file. The key of the
// result aliases sc.tail.
func (sc *scan) readTrailer(path string) (trailer, error) {
	return readTrailer(path, &sc.tail)
}

// readTrailer reads and decodes the trailer of the blob file at path, using
// buf. The key of the result aliases buf.
func readTrailer(path string, buf *[maxTrailerLen]byte) (trailer, error) {
	f, err := os.Open(path)
	if err != nil {
		return trailer{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return trailer{}, err
	}
	if !fi.Mode().IsRegular() {
		return trailer{}, errors.New("not a regular file")
	}
	tail := buf[:min(fi.Size(), maxTrailerLen)]
	if _, err := f.ReadAt(tail, fi.Size()-int64(len(tail))); err != nil {
		return trailer{}, fmt.Errorf("read trailer: %w", err)
	}
	return decodeTrailer(tail, fi.Size())
}

func (sc *scan) skip(path string, err error) {
	sc.skipped++
	sc.s.log.Warn("store: rebuild skipped a file", "path", path, "err", err)
}

// segments indexes the packed values of every segment. A (key, version)
// may have several records: puts and tombstones, and copies of one put
// (same LSN) left by compaction; the one with the highest LSN decides, and
// among copies the newest segment wins. A value with a blob file keeps
// it. Candidates are merged into the index a segment at a time, so memory
// stays bounded by a segment's records; tombstones wait in the index under
// bookkeeping keys until every segment has been read.
func (sc *scan) segments() error {
	s := sc.s
	x := s.idx
	s.segs.mu.Lock()
	var seqs []uint64
	for seq := range s.segs.m {
		seqs = append(seqs, seq)
	}
	ends := make(map[uint64]int64, len(seqs))
	for seq, g := range s.segs.m {
		ends[seq] = g.end
	}
	s.segs.mu.Unlock()
	slices.Sort(seqs)

	maxSeq := uint64(0)
	buf := make([]byte, scanBufLen)
	puts := make(map[string]record)
	tombs := make(map[string]uint64)
	ftombs := make(map[string]bool) // index key + modification time of a deleted blob file
	for _, seq := range seqs {
		if s.closing.Load() {
			return ErrClosed
		}
		sc.segs++
		maxSeq = max(maxSeq, seq)
		f, err := os.Open(s.segPath(seq))
		if err != nil {
			sc.skip(s.segPath(seq), err)
			continue
		}
		err = scanSegment(f, ends[seq], buf, func(r *scanned) bool {
			maxSeq = max(maxSeq, birthOf(r.lsn), r.target)
			ik := string(indexKey(r.key, r.version))
			switch {
			case r.bad != nil:
				sc.skip(fmt.Sprintf("%s@%d", f.Name(), r.off), r.bad)
			case r.typ == recDelete && r.target == 0:
				ftombs[ik+string(binary.BigEndian.AppendUint64(nil, uint64(r.modNanos)))] = true
			case r.typ == recDelete:
				tombs[ik] = max(tombs[ik], r.lsn)
			default:
				if cur, ok := puts[ik]; !ok || cur.lsn <= r.lsn {
					puts[ik] = record{size: r.size, checksum: r.checksum, modNanos: r.modNanos, seg: seq, off: r.off, lsn: r.lsn}
				}
			}
			return true
		})
		f.Close()
		if err != nil {
			return fmt.Errorf("read segment: %w", err)
		}
		if err := sc.mergeSegment(puts, tombs, ftombs); err != nil {
			return fmt.Errorf("index: %w", noSpace(err))
		}
		clear(puts)
		clear(tombs)
		clear(ftombs)
	}
	if err := sc.applyTombstones(); err != nil {
		return fmt.Errorf("index: %w", noSpace(err))
	}
	s.segs.mu.Lock()
	s.segs.next = max(s.segs.next, maxSeq+1)
	s.segs.mu.Unlock()
	if err := x.setNextSeq(s.segs.next); err != nil {
		return fmt.Errorf("index: %w", noSpace(err))
	}
	// The index now holds every record of the log.
	if err := x.setCheckpoint(s.logEnd()); err != nil {
		return fmt.Errorf("index: %w", noSpace(err))
	}
	return nil
}

var (
	tombPrefix  = metaKey([]byte("rebuild-tombstone/"))
	ftombPrefix = metaKey([]byte("rebuild-file-tombstone/"))
)

func (sc *scan) mergeSegment(puts map[string]record, tombs map[string]uint64, ftombs map[string]bool) error {
	x := sc.s.idx
	var b leveldb.Batch
	var rb [maxRecordLen]byte
	for ik, r := range puts {
		cur, ok, err := x.get([]byte(ik))
		if err != nil {
			return err
		}
		if ok && (!cur.packed() || cur.lsn > r.lsn || cur.lsn == r.lsn && cur.seg > r.seg) {
			continue
		}
		b.Put([]byte(ik), appendRecord(rb[:0], r))
	}
	for ik, t := range tombs {
		tk := append(slices.Clone(tombPrefix), ik...)
		v, err := x.db.Get(tk, nil)
		if err == nil && len(v) == 8 && binary.BigEndian.Uint64(v) >= t {
			continue
		}
		if err != nil && !errors.Is(err, leveldb.ErrNotFound) {
			return err
		}
		b.Put(tk, binary.BigEndian.AppendUint64(nil, t))
	}
	for k := range ftombs {
		b.Put(append(slices.Clone(ftombPrefix), k...), nil)
	}
	if b.Len() == 0 {
		return nil
	}
	return x.write(&b)
}

// applyTombstones deletes the packed values that a newer tombstone
// deletes, and the blob files that a tombstone names, and the bookkeeping
// keys.
func (sc *scan) applyTombstones() error {
	if err := sc.applyFileTombstones(); err != nil {
		return err
	}
	x := sc.s.idx
	var b leveldb.Batch
	it := x.db.NewIterator(util.BytesPrefix(tombPrefix), nil)
	for it.Next() {
		ik := it.Key()[len(tombPrefix):]
		t := binary.BigEndian.Uint64(it.Value())
		cur, ok, err := x.get(ik)
		if err != nil {
			it.Release()
			return err
		}
		if ok && cur.packed() && cur.lsn < t {
			b.Delete(slices.Clone(ik))
		}
		b.Delete(slices.Clone(it.Key()))
		if b.Len() >= indexBatchLen {
			if err := x.write(&b); err != nil {
				it.Release()
				return err
			}
			b.Reset()
		}
	}
	it.Release()
	if err := it.Error(); err != nil {
		return err
	}
	if b.Len() == 0 {
		return nil
	}
	return x.write(&b)
}

// applyFileTombstones unindexes and removes the blob files deleted before
// a crash stopped their removal.
func (sc *scan) applyFileTombstones() error {
	s := sc.s
	x := s.idx
	var b leveldb.Batch
	var gone []versionRef
	it := x.db.NewIterator(util.BytesPrefix(ftombPrefix), nil)
	for it.Next() {
		k := it.Key()[len(ftombPrefix):]
		if len(k) < 8 {
			continue
		}
		ik, mod := k[:len(k)-8], int64(binary.BigEndian.Uint64(k[len(k)-8:]))
		cur, ok, err := x.get(ik)
		if err != nil {
			it.Release()
			return err
		}
		if ok && !cur.packed() && cur.modNanos == mod {
			b.Delete(slices.Clone(ik))
			if key, v, err := splitIndexKey(ik); err == nil {
				gone = append(gone, versionRef{key: slices.Clone(key), version: v})
			}
		}
		b.Delete(slices.Clone(it.Key()))
	}
	it.Release()
	if err := it.Error(); err != nil {
		return err
	}
	if b.Len() > 0 {
		if err := x.write(&b); err != nil {
			return err
		}
	}
	for _, v := range gone {
		if err := s.removeBlobFile(v.key, v.version); err != nil {
			return err
		}
	}
	return nil
}

// hasBlobs reports whether DIR/blobs holds at least one file, or there is
// a compacted segment: what an empty index cannot account for. (Log
// segments it can: without a checkpoint, Open replays them all.)
func (s *Store) hasBlobs() (bool, error) {
	s.segs.mu.Lock()
	n := 0
	for _, g := range s.segs.m {
		if g.kind == segKindCompact {
			n++
		}
	}
	s.segs.mu.Unlock()
	if n > 0 {
		return true, nil
	}
	errFound := errors.New("found")
	err := filepath.WalkDir(s.blobsDir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("look for blob files: %w", err)
	}
	return false, nil
}
