package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/syndtr/goleveldb/leveldb"
	lverrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// levelIndex is the only code that knows about goleveldb. goleveldb is
// effectively unmaintained (LIBRARIES.md), so the rest of the package talks to
// this small type and the index can be swapped by rewriting this file.
type levelIndex struct {
	db   *leveldb.DB
	stor storage.Storage
	sync bool
}

func indexOptions(noSync bool) *opt.Options {
	return &opt.Options{
		// Several volumes share a process; the default of 500 open table
		// files per DB is too many.
		OpenFilesCacheCapacity: 64,
		// Most lookups of a missing (key, version) end in the Bloom filter.
		Filter: filter.NewBloomFilter(10),
		// By default corrupt journal and manifest chunks are dropped silently,
		// so a reopened DB can miss its newest synced writes (LIBRARIES.md).
		// Fail the open instead: the store then rebuilds from the blob files.
		Strict: opt.DefaultStrict | opt.StrictManifest | opt.StrictJournal,
		NoSync: noSync,
	}
}

// openIndex opens (creating if needed) the index at path. corrupt reports
// that goleveldb found the files corrupted; the caller rebuilds the index.
//
// The log writer writes the index without syncing it (the log is synced,
// and Open replays it from the checkpoint stored with the index changes).
// That is only sound if the index, after a crash, holds a prefix of its
// writes: within a journal file goleveldb's strict journal checks either
// see a prefix or report corruption (and the store rebuilds), but when
// goleveldb starts a new journal it closes the old one without syncing it,
// so newer, synced writes could survive older ones. The journal files are
// therefore synced when they are closed (syncedJournals).
func openIndex(path string, noSync bool) (idx *levelIndex, corrupt bool, err error) {
	stor, err := storage.OpenFile(path, false)
	if err != nil {
		return nil, false, err
	}
	var st storage.Storage = stor
	if !noSync {
		st = syncedJournals{stor}
	}
	db, err := leveldb.Open(st, indexOptions(noSync))
	if err != nil {
		stor.Close()
		// IsCorrupted uses a type switch, so it must see goleveldb's own
		// error, not a wrapped one.
		return nil, lverrors.IsCorrupted(err), err
	}
	return &levelIndex{db: db, stor: stor, sync: !noSync}, false, nil
}

func (x *levelIndex) close() error {
	err := x.db.Close()
	if cerr := x.stor.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncedJournals is goleveldb's file storage, but a journal file is synced
// before it is closed.
type syncedJournals struct{ storage.Storage }

func (s syncedJournals) Create(fd storage.FileDesc) (storage.Writer, error) {
	w, err := s.Storage.Create(fd)
	if err != nil || fd.Type != storage.TypeJournal {
		return w, err
	}
	return syncOnClose{w}, nil
}

type syncOnClose struct{ storage.Writer }

func (w syncOnClose) Close() error {
	err := w.Writer.Sync()
	if cerr := w.Writer.Close(); err == nil {
		err = cerr
	}
	return err
}

// get returns the record stored under ik, or ok false if there is none.
func (x *levelIndex) get(ik []byte) (r record, ok bool, err error) {
	v, err := x.db.Get(ik, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	r, err = decodeRecord(v)
	if err != nil {
		return record{}, false, err
	}
	return r, true, nil
}

func (x *levelIndex) put(ik []byte, r record) error {
	var buf [maxRecordLen]byte
	return x.db.Put(ik, appendRecord(buf[:0], r), &opt.WriteOptions{Sync: x.sync})
}

func (x *levelIndex) delete(ik []byte) error {
	return x.db.Delete(ik, &opt.WriteOptions{Sync: x.sync})
}

// write applies a batch atomically, synced unless the store is NoSync.
func (x *levelIndex) write(b *leveldb.Batch) error {
	return x.db.Write(b, &opt.WriteOptions{Sync: x.sync})
}

// writeLogged applies a batch atomically without syncing it: for changes
// the log can replay (see openIndex).
func (x *levelIndex) writeLogged(b *leveldb.Batch) error {
	return x.db.Write(b, nil)
}

var metaBarrier = metaKey([]byte("barrier"))

// barrier makes every write so far durable.
func (x *levelIndex) barrier() error {
	return x.db.Put(metaBarrier, nil, &opt.WriteOptions{Sync: x.sync})
}

// The log checkpoint: the log position up to which the index holds the
// effect of every log record. Open replays the log segments from there.
var metaCheckpoint = metaKey([]byte("log-checkpoint"))

func appendCheckpoint(dst []byte, seq uint64, off int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(dst, seq), uint64(off))
}

// checkpoint returns the log checkpoint; (0, 0) if there is none.
func (x *levelIndex) checkpoint() (seq uint64, off int64, err error) {
	v, err := x.db.Get(metaCheckpoint, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("%w: log checkpoint of %d bytes", errRecord, len(v))
	}
	return binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:])), nil
}

func (x *levelIndex) setCheckpoint(seq uint64, off int64) error {
	return x.db.Put(metaCheckpoint, appendCheckpoint(nil, seq, off), &opt.WriteOptions{Sync: x.sync})
}

// Index keys of values always start with a byte >= 1 (a key holds no NUL);
// keys starting with 0 are the store's own bookkeeping (Rebuild's
// tombstones), which scans never show.
var firstIndexKey = []byte{1}

func metaKey(parts ...[]byte) []byte {
	k := []byte{0}
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// scan calls fn for index entries with start <= key < limit (nil limit: no
// upper bound) in key order, backwards if reverse, until fn returns false.
// The key and record passed to fn are only valid during the call.
func (x *levelIndex) scan(start, limit []byte, reverse bool, fn func(ik []byte, r record) bool) error {
	if bytes.Compare(start, firstIndexKey) < 0 {
		start = firstIndexKey
	}
	it := x.db.NewIterator(&util.Range{Start: start, Limit: limit}, nil)
	next := it.Next
	ok := it.First()
	if reverse {
		next = it.Prev
		ok = it.Last()
	}
	var err error
	for ; ok; ok = next() {
		var r record
		if r, err = decodeRecord(it.Value()); err != nil {
			err = fmt.Errorf("index key %q: %w", it.Key(), err)
			break
		}
		if !fn(it.Key(), r) {
			break
		}
	}
	it.Release()
	if ierr := it.Error(); ierr != nil {
		return ierr
	}
	return err
}

// fresh reports whether the index holds no key at all, not even the
// store's bookkeeping.
func (x *levelIndex) fresh() (bool, error) {
	it := x.db.NewIterator(nil, nil)
	found := it.First()
	it.Release()
	return !found, it.Error()
}

// indexBatch collects puts and writes them in synced batches, for Rebuild.
type indexBatch struct {
	x     *levelIndex
	batch leveldb.Batch
}

const indexBatchLen = 1000

func (b *indexBatch) put(ik []byte, r record) error {
	var buf [maxRecordLen]byte
	b.batch.Put(ik, appendRecord(buf[:0], r)) // Batch copies key and value.
	if b.batch.Len() >= indexBatchLen {
		return b.flush()
	}
	return nil
}

func (b *indexBatch) flush() error {
	if b.batch.Len() == 0 {
		return nil
	}
	err := b.x.db.Write(&b.batch, &opt.WriteOptions{Sync: b.x.sync})
	b.batch.Reset()
	return err
}

// The next segment sequence number is kept under metaNextSeq, so that a
// number is never used twice even after its segment is gone: LSNs, which
// decide between a put and a tombstone, must only grow.
var metaNextSeq = metaKey([]byte("next-segment"))

func (x *levelIndex) nextSeq() (uint64, error) {
	v, err := x.db.Get(metaNextSeq, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: next segment number of %d bytes", errRecord, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (x *levelIndex) setNextSeq(seq uint64) error {
	return x.db.Put(metaNextSeq, binary.BigEndian.AppendUint64(nil, seq), &opt.WriteOptions{Sync: x.sync})
}
