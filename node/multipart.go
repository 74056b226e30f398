package node

// S3 multipart uploads, the master's side (the gateway's is node/s3's
// multipart.go).
//
// A part is an ordinary kvdb value under the reserved key
// "_kvdb/mp/UPLOAD/NNNNN", written through PUT /_kvdb/s3/mp/BUCKET/KEY
// ?id=&part= (the client API refuses _kvdb/ keys): placement, repair,
// rebalance, drains, verify and scrub handle parts as they handle any
// value. Sent with Expect: 100-continue (the gateway does from 1 MiB),
// that PUT is answered 307 with a write ticket for the part's key, and the
// bytes go to a volume that writes the replicas and commits, as any
// redirected write's do (expectPart); otherwise they stream through the
// master (writePart). Either way the commit, under the part key's lock,
// checks that the upload is still open. Its MD5, which the gateway
// computes as the bytes stream, is its S3 metadata ('m' entry), recorded
// by a second request once it is stored.
//
// CompleteMultipartUpload writes no byte: in one catalog batch, KEY's record
// becomes a multipart value (Record.Parts > 0, no replicas, the total
// size), its manifest ('x' entry) lists the parts' keys, versions, sizes and
// MD5s, and the upload entry ('u') goes. A GET of such a key is redirected
// to any live volume's /_kvdb/parts/KEY, which asks this master for the
// manifest with the parts' locations (/_kvdb/manifest/KEY) and streams
// the parts in order (volume_parts.go). So a value may exceed MaxValueSize
// and is never rewritten.
//
// When a multipart value is replaced or deleted (through either API), the
// same catalog batch releases its upload ('z' entry); the upload sweep in
// the GC loop removes a released upload's parts once MoveGrace has passed
// (readers that were streaming them get that long). Aborting an upload
// removes its parts at once; uploads older than UploadMaxAge are aborted by
// the sweep; and a full pass every UploadMaxAge removes any part no upload
// or manifest owns (a part that landed after its upload was aborted, an
// upload under way when the catalog was lost).
//
// Complete also stores a manifest blob, "_kvdb/mf/KEY" at the value's
// version (writeManifestBlob): a value of its own on the volumes, recorded
// in Complete's batch and dropped by the one that replaces or removes the
// value (releaseParts), from which a catalog rebuilt from the volumes gets
// the value back (mergeManifest).

import (
	"bytes"
	"cmp"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
)

// minPartSize is the smallest part but the last that a complete accepts
// (S3's 5 MiB).
const minPartSize = 5 << 20

// maxCompleteBody bounds a complete's part list (10,000 parts).
const maxCompleteBody = 2 << 20

// uploadState is the master's in-memory side of multipart uploads.
type uploadState struct {
	// locks order a complete against an abort (and the sweep's abort) of
	// the same upload. They are taken before any key lock, never after.
	locks [64]sync.Mutex
	// The sweep's clock (GC loop only).
	lastExpire, lastFull time.Time
}

func (m *Master) lockUpload(id string) *sync.Mutex {
	mu := &m.uploads.locks[xxhash.Sum64String(id)%uint64(len(m.uploads.locks))]
	mu.Lock()
	return mu
}

// newUploadID makes an upload ID: a fresh version (so IDs sort by
// creation, and tell their age) and 32 random bits, in 24 hex digits.
func (m *Master) newUploadID() (string, error) {
	v, err := m.cat.nextVersion()
	if err != nil {
		return "", err
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%016x%s", v, hex.EncodeToString(r[:])), nil
}

// validUploadID reports whether id has newUploadID's form.
func validUploadID(id string) bool {
	if len(id) != 24 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// uploadTime is when upload id was created.
func uploadTime(id string) time.Time {
	v, err := strconv.ParseUint(id[:min(16, len(id))], 16, 64)
	if err != nil {
		return time.Time{}
	}
	return versionTime(v)
}

var errNoSuchUpload = errors.New("the upload does not exist: it was completed or aborted, or never began")

func replyNoSuchUpload(ctx *fasthttp.RequestCtx) {
	replyS3Error(ctx, fasthttp.StatusNotFound, "NoSuchUpload", errNoSuchUpload.Error())
}

// s3Multipart answers /_kvdb/s3/mp/BUCKET/KEY (key is "BUCKET/KEY").
func (m *Master) s3Multipart(ctx *fasthttp.RequestCtx, key []byte, bucket string) {
	args := ctx.QueryArgs()
	if !args.Has("id") {
		if ctx.IsPost() {
			m.createUpload(ctx, key, bucket)
			return
		}
		replyText(ctx, fasthttp.StatusBadRequest, "want ?id=UPLOAD")
		return
	}
	id := string(args.Peek("id"))
	if !validUploadID(id) {
		replyNoSuchUpload(ctx)
		return
	}
	part := 0
	if args.Has("part") {
		n, err := strconv.Atoi(string(args.Peek("part")))
		if err != nil || n < 1 || n > maxParts {
			replyS3Error(ctx, fasthttp.StatusBadRequest, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
			return
		}
		part = n
	}
	switch {
	case ctx.IsPut() && part > 0:
		m.writePart(ctx, key, id, part)
	case ctx.IsPost() && part > 0:
		m.recordPart(ctx, key, id, part)
	case ctx.IsPost() && args.Has("complete"):
		m.completeUpload(ctx, key, id)
	case ctx.IsGet() || ctx.IsHead():
		m.listParts(ctx, key, bucket, id)
	case ctx.IsDelete():
		m.abortUpload(ctx, key, id)
	default:
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
	}
}

// readSmallJSON reads a small JSON body (at most limit bytes) into out.
func readSmallJSON(ctx *fasthttp.RequestCtx, limit int64, out any) bool {
	size := bodySize(&ctx.Request.Header)
	if size > limit {
		replyText(ctx, fasthttp.StatusRequestEntityTooLarge, "body over "+strconv.FormatInt(limit, 10)+" bytes")
		return false
	}
	var body []byte
	if size != 0 {
		var err error
		body, err = io.ReadAll(io.LimitReader(ctx.RequestBodyStream(), limit+1))
		if err != nil || int64(len(body)) > limit {
			replyText(ctx, fasthttp.StatusBadRequest, "unreadable or oversized body")
			return false
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	if err := json.Unmarshal(body, out); err != nil {
		replyText(ctx, fasthttp.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

// createUpload starts an upload to key: the body is the ObjectMeta the
// object is to keep.
func (m *Master) createUpload(ctx *fasthttp.RequestCtx, key []byte, bucket string) {
	if m.s3BucketMissing(ctx, bucket) {
		return
	}
	var meta client.ObjectMeta
	if !readSmallJSON(ctx, client.MaxObjectMetaSize, &meta) {
		return
	}
	meta.MD5, meta.ETag = "", ""
	id, err := m.newUploadID()
	if err != nil {
		replyError(ctx, err)
		return
	}
	u := uploadEntry{Initiated: m.cat.now().UnixNano(), Meta: &meta}
	if err := m.cat.setUpload(key, id, &u); err != nil {
		replyError(ctx, err)
		return
	}
	b, _ := json.Marshal(uploadInfo(key, bucket, id, &u))
	replyJSON(ctx, fasthttp.StatusOK, b)
}

func uploadInfo(key []byte, bucket, id string, u *uploadEntry) client.Upload {
	return client.Upload{Key: string(key[len(bucket)+1:]), ID: id, Initiated: time.Unix(0, u.Initiated).UTC(), Meta: u.Meta}
}

// openUpload reports whether upload id of key takes parts.
func (m *Master) openUpload(key []byte, id string) error {
	u, found, err := m.cat.getUpload(key, id)
	switch {
	case err != nil:
		return err
	case !found || u.Completing:
		return withStatus(fasthttp.StatusNotFound, errNoSuchUpload)
	}
	return nil
}

// mpPath starts the path of the multipart endpoints.
const mpPath = "/" + ReservedPrefix + "s3/mp/"

// isPartWrite reports whether the request is the write of a part (PUT
// /_kvdb/s3/mp/BUCKET/KEY?id=&part=N), which expect admits and redirects
// as it does a value's write.
func isPartWrite(ctx *fasthttp.RequestCtx, path []byte) bool {
	if !ctx.IsPut() || !bytes.HasPrefix(path, []byte(mpPath)) {
		return false
	}
	args := ctx.QueryArgs()
	return args.Has("id") && args.Has("part")
}

// expectPart answers Expect: 100-continue on the write of a part (the
// caller has checked the API key): the part is admitted from its headers,
// as writePart would admit it (its upload open, then as a value of its
// part key), and answered 307 to a volume with a write ticket for the part
// key, before the body. The ticket's intent keeps the object's key, so
// that the commit (handleCommit) checks again, under the part key's lock,
// that the upload is still open. With redirects off, or no volume to
// coordinate, the body comes here (100 Continue) and writePart stores it.
func (m *Master) expectPart(ctx *fasthttp.RequestCtx, path []byte) int {
	key, err := ParseKey(nil, path[len(mpPath)-1:])
	if err != nil {
		replyError(ctx, err)
		return ctx.Response.StatusCode()
	}
	if _, obj, ok := bytes.Cut(key, []byte("/")); !ok || len(obj) == 0 {
		replyText(ctx, fasthttp.StatusBadRequest, "want /_kvdb/s3/mp/BUCKET/KEY")
		return fasthttp.StatusBadRequest
	}
	args := ctx.QueryArgs()
	id := string(args.Peek("id"))
	n, err := strconv.Atoi(string(args.Peek("part")))
	switch {
	case err != nil || n < 1 || n > maxParts:
		replyS3Error(ctx, fasthttp.StatusBadRequest, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
		return fasthttp.StatusBadRequest
	case !validUploadID(id):
		replyNoSuchUpload(ctx)
		return fasthttp.StatusNotFound
	}
	if err := m.openUpload(key, id); err != nil {
		if statusOf(err) == fasthttp.StatusNotFound {
			replyNoSuchUpload(ctx)
		} else {
			replyError(ctx, err)
		}
		return ctx.Response.StatusCode()
	}
	pk := partKey(id, n)
	size := bodySize(&ctx.Request.Header)
	plan, st, msg := m.admitWrite(ctx, pk, size)
	if st != 0 {
		replyText(ctx, st, msg)
		return st
	}
	if m.cfg.DisableWriteRedirect {
		return fasthttp.StatusContinue
	}
	return m.redirectWrite(ctx, pk, &plan, size, key)
}

// writePart stores the body as part n of upload id: a write like any
// other, whose commit also checks that the upload is still open. (A part
// sent with Expect: 100-continue comes here only when it could not be
// redirected: see expectPart.)
func (m *Master) writePart(ctx *fasthttp.RequestCtx, key []byte, id string, n int) {
	if err := m.openUpload(key, id); err != nil {
		if statusOf(err) == fasthttp.StatusNotFound {
			replyNoSuchUpload(ctx)
		} else {
			replyError(ctx, err)
		}
		return
	}
	m.writeValue(ctx, partKey(id, n), func() error { return m.openUpload(key, id) })
}

// recordPart records the MD5 (md5=, hex) of part n, if the part is still
// the version whose kvdb ETag is the request's If-Match.
func (m *Master) recordPart(ctx *fasthttp.RequestCtx, key []byte, id string, n int) {
	sum := string(ctx.QueryArgs().Peek("md5"))
	if d, err := hex.DecodeString(sum); err != nil || len(d) != md5.Size || sum != hex.EncodeToString(d) {
		replyText(ctx, fasthttp.StatusBadRequest, "md5 must be 32 lower-case hex digits")
		return
	}
	ifMatch := bytes.TrimSpace(ctx.Request.Header.Peek("If-Match"))
	if err := m.openUpload(key, id); err != nil {
		if statusOf(err) == fasthttp.StatusNotFound {
			replyNoSuchUpload(ctx)
		} else {
			replyError(ctx, err)
		}
		return
	}
	pk := partKey(id, n)
	meta, _ := json.Marshal(client.ObjectMeta{MD5: sum})
	mu := m.cat.lock(pk)
	var rec Record
	found, err := m.cat.get(pk, &rec)
	matched := false
	if err == nil && found {
		if matched = etagListMatches(ifMatch, rec.appendTag(nil), true); matched {
			err = m.cat.put1(objMetaKey(pk), appendObjMeta(nil, rec.Version, meta), true)
		}
	}
	mu.Unlock()
	switch {
	case err != nil:
		replyError(ctx, err)
	case !found:
		replyNoSuchUpload(ctx)
	case !matched:
		replyS3Error(ctx, fasthttp.StatusPreconditionFailed, "PreconditionFailed", "the part was written again meanwhile")
	default:
		b, _ := json.Marshal(client.Part{Number: n, Size: rec.Size, MD5: sum, Modified: rec.ModTime})
		replyJSON(ctx, fasthttp.StatusOK, b)
	}
}

// partState reads part n of upload id, with its MD5 ("" when none is
// recorded for its current version), under the part's key lock: a write
// of the part that checked the upload was open has committed by then.
func (m *Master) partState(id string, n int) (Record, string, bool, error) {
	pk := partKey(id, n)
	mu := m.cat.lock(pk)
	defer mu.Unlock()
	var rec Record
	found, err := m.cat.get(pk, &rec)
	if err != nil || !found {
		return rec, "", false, err
	}
	meta, err := m.objMeta(pk, rec.Version)
	if err != nil || meta == nil {
		return rec, "", true, err
	}
	return rec, meta.MD5, true, nil
}

// completeError is a complete refused with an S3 error code.
type completeError struct {
	status int
	code   string
	msg    string
}

func (e *completeError) Error() string { return e.code + ": " + e.msg }

// completeUpload makes key a multipart value of the parts the body lists
// (JSON []client.CompletePart, in order), checked as S3 checks them.
func (m *Master) completeUpload(ctx *fasthttp.RequestCtx, key []byte, id string) {
	var list []client.CompletePart
	if !readSmallJSON(ctx, maxCompleteBody, &list) {
		return
	}
	if len(list) == 0 || len(list) > maxParts {
		replyS3Error(ctx, fasthttp.StatusBadRequest, "MalformedXML", "a complete names 1 to 10000 parts")
		return
	}
	createOnly := string(bytes.TrimSpace(ctx.Request.Header.Peek("If-None-Match"))) == "*"
	bucket, _, _ := bytes.Cut(key, []byte("/"))
	if m.s3BucketMissing(ctx, string(bucket)) {
		return
	}
	mu := m.lockUpload(id)
	defer mu.Unlock()
	u, found, err := m.cat.getUpload(key, id)
	if err != nil {
		replyError(ctx, err)
		return
	}
	if !found {
		replyNoSuchUpload(ctx)
		return
	}
	if !u.Completing {
		// From now on parts are refused: those read below are final.
		u.Completing = true
		if err := m.cat.setUpload(key, id, &u); err != nil {
			replyError(ctx, err)
			return
		}
	}
	info, err := m.complete(key, id, &u, list, createOnly)
	if err != nil {
		u.Completing = false
		if err2 := m.cat.setUpload(key, id, &u); err2 != nil {
			m.log.Warn("reopening an upload after a failed complete", "key", string(key), "upload", id, "err", err2)
		}
		var ce *completeError
		if errors.As(err, &ce) {
			replyS3Error(ctx, ce.status, ce.code, ce.msg)
		} else {
			replyError(ctx, err)
		}
		return
	}
	b, _ := json.Marshal(info)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

func (m *Master) complete(key []byte, id string, u *uploadEntry, list []client.CompletePart, createOnly bool) (client.ObjectInfo, error) {
	var info client.ObjectInfo
	mf := &manifest{Upload: id, Parts: make([]manifestPart, 0, len(list))}
	md5s := make([]byte, 0, len(list)*md5.Size)
	var total int64
	for i, p := range list {
		if p.Number < 1 || p.Number > maxParts {
			return info, &completeError{fasthttp.StatusBadRequest, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive"}
		}
		if i > 0 && p.Number <= list[i-1].Number {
			return info, &completeError{fasthttp.StatusBadRequest, "InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered by part number."}
		}
	}
	for i, p := range list {
		rec, sum, found, err := m.partState(id, p.Number)
		if err != nil {
			return info, err
		}
		want := strings.ToLower(strings.Trim(strings.TrimSpace(p.ETag), `"`))
		if !found || sum == "" || want != sum {
			return info, &completeError{fasthttp.StatusBadRequest, "InvalidPart", fmt.Sprintf("One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag. (part %d)", p.Number)}
		}
		if rec.Size < minPartSize && i < len(list)-1 {
			return info, &completeError{fasthttp.StatusBadRequest, "EntityTooSmall", fmt.Sprintf("Your proposed upload is smaller than the minimum allowed object size: part %d is %d bytes, every part but the last must be at least %d.", p.Number, rec.Size, minPartSize)}
		}
		d, _ := hex.DecodeString(sum)
		md5s = append(md5s, d...)
		total += rec.Size
		mf.Parts = append(mf.Parts, manifestPart{N: p.Number, Version: rec.Version, Size: rec.Size, Checksum: rec.Checksum, MD5: sum})
	}
	version, err := m.cat.nextVersion()
	if err != nil {
		return info, err
	}
	mf.Version = version
	whole := md5.Sum(md5s)
	meta := client.ObjectMeta{}
	if u.Meta != nil {
		meta = *u.Meta
	}
	meta.MD5, meta.ETag = "", hex.EncodeToString(whole[:])+"-"+strconv.Itoa(len(list))
	metaJSON, _ := json.Marshal(meta)
	rec := Record{Version: version, Size: total, Checksum: xxhash.Sum64(md5s), ModTime: versionTime(version), Parts: len(list)}
	blob, view, tried, err := m.writeManifestBlob(key, &rec, mf, metaJSON)
	if err != nil {
		return info, err
	}
	_, err = m.cat.commitManifest(key, id, &rec, mf, metaJSON, blob, tried, func(found bool, _ *Record) error {
		if found && createOnly {
			return &completeError{fasthttp.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"}
		}
		return nil
	}, func(old *Record) func() {
		// Readers redirected to the old version a moment ago still find
		// it for MoveGrace (as commitWrite does).
		m.holdGarbage(old.Replicas, key, old.Version)
		return func() { m.releaseGarbage(old.Replicas, key, old.Version) }
	})
	if err != nil {
		if blob != nil {
			bk, _ := manifestBlobKey(key)
			m.abandonWrite(view, bk, version, tried)
		}
		return info, err
	}
	// Parts uploaded but left out of the list are not the object's.
	listed := make(map[int]bool, len(list))
	for _, p := range list {
		listed[p.Number] = true
	}
	m.removeParts(id, func(n int) bool { return !listed[n] })
	_, obj, _ := bytes.Cut(key, []byte("/"))
	return client.ObjectInfo{Key: string(obj), Size: total, ETag: rec.ETag(), Modified: rec.ModTime, Meta: &meta, Parts: rec.Parts}, nil
}

// writeManifestBlob stores the manifest blob of rec, key's multipart value
// made of mf's parts with metaJSON as S3 metadata, before its commit: a
// write like any value's, at rec's version, to Replicas volumes. It
// returns the blob's record, the view it was placed in and every volume
// it was written to (or tried), for the commit to clear its intents, or
// for abandonWrite should the commit not happen. No blob (nil) for a key
// too long to have one.
func (m *Master) writeManifestBlob(key []byte, rec *Record, mf *manifest, metaJSON []byte) (*Record, *clusterView, []string, error) {
	bk, ok := manifestBlobKey(key)
	if !ok {
		return nil, nil, nil, nil
	}
	// The blob is small (a few hundred bytes a part, at most 10,000
	// parts), and made here: it is no client's value held in memory.
	body, err := json.Marshal(manifestBlob{Key: string(key), Size: rec.Size, Checksum: rec.Checksum, Manifest: *mf, Meta: metaJSON})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("node: manifest blob of %q: %w", key, err)
	}
	size := int64(len(body))
	view, candidates, st, msg := m.placeWrite(bk, size)
	if st != 0 {
		return nil, nil, nil, withStatus(st, fmt.Errorf("manifest blob of %q: %s", key, msg))
	}
	done, tried, err := m.replicate(view, bk, rec.Version, size, bytes.NewReader(body), candidates, m.cfg.Replicas)
	if err != nil {
		m.abandonWrite(view, bk, rec.Version, tried)
		return nil, nil, nil, fmt.Errorf("node: manifest blob of %q: %w", key, err)
	}
	blob := &Record{Version: rec.Version, Size: done[0].size, Checksum: done[0].checksum, ModTime: versionTime(rec.Version)}
	for _, r := range done {
		blob.Replicas = append(blob.Replicas, r.vol)
	}
	return blob, view, tried, nil
}

// removeParts removes the parts of upload id that drop selects (all when
// nil): their records now, their blobs now where the volumes answer (the
// rest stay queued for the GC loop).
func (m *Master) removeParts(id string, drop func(n int) bool) error {
	var keys [][]byte
	err := m.cat.parts(id, func(key []byte, _ *Record) bool {
		if _, n, ok := parsePartKey(key); ok && (drop == nil || drop(n)) {
			keys = append(keys, bytes.Clone(key))
		}
		return true
	})
	if err != nil {
		return err
	}
	// A few at a time: a value may have 10,000 parts.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, partRemovals)
	for _, k := range keys {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rec, found, err := m.cat.removePart(k)
			if err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
				return
			}
			if found {
				m.deleteBlobs(k, rec.Version, rec.Replicas)
			}
		}()
	}
	wg.Wait()
	return first
}

// partRemovals is how many parts removeParts removes at once.
const partRemovals = 8

// abortUpload ends upload id of key and removes its parts.
func (m *Master) abortUpload(ctx *fasthttp.RequestCtx, key []byte, id string) {
	found, err := m.abort(key, id)
	switch {
	case err != nil:
		replyError(ctx, err)
	case !found:
		replyNoSuchUpload(ctx)
	default:
		replyJSON(ctx, fasthttp.StatusOK, []byte(`{"aborted":"`+id+`"}`))
	}
}

func (m *Master) abort(key []byte, id string) (bool, error) {
	mu := m.lockUpload(id)
	_, found, err := m.cat.getUpload(key, id)
	if err == nil && found {
		// Released with the same batch: should the removal below be cut
		// short, the sweep finishes it.
		err = m.cat.endUpload(key, id)
	}
	mu.Unlock()
	if err != nil || !found {
		return found, err
	}
	if err := m.removeParts(id, nil); err != nil {
		return true, err
	}
	return true, m.cat.doneRelease(id)
}

// maxPartList is the most parts one ListParts page holds (S3's).
const maxPartList = 1000

// listParts answers a page of ListParts: the parts whose MD5 is recorded,
// numbered above after=, at most limit=.
func (m *Master) listParts(ctx *fasthttp.RequestCtx, key []byte, bucket, id string) {
	u, found, err := m.cat.getUpload(key, id)
	if err != nil {
		replyError(ctx, err)
		return
	}
	if !found {
		replyNoSuchUpload(ctx)
		return
	}
	args := ctx.QueryArgs()
	after, _ := strconv.Atoi(string(args.Peek("after")))
	limit := maxPartList
	if b := args.Peek("limit"); len(b) > 0 {
		if n, err := strconv.Atoi(string(b)); err == nil && n >= 0 {
			limit = min(n, maxPartList)
		}
	}
	out := client.PartList{Upload: uploadInfo(key, bucket, id, &u), Parts: []client.Part{}}
	var ferr error
	err = m.cat.parts(id, func(pk []byte, rec *Record) bool {
		_, n, ok := parsePartKey(pk)
		if !ok || n <= after {
			return true
		}
		meta, err := m.objMeta(pk, rec.Version)
		if err != nil {
			ferr = err
			return false
		}
		if meta == nil || meta.MD5 == "" {
			return true // still being written
		}
		if len(out.Parts) == limit {
			out.Truncated = true
			return false
		}
		out.Parts = append(out.Parts, client.Part{Number: n, Size: rec.Size, MD5: meta.MD5, Modified: rec.ModTime})
		out.Next = n
		return true
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		replyError(ctx, err)
		return
	}
	if !out.Truncated {
		out.Next = 0
	}
	b, _ := json.Marshal(out)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// s3ListUploads answers a page of ListMultipartUploads for bucket.
func (m *Master) s3ListUploads(ctx *fasthttp.RequestCtx, bucket string) {
	if m.s3BucketMissing(ctx, bucket) {
		return
	}
	args := ctx.QueryArgs()
	prefix, delim := args.Peek("prefix"), args.Peek("delimiter")
	afterKey, afterID := args.Peek("key"), string(args.Peek("id"))
	limit := maxListLimit
	if b := args.Peek("limit"); len(b) > 0 {
		n, err := strconv.Atoi(string(b))
		if err != nil || n < 0 {
			replyText(ctx, fasthttp.StatusBadRequest, "limit must be 0 or more")
			return
		}
		limit = min(n, maxListLimit)
	}
	base := []byte(bucket + "/")
	out := client.UploadList{Uploads: []client.Upload{}, Prefixes: []string{}}
	var after []byte
	if len(afterKey) > 0 {
		after = append(bytes.Clone(base), afterKey...)
	}
	lastPrefix := ""
	count := 0
	err := m.cat.uploads(append(bytes.Clone(base), prefix...), after, afterID, func(key []byte, id string, u *uploadEntry) bool {
		rel := key[len(base):]
		if len(delim) > 0 {
			if i := bytes.Index(rel[len(prefix):], delim); i >= 0 {
				cp := string(rel[:len(prefix)+i+len(delim)])
				if cp == lastPrefix || len(afterKey) > 0 && cp <= string(afterKey) {
					return true
				}
				if count == limit {
					out.Truncated = true
					return false
				}
				lastPrefix = cp
				out.Prefixes = append(out.Prefixes, cp)
				out.NextKey, out.NextID = cp, ""
				count++
				return true
			}
		}
		if count == limit {
			out.Truncated = true
			return false
		}
		out.Uploads = append(out.Uploads, uploadInfo(key, bucket, id, u))
		out.NextKey, out.NextID = string(rel), id
		count++
		return true
	})
	if err != nil {
		replyError(ctx, fmt.Errorf("node: list uploads of %q: %w", bucket, err))
		return
	}
	if !out.Truncated {
		out.NextKey, out.NextID = "", ""
	}
	b, _ := json.Marshal(out)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// describePart adds to info, for GET /_kvdb/s3/object/BUCKET/KEY?part=N,
// where part N lies in the value (a value of one blob is its part 1).
func (m *Master) describePart(info *client.ObjectInfo, key []byte, rec *Record, arg []byte) error {
	n, err := strconv.Atoi(string(arg))
	if err != nil || n < 1 {
		return nil
	}
	if rec.Parts == 0 {
		if n == 1 {
			info.PartSize = rec.Size
		}
		return nil
	}
	mf, found, err := m.cat.getManifest(key, rec.Version)
	if err != nil || !found || n > len(mf.Parts) {
		return err
	}
	var start int64
	for _, p := range mf.Parts[:n-1] {
		start += p.Size
	}
	info.PartStart, info.PartSize = start, mf.Parts[n-1].Size
	return nil
}

// partSums lists the sizes and checksums of the parts of rec, a
// multipart value of key.
func (m *Master) partSums(key []byte, rec *Record) ([]client.PartSum, error) {
	mf, found, err := m.cat.getManifest(key, rec.Version)
	if err != nil || !found {
		return nil, err
	}
	out := make([]client.PartSum, len(mf.Parts))
	for i, p := range mf.Parts {
		out[i] = client.PartSum{Size: p.Size, Sum: p.Checksum}
	}
	return out, nil
}

// partsPlan is the answer of GET /_kvdb/manifest/KEY?v=VER to a volume
// that streams a multipart value: its parts in order, and where each is.
type partsPlan struct {
	Size  int64      `json:"size"`
	ETag  string     `json:"etag"`
	Parts []planPart `json:"parts"`
	// Meta holds the response headers of the value's S3 metadata (its
	// MD5 and ETag left out), nil when none is recorded.
	Meta *client.ObjectMeta `json:"meta,omitempty"`
}

type planPart struct {
	Key     string `json:"key"`
	Version uint64 `json:"v"`
	Size    int64  `json:"size"`
	// Vols are the HTTP addresses of the live volumes that hold the part,
	// least loaded first.
	Vols []string `json:"vols"`
}

// serveManifest answers a volume's GET /_kvdb/manifest/KEY?v=VER (signed
// with the cluster secret when there is one, like the commits of the
// writes volumes coordinate). It reports false for any other path.
func (m *Master) serveManifest(ctx *fasthttp.RequestCtx, path []byte) bool {
	rest, ok := bytes.CutPrefix(path, []byte("/"+ReservedPrefix+"manifest/"))
	if !ok {
		return false
	}
	if !m.sec.allowInternal(ctx, []byte("manifest/")) {
		return true
	}
	key, ver, ok := keyVersionArgs(ctx, append([]byte("/"), rest...))
	if !ok {
		return true
	}
	rec, found, err := m.lookup(key)
	if err != nil {
		replyError(ctx, err)
		return true
	}
	if !found || rec.Version != ver || rec.Parts == 0 {
		replyText(ctx, fasthttp.StatusNotFound, "the key holds another value now")
		return true
	}
	mf, found, err := m.cat.getManifest(key, ver)
	if err != nil || !found {
		replyError(ctx, withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("manifest of %q: %v (found %v)", key, err, found)))
		return true
	}
	view := m.view.Load()
	bad := *m.unreachable.Load()
	loads := *m.loads.Load()
	plan := partsPlan{Size: rec.Size, ETag: rec.ETag(), Parts: make([]planPart, 0, len(mf.Parts))}
	if rec.Meta {
		if meta, err := m.objMeta(key, ver); err == nil && meta != nil {
			meta.MD5, meta.ETag = "", ""
			plan.Meta = meta
		}
	}
	for _, p := range mf.Parts {
		pk := partKey(mf.Upload, p.N)
		// Read past the record cache: a value of 10,000 parts must not
		// push every hot key out of it.
		var prec Record
		found, err := m.cat.get(pk, &prec)
		if err != nil || !found || prec.Version != p.Version {
			replyError(ctx, withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("part %d of %q is missing from the catalog", p.N, key)))
			return true
		}
		pp := planPart{Key: string(pk), Version: p.Version, Size: p.Size}
		type cand struct {
			addr string
			load int64
		}
		var cs []cand
		for _, name := range prec.Replicas {
			vol, live := view.vols[name]
			if !live {
				continue
			}
			load := int64(0)
			if l := loads[name]; l != nil {
				load = l.estimate()
			}
			if bad[name] {
				load += 1 << 40 // last resort
			}
			cs = append(cs, cand{vol.HTTP, load})
		}
		for i := 1; i < len(cs); i++ {
			for j := i; j > 0 && cs[j].load < cs[j-1].load; j-- {
				cs[j], cs[j-1] = cs[j-1], cs[j]
			}
		}
		for _, c := range cs {
			pp.Vols = append(pp.Vols, c.addr)
		}
		plan.Parts = append(plan.Parts, pp)
	}
	b, _ := json.Marshal(plan)
	replyJSON(ctx, fasthttp.StatusOK, b)
	return true
}

// redirectParts answers a GET of a multipart value: 302 to the least
// loaded live volume's /_kvdb/parts/KEY?v=VER (signed with the cluster
// secret, valid for RedirectTTL), which streams the parts.
func (m *Master) redirectParts(ctx *fasthttp.RequestCtx, key []byte, rec *Record) {
	view := m.view.Load()
	bad := *m.unreachable.Load()
	loads := *m.loads.Load()
	var best Member
	bestLoad := int64(-1)
	for name, vol := range view.vols {
		load := int64(0)
		if l := loads[name]; l != nil {
			load = l.estimate()
		}
		if bad[name] {
			load += 1 << 40
		}
		if bestLoad < 0 || load < bestLoad || load == bestLoad && vol.Name < best.Name {
			best, bestLoad = vol, load
		}
	}
	if bestLoad < 0 {
		replyText(ctx, fasthttp.StatusServiceUnavailable, "no live volume to stream this value from right now")
		return
	}
	if l := loads[best.Name]; l != nil {
		l.sent.Add(1)
	}
	loc := make([]byte, 0, 64+3*len(key))
	loc = append(loc, "http://"...)
	loc = append(loc, best.HTTP...)
	loc = append(loc, "/"+ReservedPrefix+"parts/"...)
	loc = AppendEscapedKey(loc, key)
	loc = append(loc, "?v="...)
	loc = appendVersion(loc, rec.Version)
	uri := string(loc)
	if m.sec != nil {
		uri = m.sec.signURLExpiring("GET", uri, time.Now().Add(m.cfg.RedirectTTL).Unix())
	}
	ctx.Response.Header.Set("Location", uri)
	ctx.Response.Header.SetBytesV("ETag", rec.appendTag(nil))
	ctx.SetStatusCode(fasthttp.StatusFound)
}

// sweepUploads, run by the GC loop, removes the parts of released uploads
// (after MoveGrace), aborts uploads older than UploadMaxAge, and every
// UploadMaxAge makes a full pass for parts nothing owns.
func (m *Master) sweepUploads() {
	now := m.cat.now() // (not m.cfg.clock(), which copies the whole config)
	var ids []string
	err := m.cat.releases(func(id string, at int64) bool {
		if now.Sub(time.Unix(0, at)) >= m.cfg.MoveGrace {
			ids = append(ids, id)
		}
		return len(ids) < 256
	})
	if err != nil {
		m.log.Error("upload sweep", "err", err)
		return
	}
	for _, id := range ids {
		if err := m.removeParts(id, nil); err != nil {
			m.log.Warn("removing the parts of a finished upload; will retry", "upload", id, "err", err)
			continue
		}
		if err := m.cat.doneRelease(id); err != nil {
			m.log.Warn("upload sweep", "err", err)
		}
	}
	st := &m.uploads
	if now.Sub(st.lastExpire) >= min(m.cfg.UploadMaxAge/8, time.Minute) {
		st.lastExpire = now
		m.expireUploads(now)
	}
	if st.lastFull.IsZero() {
		st.lastFull = now
	} else if now.Sub(st.lastFull) >= m.cfg.UploadMaxAge && m.collectUnownedParts(now) {
		st.lastFull = now
	}
}

// mergesSettled reports whether the index of every live volume has been
// merged and none is being merged, and how many merges have started so
// far: parts merged before the manifest blob that owns them (on another
// volume, or further in the same one) must not look unowned.
func (m *Master) mergesSettled() (bool, uint64) {
	view := m.view.Load()
	m.mergeMu.Lock()
	defer m.mergeMu.Unlock()
	if len(m.merging) > 0 {
		return false, m.mergeStarts
	}
	for name := range view.vols {
		if !m.merged[name] {
			return false, m.mergeStarts
		}
	}
	return true, m.mergeStarts
}

// expireUploads aborts the uploads begun more than UploadMaxAge before now.
func (m *Master) expireUploads(now time.Time) {
	type upload struct {
		key []byte
		id  string
	}
	var old []upload
	err := m.cat.uploads(nil, nil, "", func(key []byte, id string, u *uploadEntry) bool {
		if now.Sub(time.Unix(0, u.Initiated)) > m.cfg.UploadMaxAge {
			old = append(old, upload{key, id})
		}
		return true
	})
	if err != nil {
		m.log.Error("upload sweep", "err", err)
	}
	for _, u := range old {
		if _, err := m.abort(u.key, u.id); err != nil {
			m.log.Warn("aborting an abandoned upload", "key", string(u.key), "upload", u.id, "err", err)
			continue
		}
		m.log.Info("aborted an abandoned multipart upload", "key", string(u.key), "upload", u.id, "max_age", m.cfg.UploadMaxAge)
	}
}

// collectUnownedParts removes the parts that no upload under way and no
// current manifest owns, and the manifest blobs whose object is gone.
// Uploads begun in the last minute are left alone: the pass reads the
// owners before the parts. It does nothing (and reports false, to be
// tried again at the next sweep) while a volume's index is still to be
// merged or a merge ran during the pass: a rebuilt catalog learns a
// manifest from its blob, which may come after its parts.
func (m *Master) collectUnownedParts(now time.Time) bool {
	settled, starts := m.mergesSettled()
	if !settled {
		return false
	}
	owned := map[string]map[int]bool{} // nil set: every part (upload under way)
	err := m.cat.uploads(nil, nil, "", func(_ []byte, id string, _ *uploadEntry) bool {
		owned[id] = nil
		return true
	})
	type stale struct {
		key []byte
		ver uint64
	}
	var stales, blobs []stale
	if err == nil {
		err = m.cat.manifests(func(key []byte, mf *manifest) bool {
			rec, found, err := m.lookup(key)
			if err != nil || !found || rec.Version != mf.Version || rec.Parts == 0 {
				stales = append(stales, stale{key, mf.Version})
				return true
			}
			set := make(map[int]bool, len(mf.Parts))
			for _, p := range mf.Parts {
				set[p.N] = true
			}
			owned[mf.Upload] = set
			return true
		})
	}
	if err == nil {
		err = m.cat.manifestBlobs(func(key []byte, rec *Record) bool {
			cur, found, err := m.lookup(key)
			if err != nil || !found || cur.Version != rec.Version || cur.Parts == 0 {
				blobs = append(blobs, stale{bytes.Clone(key), rec.Version})
			}
			return true
		})
	}
	if err != nil {
		m.log.Error("upload sweep", "err", err)
		return true
	}
	for _, s := range stales {
		if err := m.cat.dropManifest(s.key, s.ver); err != nil {
			m.log.Warn("upload sweep", "err", err)
		}
	}
	for _, s := range blobs {
		if err := m.cat.dropStaleManifestBlob(s.key, s.ver); err != nil {
			m.log.Warn("upload sweep", "err", err)
		}
	}
	var unowned [][]byte
	err = m.cat.parts("", func(key []byte, _ *Record) bool {
		id, n, ok := parsePartKey(key)
		if !ok || !validUploadID(id) || uploadTime(id).After(now.Add(-time.Minute)) {
			return true
		}
		if set, has := owned[id]; has && (set == nil || set[n]) {
			return true
		}
		unowned = append(unowned, bytes.Clone(key))
		return true
	})
	if err != nil {
		m.log.Error("upload sweep", "err", err)
		return true
	}
	if settled, after := m.mergesSettled(); !settled || after != starts {
		return false
	}
	for _, k := range unowned {
		rec, found, err := m.cat.removePart(k)
		if err != nil {
			m.log.Warn("upload sweep", "err", err)
			continue
		}
		if found {
			m.log.Info("removed a part no upload owns", "key", string(k))
			m.deleteBlobs(k, rec.Version, rec.Replicas)
		}
	}
	return true
}
