package node

import (
	"encoding/json"
	"slices"

	"github.com/syndtr/goleveldb/leveldb"
)

// The catalog's named operations: each reads a key's record, decides and
// writes under the key's lock, so that callers never repeat lock → get →
// compare → write → cache by hand. They are the changes a replicated
// catalog will log (issue 13); none does I/O beyond the catalog itself.

// removeKey removes key's record and queues its blobs for deletion, if
// check (nil: none) accepts the record. It returns the record removed and
// whether there was one; a check's error is returned as is.
func (c *catalog) removeKey(key []byte, check func(rec *Record) error) (Record, bool, error) {
	mu := c.lock(key)
	defer mu.Unlock()
	var rec Record
	found, err := c.get(key, &rec)
	if err != nil || !found {
		return rec, false, err
	}
	if check != nil {
		if err := check(&rec); err != nil {
			return rec, true, err
		}
	}
	return rec, true, c.remove(key, &rec)
}

// mergeEntry adds what a volume's own index says it holds (vol holds
// version ver of key, as entry) to the catalog: the newest version of a key
// wins, an equal version adds vol as a replica, and an older one is queued
// for deletion on vol. A version queued for deletion on vol (deleted or
// replaced while the volume's listing was read) is not brought back, nor
// is a version a write in flight is putting there.
func (c *catalog) mergeEntry(vol string, key []byte, entry Record) error {
	if has, err := c.db().Has(garbageKey(vol, key, entry.Version), nil); err != nil || has {
		return err
	}
	// A copy of a write still in flight: its commit records it (or its
	// failure deletes it), not the merge.
	if pending, err := c.isPending(entry.Version, vol, key); err != nil || pending {
		return err
	}
	if err := c.observeVersion(entry.Version); err != nil {
		return err
	}
	mu := c.lock(key)
	defer mu.Unlock()
	return c.mergeLocked(vol, key, entry)
}

// mergeLocked is mergeEntry past its checks, under key's lock.
func (c *catalog) mergeLocked(vol string, key []byte, entry Record) error {
	var rec Record
	found, err := c.get(key, &rec)
	if err != nil {
		return err
	}
	switch {
	case !found || entry.Version > rec.Version:
		garbage := map[string]uint64{}
		var old *Record
		if found {
			for _, r := range rec.Replicas {
				garbage[r] = rec.Version
			}
			old = &rec // a multipart value (rebuilt from its blob) releases its parts
		}
		entry.Replicas = []string{vol}
		return c.put(key, &entry, garbage, old)
	case entry.Version == rec.Version:
		if contains(rec.Replicas, vol) || entry.Checksum != rec.Checksum {
			return nil
		}
		rec.Replicas = append(rec.Replicas, vol)
		return c.put(key, &rec, nil, nil)
	default:
		return c.addGarbage(vol, key, entry.Version)
	}
}

// mergeManifest is mergeEntry for a manifest blob (entry, on vol, of key
// bk) whose content is mb: unless the catalog holds the object at the
// blob's version or newer, the blob makes the object's record (a multipart
// value), its manifest and its S3 metadata what they were at Complete,
// replacing an older value as a newer version does; then the blob itself
// is merged as any value. A blob older than its object is queued for
// deletion on vol.
func (c *catalog) mergeManifest(vol string, bk []byte, entry Record, mb *manifestBlob) error {
	if has, err := c.db().Has(garbageKey(vol, bk, entry.Version), nil); err != nil || has {
		return err
	}
	if pending, err := c.isPending(entry.Version, vol, bk); err != nil || pending {
		return err
	}
	if err := c.observeVersion(entry.Version); err != nil {
		return err
	}
	key := []byte(mb.Key)
	mu := c.lock(key) // bk's too
	defer mu.Unlock()
	var cur Record
	found, err := c.get(key, &cur)
	switch {
	case err != nil:
		return err
	case found && cur.Version > entry.Version:
		return c.addGarbage(vol, bk, entry.Version)
	case found && cur.Version == entry.Version:
		return c.mergeLocked(vol, bk, entry)
	}
	rec := mb.record()
	var b leveldb.Batch
	if found {
		for _, r := range cur.Replicas {
			b.Put(garbageKey(r, key, cur.Version), nil)
		}
		c.releaseParts(&b, key, &cur)
	}
	c.dropManifestBlob(&b, key, entry.Version-1)
	v, _ := json.Marshal(&mb.Manifest)
	b.Put(manifestKey(key), v)
	b.Put(recordKey(nil, key), appendRecord(nil, &rec))
	if rec.Meta {
		b.Put(objMetaKey(key), appendObjMeta(nil, rec.Version, mb.Meta))
	}
	if err := c.cached(key, &rec, c.write(&b, false), "merge manifest"); err != nil {
		return err
	}
	return c.mergeLocked(vol, bk, entry)
}

// dropStaleManifestBlob removes the record of key's manifest blob of
// version, and queues its copies for deletion, unless key's value is the
// multipart value of that version: a blob whose object is gone (a merge
// that could not read it, a blob merged after its object was replaced).
func (c *catalog) dropStaleManifestBlob(key []byte, version uint64) error {
	mu := c.lock(key)
	defer mu.Unlock()
	if live, err := c.multipartAt(key, version); err != nil || live {
		return err
	}
	bk, ok := manifestBlobKey(key)
	if !ok {
		return nil
	}
	var blob Record
	if found, err := c.get(bk, &blob); err != nil || !found || blob.Version != version {
		return err
	}
	var b leveldb.Batch
	c.dropManifestBlob(&b, key, version)
	return c.cached(bk, nil, c.write(&b, false), "drop manifest blob")
}

// switchReplicas records replicas as the holders of expect's version of
// key, provided the record is still expect (same version, same replicas):
// added lose their intents, dropped are queued for deletion. When the
// record changed meanwhile (an overwrite, a delete, another move), the
// copies on added are queued for deletion instead. It reports whether the
// switch happened.
func (c *catalog) switchReplicas(key []byte, expect *Record, replicas, added, dropped []string) (bool, error) {
	mu := c.lock(key)
	defer mu.Unlock()
	var cur Record
	found, err := c.get(key, &cur)
	if err != nil {
		return false, err
	}
	if !found || cur.Version != expect.Version || !sameNames(cur.Replicas, expect.Replicas) {
		return false, c.abandon(expect.Version, key, added)
	}
	next := cur
	next.Replicas = replicas
	if err := c.replaceReplicas(key, &next, added, dropped); err != nil {
		return false, err
	}
	return true, nil
}

// dropReplica removes vol from the replicas of key, provided the record is
// still at version and names vol: the volume no longer holds that version.
// No deletion is queued, as there is nothing left to delete; a new copy on
// the same volume stays safe. It returns the record left and whether it
// changed.
func (c *catalog) dropReplica(key []byte, version uint64, vol string) (Record, bool, error) {
	mu := c.lock(key)
	defer mu.Unlock()
	var cur Record
	found, err := c.get(key, &cur)
	if err != nil || !found || cur.Version != version || !contains(cur.Replicas, vol) {
		return cur, false, err
	}
	next := cur.clone()
	next.Replicas = slices.DeleteFunc(next.Replicas, func(name string) bool { return name == vol })
	if err := c.replaceReplicas(key, &next, nil, nil); err != nil {
		return cur, false, err
	}
	return next, true, nil
}

// commitWrite makes rec (written to the volumes in tried) key's value. The
// write takes effect here, under the key lock, or not at all: check (the
// write's conditions, against the key's state now) may refuse it, and a
// write that a later one has overtaken (its version is older than the one
// now stored) is refused with errSuperseded rather than acknowledged, since
// acknowledging it would claim an effect it cannot have. beforeReplace,
// when a value is replaced, runs just before the old version is queued for
// deletion and returns what undoes it should the commit fail. It reports
// whether a value was replaced. On error nothing changed.
func (c *catalog) commitWrite(key []byte, rec *Record, tried []string, check func(found bool, old *Record) error, beforeReplace func(old *Record) (undo func())) (replaced bool, err error) {
	mu := c.lock(key)
	defer mu.Unlock()
	old, found, err := c.admitCommit(key, rec.Version, check)
	switch {
	case err != nil:
		return false, err
	case found:
		undo := beforeReplace(&old)
		if err := c.commit(key, rec, tried, &old); err != nil {
			undo()
			return false, err
		}
		return true, nil
	default:
		return false, c.commit(key, rec, tried, nil)
	}
}

// admitCommit reads key's record, under its lock (the caller's), for a
// commit of version: check (the write's conditions) may refuse it, and a
// version older than the one stored is refused with errSuperseded. It
// returns the record the commit replaces, if any.
func (c *catalog) admitCommit(key []byte, version uint64, check func(found bool, old *Record) error) (Record, bool, error) {
	var old Record
	found, err := c.get(key, &old)
	if err != nil {
		return old, false, err
	}
	if err := check(found, &old); err != nil {
		return old, false, err
	}
	if found && old.Version > version {
		return old, false, errSuperseded
	}
	return old, found, nil
}
