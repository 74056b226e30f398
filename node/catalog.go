package node

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
	"github.com/valyala/fasthttp"
)

// The master's goleveldb holds several kinds of entries, told apart by the
// first byte of the key:
//
//	k KEY                       -> Record: the current version of KEY
//	g VOL 0x00 KEY 0x00 VER(8)  -> empty: a blob version VOL must delete
//	p VER(8) VOL 0x00 KEY       -> empty: a write in progress (an intent)
//	v VOL                       -> empty: VOL's own index has been merged
//	d VOL                       -> empty: VOL is being drained by an operator
//	h                           -> VER(8): no version at or above it was handed out
//	w VER(8) KEY                -> JSON writeIntent: a redirected write's ticket, until its commit
//	b BUCKET                    -> bucket record of the S3 face (bucket.go)
//	m KEY                       -> S3 metadata of one version of KEY (objmeta.go)
//	u KEY 0x00 UPLOAD           -> JSON uploadEntry: a multipart upload to KEY under way (multipart.go)
//	x KEY                       -> JSON manifest: the parts of KEY's multipart value, for one version
//	z UPLOAD                    -> TIME(8): a finished upload whose parts are to be removed
//	a                           -> INDEX(8): the last Raft log entry applied (raft.go)
//	c                           -> empty: this index predates Raft and is to be carried into its log
//
// The parts of multipart uploads are ordinary records under the reserved
// key prefix "_kvdb/mp/UPLOAD/" (they are placed, repaired and moved like
// any value); a client listing never shows them.
//
// Pending intents let a restarted master delete the blobs of writes that were
// cut off before they committed; at open they all become garbage entries.
const (
	pfxKey     = 'k'
	pfxGarbage = 'g'
	pfxPending = 'p'
	pfxKnown   = 'v'
	pfxDrain   = 'd'
	pfxCeiling = 'h'
	pfxTicket  = 'w'
	pfxBucket  = 'b'
	pfxObjMeta = 'm'
	pfxUpload  = 'u'
	pfxMfest   = 'x'
	pfxRelease = 'z'
	pfxApplied = 'a'
	pfxCarry   = 'c'
)

var errIndexClosed = errors.New("node: index closed")

// catalog is the master's metadata: every key's record, the intents of
// writes under way, the garbage queue. It is kept behind this small type so
// the storage engine (goleveldb, effectively unmaintained) can be replaced.
//
// A write that fails for lack of disk space leaves goleveldb's journal
// broken for good: the catalog then refuses writes at once (507, see
// errCatalogFull) until reopen finds room again and opens the database
// anew.
type catalog struct {
	dir  string
	opts *opt.Options
	dbp  atomic.Pointer[leveldb.DB]
	full atomic.Bool
	// reopenMu serializes reopen.
	reopenMu sync.Mutex

	// locks order the changes to one key (lock): a change reads the
	// record, decides, and writes under its key's lock.
	locks [256]sync.Mutex
	// cache holds hot records (lookup); every operation that writes a
	// record keeps it right.
	cache *recordCache
	// The version counter (version.go): verMu guards lastVersion, the
	// largest version handed out or merged, and verCeiling, the persisted
	// bound every version stays below.
	verMu       sync.Mutex
	lastVersion uint64
	verCeiling  uint64
	now         func() time.Time

	// repl, once set, replicates every write through the masters' Raft
	// log (raft.go): write hands the batch to it, and the log's apply
	// writes it here on every master.
	repl atomic.Pointer[raftApplier]
	// applied is the index of the last Raft log entry applied (also kept
	// in the database, entry a); only the log's apply touches it.
	applied atomic.Uint64
	// room caches roomForLog's last answer, asked at roomAt (monoNow).
	room   atomic.Bool
	roomAt atomic.Int64
}

// lock locks key's stripe and returns it, for the caller to unlock. A
// manifest blob's key shares its object's stripe, so that whoever holds
// the object's lock (a commit that replaces or removes it) also holds the
// blob's, and nobody ever needs both.
func (c *catalog) lock(key []byte) *sync.Mutex {
	key = bytes.TrimPrefix(key, []byte(manifestBlobPrefix))
	mu := &c.locks[xxhash.Sum64(key)%uint64(len(c.locks))]
	mu.Lock()
	return mu
}

// lookup returns key's current record, from the cache when it can. The
// record is shared: callers must not modify it.
func (c *catalog) lookup(key []byte) (*Record, bool, error) {
	if rec, ok := c.cache.get(key); ok {
		return rec, true, nil
	}
	mu := c.lock(key)
	defer mu.Unlock()
	if rec, ok := c.cache.get(key); ok {
		return rec, true, nil
	}
	var rec Record
	found, err := c.get(key, &rec)
	if err != nil || !found {
		return nil, false, err
	}
	c.cache.set(key, &rec)
	return &rec, true, nil
}

// cached records the outcome of op, a write of key's record (rec; nil for a
// removal) under its lock, in the cache: the new record on success,
// nothing (the next lookup reads it) otherwise. It returns err, wrapped.
func (c *catalog) cached(key []byte, rec *Record, err error, op string) error {
	if err != nil || rec == nil {
		c.cache.forget(key)
	} else {
		c.cache.set(key, rec)
	}
	if err != nil {
		return fmt.Errorf("node: index %s %q: %w", op, key, err)
	}
	return nil
}

var syncWrite = &opt.WriteOptions{Sync: true}

// errCatalogFull refuses writes while the master's disk is full.
var errCatalogFull = withStatus(fasthttp.StatusInsufficientStorage, errors.New("the master's disk is full: no write can be recorded until space is freed"))

// db is the open database.
func (c *catalog) db() *leveldb.DB { return c.dbp.Load() }

// write makes b part of the catalog: through the Raft log once the
// catalog is replicated (every master applies it, and it is durable on a
// quorum when write returns; sync is then moot), else applied here, synced
// or not.
func (c *catalog) write(b *leveldb.Batch, sync bool) error {
	if c.full.Load() {
		return errCatalogFull
	}
	if r := c.repl.Load(); r != nil {
		// The log cannot fail an append the way goleveldb can (the leader
		// would step down, and reads stop too): a disk short of room
		// refuses the write before it is logged.
		if !c.roomForLog() {
			c.full.Store(true)
			return errCatalogFull
		}
		err := r.apply(b)
		if err != nil && isNoSpace(err) {
			c.full.Store(true)
			return fmt.Errorf("%w (%v)", errCatalogFull, err)
		}
		return err
	}
	return c.writeLocal(b, sync)
}

// writeIntent records a write's intents (and its ticket): on the leader
// alone, not synced, never through the log. They serve the master that
// recorded them: its commit (logged) clears them on every master, and when
// it loses the leadership its writes in flight fail; the next leader
// cannot clean up after them (the copies they left on volumes are orphans
// that verify reports), as a master that lost power before they were
// synced could not. A master that leads again turns those it still has
// into garbage (promotePending).
func (c *catalog) writeIntent(b *leveldb.Batch) error {
	if c.full.Load() {
		return errCatalogFull
	}
	return c.writeLocal(b, false)
}

// writeLocal applies b to this master's database; a failure for lack of
// space marks the catalog full.
func (c *catalog) writeLocal(b *leveldb.Batch, sync bool) error {
	wo := (*opt.WriteOptions)(nil)
	if sync {
		wo = syncWrite
	}
	err := c.db().Write(b, wo)
	if err != nil && isNoSpace(err) {
		c.full.Store(true)
		return fmt.Errorf("%w (%v)", errCatalogFull, err)
	}
	return err
}

func (c *catalog) put1(k, v []byte, sync bool) error {
	var b leveldb.Batch
	b.Put(k, v)
	return c.write(&b, sync)
}

func (c *catalog) del1(k []byte, sync bool) error {
	var b leveldb.Batch
	b.Delete(k)
	return c.write(&b, sync)
}

// roomForLog reports whether the catalog's disk has catalogMinFree bytes
// free, as last seen: the disk is asked at most every 100 ms.
//
// The answer is stored before the time it was asked: a caller that sees
// the time sees the answer. (Storing the time first let a concurrent
// caller read the answer not yet stored, false on the first call: a new
// leader's first writes at once then marked the catalog full and were
// answered 507 with the disk nearly empty.)
func (c *catalog) roomForLog() bool {
	now := monoNow()
	if at := c.roomAt.Load(); at != 0 && now-at < int64(100*time.Millisecond) {
		return c.room.Load()
	}
	var st syscall.Statfs_t
	ok := syscall.Statfs(c.dir, &st) != nil || st.Bavail*uint64(st.Bsize) >= catalogMinFree
	c.room.Store(ok)
	c.roomAt.Store(now)
	return ok
}

// isNoSpace reports whether err is the disk (or a quota) being full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), "no space left on device")
}

// isFull reports whether the catalog refuses writes for lack of space.
func (c *catalog) isFull() bool { return c.full.Load() }

// reopen, while the catalog is full, checks whether the disk has room
// again (at least minFree bytes) and if so opens the database anew: its
// journal is broken after the failed write, and only a new open recovers
// it (the records written before are all there: a failed batch was never
// applied). It reports whether the catalog takes writes again.
func (c *catalog) reopen(minFree uint64) (bool, error) {
	c.reopenMu.Lock()
	defer c.reopenMu.Unlock()
	if !c.full.Load() {
		return true, nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(c.dir, &st); err != nil {
		return false, fmt.Errorf("node: statfs %s: %w", c.dir, err)
	}
	if st.Bavail*uint64(st.Bsize) < minFree {
		return false, nil
	}
	old := c.db()
	_ = old.Close()
	db, err := leveldb.OpenFile(c.dir, c.opts)
	if lerrors.IsCorrupted(err) {
		db, err = leveldb.RecoverFile(c.dir, c.opts)
	}
	if err != nil {
		// Keep the closed one in place: reads fail until a reopen works.
		return false, fmt.Errorf("node: reopen index %s: %w", c.dir, err)
	}
	c.dbp.Store(db)
	c.full.Store(false)
	return true, nil
}

// openCatalog opens (creating) the index under dir. wipe starts it empty, which
// makes the master rebuild it from the volumes as they join.
func openCatalog(dir string, wipe bool, cacheEntries int, now func() time.Time) (*catalog, bool, error) {
	if wipe {
		if err := os.RemoveAll(dir); err != nil {
			return nil, false, fmt.Errorf("node: wipe index %s: %w", dir, err)
		}
	}
	o := &opt.Options{
		OpenFilesCacheCapacity: 64,
		Filter:                 filter.NewBloomFilter(10),
	}
	recovered := false
	db, err := leveldb.OpenFile(dir, o)
	if lerrors.IsCorrupted(err) {
		db, err = leveldb.RecoverFile(dir, o)
		recovered = true
	}
	if err != nil {
		return nil, false, fmt.Errorf("node: open index %s: %w", dir, err)
	}
	c := &catalog{dir: dir, opts: o, cache: newRecordCache(cacheEntries), now: now}
	c.dbp.Store(db)
	if recovered {
		// The recovered index may have lost recent entries: the Raft log
		// is applied again from its start (or its snapshot), and every
		// volume's index is merged again as it joins.
		if err := c.deletePrefix([]byte{pfxKnown}); err != nil {
			db.Close()
			return nil, false, err
		}
		if err := c.writeLocal(deleteOne([]byte{pfxApplied}), true); err != nil {
			db.Close()
			return nil, false, err
		}
	}
	idx, err := c.appliedIndex()
	if err != nil {
		db.Close()
		return nil, false, err
	}
	c.applied.Store(idx)
	if c.verCeiling, err = c.versionCeiling(); err != nil {
		db.Close()
		return nil, false, err
	}
	c.lastVersion = c.verCeiling
	return c, recovered, nil
}

func (c *catalog) close() error { return c.db().Close() }

func recordKey(dst, key []byte) []byte {
	dst = append(dst, pfxKey)
	return append(dst, key...)
}

func garbageKey(vol string, key []byte, version uint64) []byte {
	b := make([]byte, 0, 1+len(vol)+1+len(key)+1+8)
	b = append(b, pfxGarbage)
	b = append(b, vol...)
	b = append(b, 0)
	b = append(b, key...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, version)
}

func parseGarbageKey(b []byte) (vol string, key []byte, version uint64, ok bool) {
	if len(b) < 1+1+1+1+8 || b[0] != pfxGarbage {
		return "", nil, 0, false
	}
	b = b[1:]
	i := bytes.IndexByte(b, 0)
	if i <= 0 {
		return "", nil, 0, false
	}
	vol, b = string(b[:i]), b[i+1:]
	if len(b) < 1+8 || b[len(b)-9] != 0 {
		return "", nil, 0, false
	}
	key = append([]byte(nil), b[:len(b)-9]...)
	return vol, key, binary.BigEndian.Uint64(b[len(b)-8:]), true
}

func pendingKey(version uint64, vol string, key []byte) []byte {
	b := make([]byte, 0, 1+8+len(vol)+1+len(key))
	b = append(b, pfxPending)
	b = binary.BigEndian.AppendUint64(b, version)
	b = append(b, vol...)
	b = append(b, 0)
	return append(b, key...)
}

// versionCeiling returns the persisted version ceiling: every version the
// master ever handed out is below it. An index written before the ceiling
// existed has none; then it is the largest version any entry names, found
// by one scan.
func (c *catalog) versionCeiling() (uint64, error) {
	v, err := c.db().Get([]byte{pfxCeiling}, nil)
	if err == nil && len(v) == 8 {
		return binary.BigEndian.Uint64(v), nil
	}
	if err != nil && !errors.Is(err, leveldb.ErrNotFound) {
		return 0, fmt.Errorf("node: index version ceiling: %w", err)
	}
	var top uint64
	it := c.db().NewIterator(nil, nil)
	for it.Next() {
		k := it.Key()
		var ver uint64
		switch k[0] {
		case pfxKey:
			var r Record
			if decodeRecord(it.Value(), &r) == nil {
				ver = r.Version
			}
		case pfxGarbage:
			_, _, ver, _ = parseGarbageKey(k)
		case pfxPending:
			if len(k) >= 9 {
				ver = binary.BigEndian.Uint64(k[1:9])
			}
		}
		top = max(top, ver)
	}
	it.Release()
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("node: index version scan: %w", err)
	}
	return top + 1, nil
}

// setVersionCeiling persists a new version ceiling (synced: a restarted
// master must never hand out a version it handed out before).
func (c *catalog) setVersionCeiling(v uint64) error {
	if err := c.put1([]byte{pfxCeiling}, binary.BigEndian.AppendUint64(nil, v), true); err != nil {
		return fmt.Errorf("node: index version ceiling: %w", err)
	}
	return nil
}

func ticketKey(version uint64, key []byte) []byte {
	b := make([]byte, 0, 1+8+len(key))
	b = append(b, pfxTicket)
	b = binary.BigEndian.AppendUint64(b, version)
	return append(b, key...)
}

// writeIntent is what the master promised a redirected write: the ticket's
// contents and the conditions to check again at its commit.
type writeIntent struct {
	Size       int64    `json:"size"`
	Expiry     int64    `json:"exp"`
	Replicas   []string `json:"r"`
	Spares     []string `json:"sp,omitempty"`
	CreateOnly bool     `json:"post,omitempty"`
	IfMatch    string   `json:"im,omitempty"`
	IfNone     string   `json:"inm,omitempty"`
	IfUnmodSec int64    `json:"ius,omitempty"` // If-Unmodified-Since, unix s
	Issued     int64    `json:"at"`            // unix s
	// Upload is, for a multipart part, the key (BUCKET/KEY) of the object
	// its upload is to; the upload's ID is in the part's key. The commit
	// needs both to find the upload and check it is still open.
	Upload string `json:"up,omitempty"`
}

// addTicket records a redirected write's intent: its ticket and the
// pending intents of its replicas, in one batch.
func (c *catalog) addTicket(version uint64, key []byte, wi *writeIntent) error {
	var b leveldb.Batch
	v, _ := json.Marshal(wi)
	b.Put(ticketKey(version, key), v)
	for _, vol := range wi.Replicas {
		b.Put(pendingKey(version, vol, key), nil)
	}
	if err := c.writeIntent(&b); err != nil {
		return fmt.Errorf("node: index ticket %q: %w", key, err)
	}
	return nil
}

// getTicket reads a redirected write's intent; false when there is none
// (committed, abandoned, or never issued).
func (c *catalog) getTicket(version uint64, key []byte) (writeIntent, bool, error) {
	var wi writeIntent
	v, err := c.db().Get(ticketKey(version, key), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return wi, false, nil
	}
	if err == nil {
		err = json.Unmarshal(v, &wi)
	}
	if err != nil {
		return wi, false, fmt.Errorf("node: index ticket %q: %w", key, err)
	}
	return wi, true, nil
}

// tickets calls fn with every redirected write's intent until fn returns
// false.
func (c *catalog) tickets(fn func(version uint64, key []byte, wi writeIntent) bool) error {
	it := c.db().NewIterator(util.BytesPrefix([]byte{pfxTicket}), nil)
	defer it.Release()
	for it.Next() {
		k := it.Key()
		if len(k) < 1+8+1 {
			continue
		}
		var wi writeIntent
		if json.Unmarshal(it.Value(), &wi) != nil {
			continue
		}
		if !fn(binary.BigEndian.Uint64(k[1:9]), bytes.Clone(k[9:]), wi) {
			break
		}
	}
	return it.Error()
}

func knownKey(vol string) []byte { return append([]byte{pfxKnown}, vol...) }

// get reads key's record into r; it reports false when the key is absent.
func (c *catalog) get(key []byte, r *Record) (bool, error) {
	buf := make([]byte, 0, 1+len(key))
	v, err := c.db().Get(recordKey(buf, key), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("node: index get %q: %w", string(key), err)
	}
	if err := decodeRecord(v, r); err != nil {
		return false, fmt.Errorf("node: index get %q: %w", string(key), err)
	}
	return true, nil
}

// addPending records the intent to write version of key on vols. The write
// need not be synced: losing it on power loss only leaves an orphan blob that
// a verify sweep finds.
func (c *catalog) addPending(version uint64, key []byte, vols ...string) error {
	var b leveldb.Batch
	for _, vol := range vols {
		b.Put(pendingKey(version, vol, key), nil)
	}
	if err := c.writeIntent(&b); err != nil {
		return fmt.Errorf("node: index pending %q: %w", key, err)
	}
	return nil
}

// has reports whether the index holds k (an error reads as true: the
// caller then deletes it anyway).
func (c *catalog) has(k []byte) bool {
	ok, err := c.db().Has(k, nil)
	return ok || err != nil
}

// isPending reports whether a write of version of key to vol is under way.
func (c *catalog) isPending(version uint64, vol string, key []byte) (bool, error) {
	return c.db().Has(pendingKey(version, vol, key), nil)
}

// abandon turns the pending intents of a failed write into garbage entries
// (and drops its ticket, if it was redirected).
func (c *catalog) abandon(version uint64, key []byte, vols []string) error {
	var b leveldb.Batch
	b.Delete(ticketKey(version, key))
	for _, vol := range vols {
		b.Delete(pendingKey(version, vol, key))
		b.Put(garbageKey(vol, key, version), nil)
	}
	if err := c.write(&b, false); err != nil {
		return fmt.Errorf("node: index abandon %q: %w", key, err)
	}
	return nil
}

// commit makes rec the current version of key in one synced batch: it clears
// the write's pending intents (on every volume it was tried on) and its
// ticket, if it was redirected, and queues the previous version's blobs, if
// any, for deletion.
func (c *catalog) commit(key []byte, rec *Record, tried []string, old *Record) error {
	var b leveldb.Batch
	b.Put(recordKey(nil, key), appendRecord(nil, rec))
	// Only a redirected write has a ticket: a deletion of none would leave
	// a tombstone that every scan of the tickets walks until compaction.
	if tk := ticketKey(rec.Version, key); c.has(tk) {
		b.Delete(tk)
	}
	for _, vol := range tried {
		b.Delete(pendingKey(rec.Version, vol, key))
		if !contains(rec.Replicas, vol) {
			b.Put(garbageKey(vol, key, rec.Version), nil)
		}
	}
	if old != nil {
		for _, vol := range old.Replicas {
			b.Put(garbageKey(vol, key, old.Version), nil)
		}
		c.releaseParts(&b, key, old)
	}
	return c.cached(key, rec, c.write(&b, true), "commit")
}

// remove deletes key's record and queues its blobs for deletion.
func (c *catalog) remove(key []byte, old *Record) error {
	var b leveldb.Batch
	b.Delete(recordKey(nil, key))
	for _, vol := range old.Replicas {
		b.Put(garbageKey(vol, key, old.Version), nil)
	}
	c.releaseParts(&b, key, old)
	return c.cached(key, nil, c.write(&b, true), "delete")
}

// put writes a record without touching intents (used by the merge of a
// volume's index); old, when not nil, is the record it replaces, whose
// parts are released if it is a multipart value.
func (c *catalog) put(key []byte, rec *Record, garbage map[string]uint64, old *Record) error {
	var b leveldb.Batch
	b.Put(recordKey(nil, key), appendRecord(nil, rec))
	for vol, ver := range garbage {
		b.Put(garbageKey(vol, key, ver), nil)
	}
	c.releaseParts(&b, key, old)
	return c.cached(key, rec, c.write(&b, false), "put")
}

// replaceReplicas records rec (same version, new replica set) after a
// repair copied the value to added: their intents are cleared, and the
// copies on the lost volumes are queued for deletion for when they return.
func (c *catalog) replaceReplicas(key []byte, rec *Record, added, lost []string) error {
	var b leveldb.Batch
	b.Put(recordKey(nil, key), appendRecord(nil, rec))
	for _, vol := range added {
		b.Delete(pendingKey(rec.Version, vol, key))
	}
	for _, vol := range lost {
		b.Put(garbageKey(vol, key, rec.Version), nil)
	}
	return c.cached(key, rec, c.write(&b, true), "repair")
}

func (c *catalog) addGarbage(vol string, key []byte, version uint64) error {
	return c.put1(garbageKey(vol, key, version), nil, false)
}

func (c *catalog) doneGarbage(vol string, key []byte, version uint64) error {
	return c.del1(garbageKey(vol, key, version), false)
}

// doneGarbageAll is doneGarbage of every item, in one write.
func (c *catalog) doneGarbageAll(items []garbageItem) error {
	if len(items) == 0 {
		return nil
	}
	var b leveldb.Batch
	for _, g := range items {
		b.Delete(garbageKey(g.vol, g.key, g.version))
	}
	return c.write(&b, false)
}

// garbage calls fn for every queued deletion until fn returns false.
func (c *catalog) garbage(fn func(vol string, key []byte, version uint64) bool) error {
	it := c.db().NewIterator(util.BytesPrefix([]byte{pfxGarbage}), nil)
	for it.Next() {
		vol, key, ver, ok := parseGarbageKey(it.Key())
		if !ok {
			continue
		}
		if !fn(vol, key, ver) {
			break
		}
	}
	it.Release()
	return it.Error()
}

func (c *catalog) isKnown(vol string) (bool, error) {
	return c.db().Has(knownKey(vol), nil)
}

func (c *catalog) setKnown(vol string) error {
	return c.put1(knownKey(vol), nil, true)
}

// setDrain records (on) or clears the operator's request to drain vol.
func (c *catalog) setDrain(vol string, on bool) error {
	k := append([]byte{pfxDrain}, vol...)
	if on {
		return c.put1(k, nil, true)
	}
	return c.del1(k, true)
}

// drains returns the volumes an operator asked to drain.
func (c *catalog) drains() (map[string]bool, error) {
	it := c.db().NewIterator(util.BytesPrefix([]byte{pfxDrain}), nil)
	out := map[string]bool{}
	for it.Next() {
		out[string(it.Key()[1:])] = true
	}
	it.Release()
	return out, it.Error()
}

// list returns up to limit keys that start with prefix, from start on (in
// byte order), and the key that begins the next page ("" on the last page).
func (c *catalog) list(prefix, start []byte, limit int) (keys []string, next string, err error) {
	r := util.BytesPrefix(recordKey(nil, prefix))
	if s := recordKey(nil, start); bytes.Compare(s, r.Start) > 0 {
		r.Start = s
	}
	it := c.db().NewIterator(r, nil)
	for ok := it.First(); ok; ok = it.Next() {
		if bytes.HasPrefix(it.Key()[1:], []byte(ReservedPrefix)) {
			// The parts of multipart values: not the client's keys.
			if !it.Seek(recordKey(nil, prefixEnd([]byte(ReservedPrefix)))) {
				break
			}
		}
		k := string(it.Key()[1:])
		if len(keys) == limit {
			next = k
			break
		}
		keys = append(keys, k)
	}
	it.Release()
	if err := it.Error(); err != nil {
		return nil, "", fmt.Errorf("node: index list: %w", err)
	}
	return keys, next, nil
}

// scan calls fn for every record until fn returns false.
func (c *catalog) scan(fn func(key []byte, rec *Record) bool) error {
	return c.scanFrom(nil, fn)
}

// scanFrom calls fn for every record from key start on (in byte order)
// until fn returns false. fn must copy key if it keeps it.
func (c *catalog) scanFrom(start []byte, fn func(key []byte, rec *Record) bool) error {
	r := util.BytesPrefix([]byte{pfxKey})
	if len(start) > 0 {
		r.Start = recordKey(nil, start)
	}
	it := c.db().NewIterator(r, nil)
	var rec Record
	for it.Next() {
		if err := decodeRecord(it.Value(), &rec); err != nil {
			continue
		}
		if !fn(it.Key()[1:], &rec) {
			break
		}
	}
	it.Release()
	return it.Error()
}

// promotePending turns every leftover intent (from a master that stopped
// mid-write: its previous run) into a garbage entry, and drops every
// ticket: a redirected write under way fails at its commit. Called by a
// master when it first leads in a run, before it serves.
func (c *catalog) promotePending() error {
	var b leveldb.Batch
	tk := c.db().NewIterator(util.BytesPrefix([]byte{pfxTicket}), nil)
	for tk.Next() {
		b.Delete(append([]byte(nil), tk.Key()...))
	}
	tk.Release()
	if err := tk.Error(); err != nil {
		return fmt.Errorf("node: index ticket scan: %w", err)
	}
	it := c.db().NewIterator(util.BytesPrefix([]byte{pfxPending}), nil)
	for it.Next() {
		k := it.Key()
		if len(k) < 1+8+2 {
			b.Delete(k)
			continue
		}
		ver := binary.BigEndian.Uint64(k[1:9])
		rest := k[9:]
		i := bytes.IndexByte(rest, 0)
		if i <= 0 {
			b.Delete(k)
			continue
		}
		b.Delete(k)
		b.Put(garbageKey(string(rest[:i]), rest[i+1:], ver), nil)
	}
	it.Release()
	if err := it.Error(); err != nil {
		return fmt.Errorf("node: index pending scan: %w", err)
	}
	if b.Len() == 0 {
		return nil
	}
	return c.write(&b, true)
}

func (c *catalog) deletePrefix(p []byte) error {
	it := c.db().NewIterator(util.BytesPrefix(p), nil)
	var b leveldb.Batch
	for it.Next() {
		b.Delete(append([]byte(nil), it.Key()...))
	}
	it.Release()
	if err := it.Error(); err != nil {
		return err
	}
	return c.write(&b, true)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
