package node

// The catalog's entries and operations for multipart values (see
// multipart.go for the design). Like every catalog change they end in
// c.write: one batch each.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/kvdb/kvdb/node/client"
	"github.com/kvdb/kvdb/store"
)

// partPrefix starts the key of every part of every upload:
// "_kvdb/mp/UPLOAD/NNNNN".
const partPrefix = ReservedPrefix + "mp/"

// partKey is the key of part n of upload id.
func partKey(id string, n int) []byte {
	b := make([]byte, 0, len(partPrefix)+len(id)+1+5)
	b = append(b, partPrefix...)
	b = append(b, id...)
	b = append(b, '/')
	s := strconv.Itoa(n)
	for i := len(s); i < 5; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// uploadParts is the key prefix of upload id's parts.
func uploadParts(id string) []byte { return []byte(partPrefix + id + "/") }

// parsePartKey splits a part's key into its upload and part number.
func parsePartKey(key []byte) (id string, n int, ok bool) {
	rest, ok := bytes.CutPrefix(key, []byte(partPrefix))
	if !ok {
		return "", 0, false
	}
	i := bytes.IndexByte(rest, '/')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(string(rest[i+1:]))
	if err != nil || n < 1 || n > maxParts {
		return "", 0, false
	}
	return string(rest[:i]), n, true
}

// manifestBlobPrefix starts the key of every manifest blob:
// "_kvdb/mf/KEY" is the blob of KEY's multipart value, a small value of its
// own on the volumes (placed, repaired, moved, verified and scrubbed like
// any other) that holds what the catalog knows of the object, so that a
// catalog rebuilt from the volumes gets the object back (mergeManifest).
const manifestBlobPrefix = ReservedPrefix + "mf/"

// manifestBlobKey is the key of key's manifest blob; false when it would
// be longer than a volume takes (an object key of more than 1015 bytes:
// such an object has no blob, and a rebuild does not restore it).
func manifestBlobKey(key []byte) ([]byte, bool) {
	if len(manifestBlobPrefix)+len(key) > store.MaxKeyLen {
		return nil, false
	}
	return append([]byte(manifestBlobPrefix), key...), true
}

// manifestBlob is the content of a manifest blob: the object's record
// (its version is the blob's, its ModTime that version's time), its
// manifest and its S3 metadata, as Complete wrote them.
type manifestBlob struct {
	Key      string          `json:"key"`
	Size     int64           `json:"size"`
	Checksum uint64          `json:"sum"`
	Manifest manifest        `json:"manifest"`
	Meta     json.RawMessage `json:"meta,omitempty"`
}

// record is the object's record the blob describes.
func (mb *manifestBlob) record() Record {
	v := mb.Manifest.Version
	return Record{Version: v, Size: mb.Size, Checksum: mb.Checksum, ModTime: versionTime(v), Parts: len(mb.Manifest.Parts), Meta: len(mb.Meta) > 0}
}

func uploadKey(key []byte, id string) []byte {
	b := make([]byte, 0, 1+len(key)+1+len(id))
	b = append(b, pfxUpload)
	b = append(b, key...)
	b = append(b, 0)
	return append(b, id...)
}

func manifestKey(key []byte) []byte { return append([]byte{pfxMfest}, key...) }

func releaseKey(id string) []byte { return append([]byte{pfxRelease}, id...) }

// uploadEntry is a multipart upload under way.
type uploadEntry struct {
	Initiated int64              `json:"at"` // unix ns
	Meta      *client.ObjectMeta `json:"meta,omitempty"`
	// Completing is set while a CompleteMultipartUpload runs: parts are
	// refused from then on.
	Completing bool `json:"completing,omitempty"`
}

// manifest lists the parts of one version of a multipart value, in order.
type manifest struct {
	Version uint64         `json:"v"`
	Upload  string         `json:"upload"`
	Parts   []manifestPart `json:"parts"`
}

// manifestPart is one part of a manifest: the version of its key the
// value is made of.
type manifestPart struct {
	N        int    `json:"n"`
	Version  uint64 `json:"ver"`
	Size     int64  `json:"size"`
	Checksum uint64 `json:"sum"`
	MD5      string `json:"md5"`
}

// getUpload reads the upload id of key.
func (c *catalog) getUpload(key []byte, id string) (uploadEntry, bool, error) {
	var u uploadEntry
	v, err := c.db().Get(uploadKey(key, id), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return u, false, nil
	}
	if err == nil {
		err = json.Unmarshal(v, &u)
	}
	if err != nil {
		return u, false, fmt.Errorf("node: upload %s of %q: %w", id, key, err)
	}
	return u, true, nil
}

// setUpload records (creates or updates) the upload id of key.
func (c *catalog) setUpload(key []byte, id string, u *uploadEntry) error {
	v, _ := json.Marshal(u)
	if err := c.put1(uploadKey(key, id), v, true); err != nil {
		return fmt.Errorf("node: upload %s of %q: %w", id, key, err)
	}
	return nil
}

// endUpload ends the upload id of key (aborted) and releases its parts,
// for removal at once.
func (c *catalog) endUpload(key []byte, id string) error {
	var b leveldb.Batch
	b.Delete(uploadKey(key, id))
	b.Put(releaseKey(id), binary.BigEndian.AppendUint64(nil, 0))
	if err := c.write(&b, true); err != nil {
		return fmt.Errorf("node: abort upload %s of %q: %w", id, key, err)
	}
	return nil
}

// uploads calls fn for every upload under way whose key starts with
// prefix, after (afterKey, afterID) (S3's key-marker and upload-id-marker),
// in order of key then ID, until fn returns false.
func (c *catalog) uploads(prefix, afterKey []byte, afterID string, fn func(key []byte, id string, u *uploadEntry) bool) error {
	r := util.BytesPrefix(append([]byte{pfxUpload}, prefix...))
	if len(afterKey) > 0 {
		// After (afterKey, afterID); with no afterID, after every upload
		// of afterKey (IDs are hex digits, below 0xff).
		s := append(uploadKey(afterKey, afterID), 0)
		if afterID == "" {
			s = uploadKey(afterKey, "\xff")
		}
		if bytes.Compare(s, r.Start) > 0 {
			r.Start = s
		}
	}
	it := c.db().NewIterator(r, nil)
	defer it.Release()
	for it.Next() {
		k := it.Key()[1:]
		i := bytes.LastIndexByte(k, 0)
		if i < 0 {
			continue
		}
		var u uploadEntry
		if json.Unmarshal(it.Value(), &u) != nil {
			continue
		}
		if !fn(bytes.Clone(k[:i]), string(k[i+1:]), &u) {
			break
		}
	}
	return it.Error()
}

// getManifest reads the manifest of key, for its version version (false:
// none, or one of another version).
func (c *catalog) getManifest(key []byte, version uint64) (*manifest, bool, error) {
	v, err := c.db().Get(manifestKey(key), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return nil, false, nil
	}
	var mf manifest
	if err == nil {
		err = json.Unmarshal(v, &mf)
	}
	if err != nil {
		return nil, false, fmt.Errorf("node: manifest of %q: %w", key, err)
	}
	if mf.Version != version {
		return nil, false, nil
	}
	return &mf, true, nil
}

// releaseParts adds to b, when old is a multipart value, the removal of
// its manifest and the release of its upload's parts (the upload sweep
// deletes them, after the move grace: readers of old may still stream).
// Called by every operation that replaces or removes a record, under the
// key's lock.
func (c *catalog) releaseParts(b *leveldb.Batch, key []byte, old *Record) {
	if old == nil || old.Parts == 0 {
		return
	}
	v, err := c.db().Get(manifestKey(key), nil)
	var mf manifest
	if err != nil || json.Unmarshal(v, &mf) != nil || mf.Version != old.Version {
		return // the sweep's full pass finds the parts unowned
	}
	b.Delete(manifestKey(key))
	b.Put(releaseKey(mf.Upload), binary.BigEndian.AppendUint64(nil, uint64(c.now().UnixNano())))
	c.dropManifestBlob(b, key, old.Version)
}

// dropManifestBlob adds to b the removal of key's manifest blob, when it
// is that of version or older, and the deletion of its copies. The caller
// holds key's lock, hence the blob's (see lock); the blob leaves the
// record cache now, so that nobody reads it from there after the write.
func (c *catalog) dropManifestBlob(b *leveldb.Batch, key []byte, version uint64) {
	bk, ok := manifestBlobKey(key)
	if !ok {
		return
	}
	var rec Record
	if found, err := c.get(bk, &rec); err != nil || !found || rec.Version > version {
		return
	}
	b.Delete(recordKey(nil, bk))
	for _, vol := range rec.Replicas {
		b.Put(garbageKey(vol, bk, rec.Version), nil)
	}
	c.cache.forget(bk)
}

// commitManifest makes rec, a multipart value made of mf's parts, key's
// value, with its S3 metadata (metaJSON), and ends upload id: all in one
// synced batch under the key's lock, if check accepts the key's current
// state (found, old). The value it replaces, if any, is queued for
// deletion (blobs) or released (parts); beforeReplace runs just before,
// as commitWrite's does. blob, when not nil, is the record of the value's
// manifest blob, written to the volumes in tried: it becomes the blob
// key's record in the same batch, its intents cleared as a commit's are.
// It reports whether a value was replaced.
func (c *catalog) commitManifest(key []byte, id string, rec *Record, mf *manifest, metaJSON []byte, blob *Record, tried []string, check func(found bool, old *Record) error, beforeReplace func(old *Record) (undo func())) (bool, error) {
	mu := c.lock(key)
	defer mu.Unlock()
	old, found, err := c.admitCommit(key, rec.Version, check)
	if err != nil {
		return false, err
	}
	undo := func() {}
	var b leveldb.Batch
	if found {
		undo = beforeReplace(&old)
		for _, vol := range old.Replicas {
			b.Put(garbageKey(vol, key, old.Version), nil)
		}
		c.releaseParts(&b, key, &old)
	}
	v, _ := json.Marshal(mf)
	b.Put(manifestKey(key), v)
	rec.Meta = true
	b.Put(recordKey(nil, key), appendRecord(nil, rec))
	b.Put(objMetaKey(key), appendObjMeta(nil, rec.Version, metaJSON))
	b.Delete(uploadKey(key, id))
	var bk []byte
	if blob != nil {
		bk, _ = manifestBlobKey(key)
		// A blob left by an older value that was not released (a
		// rebuilt catalog's) goes too.
		c.dropManifestBlob(&b, key, rec.Version-1)
		b.Put(recordKey(nil, bk), appendRecord(nil, blob))
		for _, vol := range tried {
			b.Delete(pendingKey(blob.Version, vol, bk))
			if !contains(blob.Replicas, vol) {
				b.Put(garbageKey(vol, bk, blob.Version), nil)
			}
		}
	}
	if err := c.cached(key, rec, c.write(&b, true), "complete"); err != nil {
		undo()
		return false, err
	}
	if blob != nil {
		c.cache.forget(bk)
	}
	return found, nil
}

// removePart removes a part's record and S3 metadata, and queues its
// blobs for deletion. It returns the record removed, if there was one.
func (c *catalog) removePart(key []byte) (Record, bool, error) {
	mu := c.lock(key)
	defer mu.Unlock()
	var rec Record
	found, err := c.get(key, &rec)
	if err != nil || !found {
		return rec, false, err
	}
	var b leveldb.Batch
	b.Delete(recordKey(nil, key))
	b.Delete(objMetaKey(key))
	for _, vol := range rec.Replicas {
		b.Put(garbageKey(vol, key, rec.Version), nil)
	}
	return rec, true, c.cached(key, nil, c.write(&b, false), "remove part")
}

// releases calls fn with every released upload and when it was released
// (unix ns), until fn returns false.
func (c *catalog) releases(fn func(id string, at int64) bool) error {
	it := c.db().NewIterator(util.BytesPrefix([]byte{pfxRelease}), nil)
	defer it.Release()
	for it.Next() {
		var at int64
		if v := it.Value(); len(v) == 8 {
			at = int64(binary.BigEndian.Uint64(v))
		}
		if !fn(string(it.Key()[1:]), at) {
			break
		}
	}
	return it.Error()
}

// doneRelease forgets a released upload once its parts are gone.
func (c *catalog) doneRelease(id string) error { return c.del1(releaseKey(id), false) }

// multipartAt reports whether key's value is the multipart value of
// version (what its manifest and manifest blob belong to). The caller
// holds the key's lock.
func (c *catalog) multipartAt(key []byte, version uint64) (bool, error) {
	var rec Record
	found, err := c.get(key, &rec)
	return found && rec.Version == version && rec.Parts > 0, err
}

// dropManifest removes key's manifest if it is still that of version
// (a manifest left behind by a record that is gone).
func (c *catalog) dropManifest(key []byte, version uint64) error {
	mu := c.lock(key)
	defer mu.Unlock()
	if live, err := c.multipartAt(key, version); err != nil || live {
		return err
	}
	mf, ok, err := c.getManifest(key, version)
	if err != nil || !ok || mf.Version != version {
		return err
	}
	return c.del1(manifestKey(key), false)
}

// parts calls fn with the records of the parts of upload id (every upload
// when id is empty), in key order, until fn returns false.
func (c *catalog) parts(id string, fn func(key []byte, rec *Record) bool) error {
	p := []byte(partPrefix)
	if id != "" {
		p = uploadParts(id)
	}
	it := c.db().NewIterator(util.BytesPrefix(recordKey(nil, p)), nil)
	defer it.Release()
	var rec Record
	for it.Next() {
		if decodeRecord(it.Value(), &rec) != nil {
			continue
		}
		if !fn(it.Key()[1:], &rec) {
			break
		}
	}
	return it.Error()
}

// manifestBlobs calls fn with the object key and the record of every
// manifest blob, until fn returns false.
func (c *catalog) manifestBlobs(fn func(key []byte, rec *Record) bool) error {
	it := c.db().NewIterator(util.BytesPrefix(recordKey(nil, []byte(manifestBlobPrefix))), nil)
	defer it.Release()
	var rec Record
	for it.Next() {
		if decodeRecord(it.Value(), &rec) != nil {
			continue
		}
		if !fn(it.Key()[1+len(manifestBlobPrefix):], &rec) {
			break
		}
	}
	return it.Error()
}

// manifests calls fn with every manifest, until fn returns false.
func (c *catalog) manifests(fn func(key []byte, mf *manifest) bool) error {
	it := c.db().NewIterator(util.BytesPrefix([]byte{pfxMfest}), nil)
	defer it.Release()
	for it.Next() {
		var mf manifest
		if json.Unmarshal(it.Value(), &mf) != nil {
			continue
		}
		if !fn(bytes.Clone(it.Key()[1:]), &mf) {
			break
		}
	}
	return it.Error()
}
