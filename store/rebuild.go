package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Rebuild recreates the whole index from the trailers of the blob files: it
// drops the index, scans DIR/blobs and indexes every file whose trailer is
// intact and matches its file name. Files that fail are skipped, reported to
// Config.Logger and left in place; they stay invisible (Delete of their
// version removes them). Rebuild reads trailers only, not values: Verify
// checks values.
//
// Every other method waits while Rebuild runs. A marker file makes an
// interrupted Rebuild start again at the next Open.
func (s *Store) Rebuild() error {
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
	s.keys.Store(sc.keys)
	s.bytes.Store(sc.bytes)
	if err := os.Remove(marker); err != nil {
		return err
	}
	if err := s.syncDir(s.dir); err != nil {
		return err
	}
	s.log.Info("store: index rebuilt", "dir", s.dir, "files", sc.files, "indexed", sc.keys,
		"bytes", sc.bytes, "skipped", sc.skipped, "elapsed", time.Since(began))
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
	s                           *Store
	batch                       indexBatch
	tail                        [maxTrailerLen]byte
	files, skipped, keys, bytes int64
}

const rebuildProgressEvery = 100000

func (sc *scan) run() error {
	top, err := os.ReadDir(sc.s.blobsDir)
	if err != nil {
		return fmt.Errorf("read blob directory: %w", err)
	}
	for _, d1 := range top {
		p1 := filepath.Join(sc.s.blobsDir, d1.Name())
		if !d1.IsDir() || !isHexDir(d1.Name()) {
			sc.skip(p1, errors.New("not a blob directory"))
			continue
		}
		mid, err := os.ReadDir(p1)
		if err != nil {
			return fmt.Errorf("read blob directory: %w", err)
		}
		for _, d2 := range mid {
			p2 := filepath.Join(p1, d2.Name())
			if !d2.IsDir() || !isHexDir(d2.Name()) {
				sc.skip(p2, errors.New("not a blob directory"))
				continue
			}
			files, err := os.ReadDir(p2)
			if err != nil {
				return fmt.Errorf("read blob directory: %w", err)
			}
			for _, f := range files {
				if err := sc.file(p2, d1.Name()+d2.Name(), f); err != nil {
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

// file indexes one blob file. It returns an error only if the index cannot
// be written; a bad file is skipped.
func (sc *scan) file(dir, prefix string, e fs.DirEntry) error {
	if sc.s.closing.Load() {
		return ErrClosed
	}
	sc.files++
	if sc.files%rebuildProgressEvery == 0 {
		sc.s.log.Info("store: rebuild progress", "dir", sc.s.dir, "files", sc.files, "skipped", sc.skipped)
	}
	path := filepath.Join(dir, e.Name())
	t, err := sc.readTrailer(path)
	if err != nil {
		sc.skip(path, err)
		return nil
	}
	if name := blobName(t.key, t.version); name != e.Name() || name[:4] != prefix {
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

// hasBlobs reports whether DIR/blobs holds at least one file.
func (s *Store) hasBlobs() (bool, error) {
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
