package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Put stores the value read from r as (key, version) and returns its
// metadata. size >= 0 declares the exact length of the value; -1 means
// unknown (a chunked body). Put reads at most size+1 bytes, and fails with
// ErrSizeMismatch if the body is shorter or longer than declared. A read
// error from r is returned wrapped.
//
// A value of at most Config.SmallValueMax bytes is read into a pooled
// buffer (see stageBuf), hashed and appended to the log with its key and
// metadata; the log writer commits it together with the other Puts and
// Deletes waiting at that moment, with one fdatasync, then indexes them
// all in one synced index write (see log.go). A larger value (or one
// stageBuf has no buffer for) is streamed into a temporary
// file while being hashed, followed by its trailer, fsynced, renamed into
// place and then indexed. Either way Put returns only once the value and
// its index entry are durable, and on any failure nothing is visible and
// no file is left behind. A version is immutable: Put of a (key, version)
// that is already held fails with ErrExists and leaves the held copy as it
// was.
//
// Put fails with an error wrapping ErrNoSpace when the value does not fit in
// Capacity or would leave less than Reserve free, or when the filesystem
// reports ENOSPC or EDQUOT. With a known size the space is allocated before
// the body is read (fallocate), so a full disk is found early.
func (s *Store) Put(key []byte, version uint64, r io.Reader, size int64) (Meta, error) {
	if err := checkKey(key); err != nil {
		return Meta{}, opErr("put", key, version, err)
	}
	switch {
	case size < -1:
		return Meta{}, opErr("put", key, version, fmt.Errorf("invalid declared size %d", size))
	case size > math.MaxInt64-maxTrailerLen: // size+trailer must not overflow
		return Meta{}, opErr("put", key, version, fmt.Errorf("%w: declared size %d", ErrNoSpace, size))
	}
	if err := s.rlock(); err != nil {
		return Meta{}, opErr("put", key, version, err)
	}
	s.mu.RUnlock() // streaming the body must not hold up Close

	res := reservation{s: s}
	defer res.release()
	var prefix []byte
	if sb, release := s.stageBuf(size); sb != nil {
		defer release()
		m, spilled, err := s.putPacked(key, version, r, size, sb, &res)
		if err != nil {
			return Meta{}, opErr("put", key, version, err)
		}
		if spilled == nil {
			return m, nil
		}
		// A chunked body longer than SmallValueMax: it gets a file after all.
		prefix = spilled
	}
	tmp, m, err := s.writeTemp(key, version, prefix, r, size, &res)
	if err != nil {
		return Meta{}, opErr("put", key, version, err)
	}
	if err := s.commit(tmp, m); err != nil {
		os.Remove(tmp) // gone already if the rename happened
		return Meta{}, opErr("put", key, version, err)
	}
	return m, nil
}

// stagedSmall is the largest value read into packBufs' buffers; larger
// packed values take one of bigStaged buffers of SmallValueMax bytes.
// A body of unknown length is packed only if it ends within stagedSmall.
const (
	stagedSmall = 64 << 10
	bigStaged   = 16
)

// stagedMax is the largest value of unknown length that is packed.
func (s *Store) stagedMax() int64 { return min(max(s.cfg.SmallValueMax, 0), stagedSmall) }

// stageBuf returns the buffer a value of the declared size (-1: unknown)
// is packed through and the function that gives it back, or nil if the
// value gets a blob file: it is larger than SmallValueMax, or than
// stagedSmall while bigStaged larger values are being written already.
func (s *Store) stageBuf(size int64) (*streamBuf, func()) {
	small := s.cfg.SmallValueMax
	switch {
	case small < 0 || size > small:
		return nil, nil
	case size <= stagedSmall:
		sb := s.packBufs.Get().(*streamBuf)
		return sb, func() { s.packBufs.Put(sb) }
	case s.bigInUse.Add(1) > bigStaged:
		s.bigInUse.Add(-1)
		return nil, nil
	}
	sb := s.bigBufs.Get().(*streamBuf)
	return sb, func() {
		s.bigBufs.Put(sb)
		s.bigInUse.Add(-1)
	}
}

// putPacked reads a value of at most SmallValueMax bytes into sb, behind
// room for its record header and key, and commits it through the log
// writer. If the size is unknown and the body turns out longer, it
// returns the bytes read so far as spilled (aliasing sb), for the caller
// to write a blob file that starts with them.
func (s *Store) putPacked(key []byte, version uint64, r io.Reader, size int64, sb *streamBuf, res *reservation) (m Meta, spilled []byte, err error) {
	if size >= 0 {
		if err := res.grow(size); err != nil {
			return Meta{}, nil, err
		}
	}
	vstart := recHeaderLen + len(key)
	// Past the largest packed value, by a word: readers that produce
	// words (tests' generators) then see word-sized reads only.
	limit := s.stagedMax() + recAlign
	if size >= 0 {
		limit = size + 1 // one byte past the declared end
	}
	val := sb.b[vstart : vstart+int(limit)]
	got, rerr := readFull(r, val)
	switch {
	case rerr != nil && rerr != io.EOF:
		return Meta{}, nil, fmt.Errorf("read body after %d bytes: %w", got, rerr)
	case size >= 0 && int64(got) > size:
		return Meta{}, nil, fmt.Errorf("%w: body longer than the declared %d bytes", ErrSizeMismatch, size)
	case size >= 0 && int64(got) < size:
		return Meta{}, nil, fmt.Errorf("%w: body of %d bytes, declared %d", ErrSizeMismatch, got, size)
	case size < 0 && (rerr == nil || int64(got) > s.stagedMax()):
		// Longer than what is packed.
		return Meta{}, val[:got], nil
	}
	n := int64(got)
	if size < 0 {
		if err := res.grow(n); err != nil {
			return Meta{}, nil, err
		}
	}
	m = Meta{
		Key:      bytes.Clone(key),
		Version:  version,
		Size:     n,
		Checksum: xxhash.Sum64(val[:got]),
		ModTime:  time.Unix(0, time.Now().UnixNano()).UTC(),
	}
	buf := sb.b[:recLen(len(key), n)]
	clear(buf[vstart+got:])
	putHeader(buf, logRec{typ: recPut, key: key, version: version, size: n, checksum: m.Checksum, modNanos: m.ModTime.UnixNano()})

	ik, mu, err := s.lockVersion(key, version)
	if err != nil {
		return Meta{}, nil, err
	}
	defer s.unlockVersion(mu)
	if _, had, err := s.idx.get(ik); err != nil {
		return Meta{}, nil, fmt.Errorf("index: %w", err)
	} else if had {
		return Meta{}, nil, ErrExists
	}
	req := s.w.get()
	req.op, req.ik, req.buf = opPut, ik, buf
	req.rec = record{size: n, checksum: m.Checksum, modNanos: m.ModTime.UnixNano()}
	err = s.w.submit(req)
	s.w.put(req)
	if err != nil {
		return Meta{}, nil, err
	}
	return m, nil, nil
}

// writeTemp streams prefix and then r into a new file in DIR/tmp, appends
// the trailer and fsyncs it. It returns the file's path and the value's
// metadata. On error the file is removed. prefix is the start of the body,
// already read from r (its bytes count against size).
func (s *Store) writeTemp(key []byte, version uint64, prefix []byte, r io.Reader, size int64, res *reservation) (path string, m Meta, err error) {
	if size >= 0 {
		if err := res.grow(size); err != nil {
			return "", Meta{}, err
		}
	}
	f, err := os.CreateTemp(s.tmpDir, "put-*")
	if err != nil {
		return "", Meta{}, fmt.Errorf("create temp file: %w", noSpace(err))
	}
	name := f.Name() // not path: the error returns below set path to ""
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(name)
		}
	}()
	tl := trailerLen(len(key))
	if size >= 0 {
		if err := fallocate(f, size+tl); err != nil {
			return "", Meta{}, fmt.Errorf("allocate %d bytes: %w", size+tl, noSpace(err))
		}
	}

	sb := s.bufs.Get().(*streamBuf)
	defer s.bufs.Put(sb)
	buf, h := sb.b, sb.h
	h.Reset()
	var n, flushed int64
	if len(prefix) > 0 {
		if err := res.grow(int64(len(prefix))); err != nil {
			return "", Meta{}, err
		}
		h.Write(prefix) // never fails
		if _, err := f.Write(prefix); err != nil {
			return "", Meta{}, fmt.Errorf("write temp file: %w", noSpace(err))
		}
		n = int64(len(prefix))
	}
	for {
		want := len(buf)
		if size >= 0 && size+1-n < int64(want) {
			want = int(size + 1 - n) // at most one byte past the declared end
		}
		got, rerr := readFull(r, buf[:want])
		if got > 0 {
			if size >= 0 && n+int64(got) > size {
				return "", Meta{}, fmt.Errorf("%w: body longer than the declared %d bytes", ErrSizeMismatch, size)
			}
			if size < 0 {
				if err := res.grow(int64(got)); err != nil {
					return "", Meta{}, err
				}
			}
			h.Write(buf[:got]) // never fails
			if _, err := f.Write(buf[:got]); err != nil {
				return "", Meta{}, fmt.Errorf("write temp file: %w", noSpace(err))
			}
			n += int64(got)
			if !s.cfg.NoSync && n-flushed >= writebackChunk {
				startWriteback(f, flushed, n-flushed)
				flushed = n
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", Meta{}, fmt.Errorf("read body after %d bytes: %w", n, rerr)
		}
	}
	if size >= 0 && n != size {
		return "", Meta{}, fmt.Errorf("%w: body of %d bytes, declared %d", ErrSizeMismatch, n, size)
	}

	m = Meta{
		Key:      bytes.Clone(key),
		Version:  version,
		Size:     n,
		Checksum: h.Sum64(),
		ModTime:  time.Unix(0, time.Now().UnixNano()).UTC(),
	}
	t := appendTrailer(buf[:0], trailer{
		key: key, version: version, size: n, checksum: m.Checksum, modNanos: m.ModTime.UnixNano(),
	})
	if _, err := f.Write(t); err != nil {
		return "", Meta{}, fmt.Errorf("write trailer: %w", noSpace(err))
	}
	if !s.cfg.NoSync {
		if err := f.Sync(); err != nil {
			return "", Meta{}, fmt.Errorf("fsync temp file: %w", noSpace(err))
		}
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return "", Meta{}, fmt.Errorf("close temp file: %w", noSpace(cerr))
	}
	return name, m, nil
}

// readFull reads into p until it is full or r reports an error. It returns
// io.EOF (possibly with data) at the end of the body, like a short
// io.ReadFull but without turning it into io.ErrUnexpectedEOF.
func readFull(r io.Reader, p []byte) (int, error) {
	n, empty := 0, 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty >= 100 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

// commit renames a complete temp file into place and indexes it. Rename and
// index update are serialised per (key, version), so that when two Puts of
// the same version race, the index describes the file that won.
func (s *Store) commit(tmp string, m Meta) error {
	dst := s.blobPath(m.Key, m.Version)
	dir := filepath.Dir(dst)
	if err := s.ensureDir(dir); err != nil {
		return fmt.Errorf("create blob directory: %w", noSpace(err))
	}
	ik, mu, err := s.lockVersion(m.Key, m.Version)
	if err != nil {
		return err
	}
	defer s.unlockVersion(mu)

	_, had, err := s.idx.get(ik)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	if had {
		return ErrExists
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("rename into place: %w", noSpace(err))
	}
	// From here the new file is in place; if it cannot be indexed, remove
	// it.
	undo := func() { os.Remove(dst) }
	// Only the destination directory needs an fsync: if the crash keeps the
	// temp file's old name too, Open empties DIR/tmp.
	if err := s.syncDir(dir); err != nil {
		undo()
		return err
	}
	// A crash after the rename and before this put leaves an orphan (Open
	// explains).
	if err := s.idx.put(ik, record{size: m.Size, checksum: m.Checksum, modNanos: m.ModTime.UnixNano()}); err != nil {
		undo()
		return fmt.Errorf("index: %w", noSpace(err))
	}
	s.keys.Add(1)
	s.bytes.Add(m.Size)
	return nil
}

// ensureDir creates a blob directory (DIR/blobs/ab) and its parent if
// needed, fsyncing the parent of each directory it creates, so that a file
// renamed into it survives a crash. There are 256 such directories: each
// is created once in a volume's life.
func (s *Store) ensureDir(dir string) error {
	if _, ok := s.dirs.Load(dir); ok {
		return nil
	}
	// One creator at a time: otherwise a Put could find the directory
	// created by another Put that has not yet fsynced its parent.
	s.dirsMu.Lock()
	defer s.dirsMu.Unlock()
	if _, ok := s.dirs.Load(dir); ok {
		return nil
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		err := os.Mkdir(d, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := s.syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	s.dirs.Store(dir, struct{}{})
	return nil
}

// syncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func (s *Store) syncDir(dir string) error {
	if s.cfg.NoSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// reservation holds bytes counted against Capacity while a Put is streaming,
// so that concurrent Puts cannot together overrun it. It is released once
// the value is counted in Stats.Bytes (or the Put failed).
type reservation struct {
	s *Store
	n int64
}

func (r *reservation) grow(n int64) error {
	s := r.s
	if c := s.cfg.Capacity; c > 0 {
		for {
			p := s.pending.Load()
			if used := s.bytes.Load() + p; used+n > c {
				return fmt.Errorf("%w: capacity %d bytes, %d held or being written, %d more needed", ErrNoSpace, c, used, n)
			}
			if s.pending.CompareAndSwap(p, p+n) {
				r.n += n
				break
			}
		}
	}
	if s.cfg.Reserve > 0 {
		free, _, err := fsSpace(s.dir)
		if err != nil {
			return fmt.Errorf("statfs: %w", err)
		}
		if free-n < s.cfg.Reserve {
			return fmt.Errorf("%w: %d bytes free on the filesystem, %d more needed, %d reserved", ErrNoSpace, free, n, s.cfg.Reserve)
		}
	}
	return nil
}

func (r *reservation) release() {
	r.s.pending.Add(-r.n)
	r.n = 0
}
