package store

import (
	"errors"
	"fmt"

	"github.com/syndtr/goleveldb/leveldb"
	lverrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// levelIndex is the only code that knows about goleveldb. goleveldb is
// effectively unmaintained (LIBRARIES.md), so the rest of the package talks to
// this small type and the index can be swapped by rewriting this file.
type levelIndex struct {
	db   *leveldb.DB
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
func openIndex(path string, noSync bool) (idx *levelIndex, corrupt bool, err error) {
	db, err := leveldb.OpenFile(path, indexOptions(noSync))
	if err != nil {
		// IsCorrupted uses a type switch, so it must see goleveldb's own
		// error, not a wrapped one.
		return nil, lverrors.IsCorrupted(err), err
	}
	return &levelIndex{db: db, sync: !noSync}, false, nil
}

func (x *levelIndex) close() error { return x.db.Close() }

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

// scan calls fn for index entries with start <= key < limit (nil limit: no
// upper bound) in key order, backwards if reverse, until fn returns false.
// The key and record passed to fn are only valid during the call.
func (x *levelIndex) scan(start, limit []byte, reverse bool, fn func(ik []byte, r record) bool) error {
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

// empty reports whether the index holds no entry at all.
func (x *levelIndex) empty() (bool, error) {
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
