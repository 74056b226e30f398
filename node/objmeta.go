package node

// S3 object metadata and the detailed listing, for the S3 gateway (see
// bucket.go). The metadata of a key is recorded per version: entry
// "m KEY" holds the version it belongs to, and is ignored once the key holds
// another version (a native overwrite, a later S3 write cut off before its
// metadata). The gateway records it with a second request after the native
// PUT that stored the bytes, conditional on the ETag that PUT returned; a
// crash in between leaves the value without S3 metadata, and its S3 ETag
// falls back to kvdb's own. An entry left behind by a native DELETE or
// overwrite stays in the catalog (ignored) until the key is next written or
// deleted through S3. The metadata lives only in the master's catalog: an
// index rebuilt from the volumes has none.

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
)

func objMetaKey(key []byte) []byte {
	return append([]byte{pfxObjMeta}, key...)
}

// objMetaFormat is the first byte of an encoded metadata entry, then the
// version as a uvarint, then the client.ObjectMeta JSON.
const objMetaFormat = 1

func appendObjMeta(dst []byte, version uint64, metaJSON []byte) []byte {
	dst = append(dst, objMetaFormat)
	dst = binary.AppendUvarint(dst, version)
	return append(dst, metaJSON...)
}

// setObjMeta records metaJSON as the S3 metadata of rec, key's current
// record (read under the key lock, which the caller holds), and marks the
// record as having it, in one write.
func (c *catalog) setObjMeta(key []byte, rec *Record, metaJSON []byte) error {
	r := *rec
	r.Meta = true
	var b leveldb.Batch
	b.Put(objMetaKey(key), appendObjMeta(nil, r.Version, metaJSON))
	b.Put(recordKey(nil, key), appendRecord(nil, &r))
	return c.cached(key, &r, c.write(&b, true), "metadata")
}

// objMeta returns the metadata recorded for version of key, nil if none.
func (m *Master) objMeta(key []byte, version uint64) (*client.ObjectMeta, error) {
	v, err := m.cat.db().Get(objMetaKey(key), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: metadata of %q: %w", key, err)
	}
	return decodeObjMeta(v, version), nil
}

// decodeObjMeta decodes an entry, nil when it is malformed or belongs to
// another version.
func decodeObjMeta(v []byte, version uint64) *client.ObjectMeta {
	if len(v) < 2 || v[0] != objMetaFormat {
		return nil
	}
	ver, n := binary.Uvarint(v[1:])
	if n <= 0 || ver != version {
		return nil
	}
	var meta client.ObjectMeta
	if json.Unmarshal(v[1+n:], &meta) != nil {
		return nil
	}
	return &meta
}

// s3Object answers /_kvdb/s3/object/BUCKET/KEY (key is "BUCKET/KEY").
func (m *Master) s3Object(ctx *fasthttp.RequestCtx, key []byte, bucket string) {
	switch {
	case ctx.IsGet() || ctx.IsHead():
		m.s3GetObject(ctx, key, bucket)
	case ctx.IsPut():
		m.s3PutObjectMeta(ctx, key)
	case ctx.IsDelete():
		m.s3DeleteObject(ctx, key, bucket)
	default:
		ctx.Response.Header.Set("Allow", "GET, HEAD, PUT, DELETE")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
	}
}

// s3BucketMissing answers NoSuchBucket and reports true when bucket does
// not exist (or answers the error reading it).
func (m *Master) s3BucketMissing(ctx *fasthttp.RequestCtx, bucket string) bool {
	_, found, err := m.bucket(bucket)
	switch {
	case err != nil:
		replyError(ctx, err)
	case !found:
		replyS3Error(ctx, fasthttp.StatusNotFound, "NoSuchBucket", "the bucket does not exist")
	default:
		return false
	}
	return true
}

func (m *Master) s3GetObject(ctx *fasthttp.RequestCtx, key []byte, bucket string) {
	if m.s3BucketMissing(ctx, bucket) {
		return
	}
	rec, found, err := m.lookup(key)
	switch {
	case err != nil:
		replyError(ctx, err)
		return
	case !found:
		replyS3Error(ctx, fasthttp.StatusNotFound, "NoSuchKey", "the key does not exist")
		return
	}
	info := client.ObjectInfo{Key: string(key[len(bucket)+1:]), Size: rec.Size, ETag: rec.ETag(), Modified: rec.ModTime}
	if info.Meta, err = m.objMeta(key, rec.Version); err != nil {
		replyError(ctx, err)
		return
	}
	info.Parts = rec.Parts
	if p := ctx.QueryArgs().Peek("part"); len(p) > 0 {
		if err := m.describePart(&info, key, rec, p); err != nil {
			replyError(ctx, err)
			return
		}
	}
	if ctx.IsGet() && ctx.QueryArgs().Has("locate") {
		// The same choice of volume (and signed URL) as GET /KEY, for the
		// very version described, but for a gateway's own volume first.
		info.Volume = m.redirectNear(ctx, key, rec, nil, string(ctx.QueryArgs().Peek("near")))
		if ctx.Response.StatusCode() != fasthttp.StatusFound {
			return // 503 answered: no live replica
		}
		info.Location = string(ctx.Response.Header.Peek("Location"))
		info.Version = rec.Version
		ctx.Response.Header.Del("Location")
		ctx.Response.Header.Del("ETag")
		if rec.Parts > 0 {
			if info.PartSums, err = m.partSums(key, rec); err != nil {
				replyError(ctx, err)
				return
			}
		}
	}
	b, _ := json.Marshal(info)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// s3PutObjectMeta records the S3 metadata of key's current version, if
// that version's ETag is the request's If-Match.
func (m *Master) s3PutObjectMeta(ctx *fasthttp.RequestCtx, key []byte) {
	ifMatch := bytes.TrimSpace(ctx.Request.Header.Peek("If-Match"))
	if len(ifMatch) == 0 {
		replyText(ctx, fasthttp.StatusPreconditionRequired, "recording metadata needs If-Match: the ETag of the value it describes")
		return
	}
	size := bodySize(&ctx.Request.Header)
	if size > client.MaxObjectMetaSize {
		replyText(ctx, fasthttp.StatusRequestEntityTooLarge, "metadata over "+strconv.Itoa(client.MaxObjectMetaSize)+" bytes")
		return
	}
	var body []byte
	if size != 0 {
		var err error
		body, err = io.ReadAll(io.LimitReader(ctx.RequestBodyStream(), client.MaxObjectMetaSize+1))
		if err != nil {
			replyError(ctx, withStatus(fasthttp.StatusBadRequest, fmt.Errorf("reading metadata: %w", err)))
			return
		}
		if len(body) > client.MaxObjectMetaSize {
			replyText(ctx, fasthttp.StatusRequestEntityTooLarge, "metadata over "+strconv.Itoa(client.MaxObjectMetaSize)+" bytes")
			return
		}
	}
	var meta client.ObjectMeta
	if err := json.Unmarshal(body, &meta); err != nil {
		replyText(ctx, fasthttp.StatusBadRequest, "metadata: "+err.Error())
		return
	}
	if meta.MD5 != "" {
		if d, err := hex.DecodeString(meta.MD5); err != nil || len(d) != 16 || meta.MD5 != hex.EncodeToString(d) {
			replyText(ctx, fasthttp.StatusBadRequest, "metadata: md5 must be 32 lower-case hex digits")
			return
		}
	}
	canon, _ := json.Marshal(meta)
	mu := m.cat.lock(key)
	var rec Record
	found, err := m.cat.get(key, &rec)
	var tag []byte
	switch {
	case err != nil:
	case !found:
	default:
		tag = rec.appendTag(nil)
		if etagListMatches(ifMatch, tag, true) {
			err = m.cat.setObjMeta(key, &rec, canon)
		}
	}
	mu.Unlock()
	switch {
	case err != nil:
		replyError(ctx, err)
	case !found:
		replyS3Error(ctx, fasthttp.StatusNotFound, "NoSuchKey", "the key does not exist")
	case !etagListMatches(ifMatch, tag, true):
		replyS3Error(ctx, fasthttp.StatusPreconditionFailed, "PreconditionFailed", "the key holds another value now")
	default:
		_, obj, _ := bytes.Cut(key, []byte("/"))
		info := client.ObjectInfo{Key: string(obj), Size: rec.Size, ETag: string(tag), Modified: rec.ModTime, Meta: &meta}
		b, _ := json.Marshal(info)
		replyJSON(ctx, fasthttp.StatusOK, b)
	}
}

// s3DeleteObject deletes the value (as DELETE /KEY) and its metadata.
func (m *Master) s3DeleteObject(ctx *fasthttp.RequestCtx, key []byte, bucket string) {
	if m.s3BucketMissing(ctx, bucket) {
		return
	}
	m.handleDelete(ctx, key)
	if st := ctx.Response.StatusCode(); st != fasthttp.StatusOK && st != fasthttp.StatusNotFound {
		return
	}
	mu := m.cat.lock(key)
	var rec Record
	found, err := m.cat.get(key, &rec)
	if err == nil && !found {
		err = m.cat.del1(objMetaKey(key), false)
	}
	mu.Unlock()
	if err != nil {
		m.log.Warn("deleting S3 metadata", "key", string(key), "err", err)
	}
}

// maxListLimit is the most entries one listing page holds (S3's).
const maxListLimit = 1000

// s3List answers a page of ListObjects for bucket (see client.ObjectListing).
func (m *Master) s3List(ctx *fasthttp.RequestCtx, bucket string) {
	if m.s3BucketMissing(ctx, bucket) {
		return
	}
	args := ctx.QueryArgs()
	prefix, delim, after := args.Peek("prefix"), args.Peek("delimiter"), args.Peek("after")
	limit := maxListLimit
	if b := args.Peek("limit"); len(b) > 0 {
		n, err := strconv.Atoi(string(b))
		if err != nil || n < 0 {
			replyText(ctx, fasthttp.StatusBadRequest, "limit must be 0 or more")
			return
		}
		limit = min(n, maxListLimit)
	}
	out, err := m.listObjects(bucket, prefix, delim, after, limit)
	if err != nil {
		replyError(ctx, err)
		return
	}
	b, _ := json.Marshal(out)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// listObjects walks the catalog for one page of a bucket's listing. A run
// of keys under one common prefix costs one seek, not a step per key.
func (m *Master) listObjects(bucket string, prefix, delim, after []byte, limit int) (client.ObjectListing, error) {
	out := client.ObjectListing{Objects: []client.ObjectEntry{}, Prefixes: []string{}}
	if limit == 0 {
		return out, nil
	}
	base := len(bucket) + 1 // "BUCKET/"
	full := append([]byte(bucket+"/"), prefix...)
	it := m.cat.db().NewIterator(util.BytesPrefix(recordKey(nil, full)), nil)
	defer it.Release()
	var valid bool
	if len(after) > 0 {
		start := recordKey(nil, append([]byte(bucket+"/"), after...))
		valid = it.Seek(start)
		if valid && bytes.Equal(it.Key(), start) {
			valid = it.Next()
		}
	} else {
		valid = it.First()
	}
	count := 0
	var rec Record
	for valid {
		key := it.Key()[1:]
		rel := key[base:]
		if len(delim) > 0 {
			if i := bytes.Index(rel[len(prefix):], delim); i >= 0 {
				cp := rel[:len(prefix)+i+len(delim)]
				// A prefix at or before after was on an earlier page.
				if len(after) == 0 || bytes.Compare(cp, after) > 0 {
					if count == limit {
						out.Truncated = true
						break
					}
					out.Prefixes = append(out.Prefixes, string(cp))
					out.Next = string(cp)
					count++
				}
				end := prefixEnd(key[:base+len(cp)])
				if end == nil {
					break
				}
				valid = it.Seek(recordKey(nil, end))
				continue
			}
		}
		if count == limit {
			out.Truncated = true
			break
		}
		if err := decodeRecord(it.Value(), &rec); err != nil {
			valid = it.Next()
			continue
		}
		e := client.ObjectEntry{Key: string(rel), Size: rec.Size, ETag: rec.ETag(), Modified: rec.ModTime}
		meta, err := m.objMeta(key, rec.Version)
		if err != nil {
			return out, err
		}
		e.ETag = client.S3ETagOf(meta, e.ETag)
		out.Objects = append(out.Objects, e)
		out.Next = e.Key
		count++
		valid = it.Next()
	}
	if err := it.Error(); err != nil {
		return out, fmt.Errorf("node: list bucket %q: %w", bucket, err)
	}
	if !out.Truncated {
		out.Next = ""
	}
	return out, nil
}

// prefixEnd is the smallest key after every key that starts with p (nil:
// there is none).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// maxMetaArg bounds a read redirect's m= argument: the URL stays well
// within what a volume reads of a request line.
const maxMetaArg = 4 << 10

// metaArg is the m= argument of a read redirect to version of key: the
// response headers of its S3 metadata, as base64url JSON, for the volume
// to send. Nil when none is recorded; without the x-amz-meta-* headers
// when with them it would be over maxMetaArg, and nil if even then.
func (m *Master) metaArg(key []byte, version uint64) []byte {
	meta, err := m.objMeta(key, version)
	if err != nil || meta == nil {
		return nil
	}
	return encodeMetaArg(meta)
}

// encodeMetaArg is metaArg of meta (which it may change); nil when it
// records no response header.
func encodeMetaArg(meta *client.ObjectMeta) []byte {
	meta.MD5, meta.ETag = "", ""
	if meta.ContentType == "" && meta.ContentEncoding == "" && meta.ContentDisposition == "" &&
		meta.ContentLanguage == "" && meta.CacheControl == "" && meta.Expires == "" && len(meta.User) == 0 {
		return nil
	}
	for range 2 {
		b, _ := json.Marshal(meta)
		if n := base64.RawURLEncoding.EncodedLen(len(b)); n <= maxMetaArg {
			return base64.RawURLEncoding.AppendEncode(make([]byte, 0, n), b)
		}
		meta.User = nil
	}
	return nil
}

// decodeMetaArg decodes what metaArg encoded; nil when malformed.
func decodeMetaArg(arg []byte) *client.ObjectMeta {
	if len(arg) == 0 || len(arg) > maxMetaArg {
		return nil
	}
	b, err := base64.RawURLEncoding.AppendDecode(nil, arg)
	if err != nil {
		return nil
	}
	var meta client.ObjectMeta
	if json.Unmarshal(b, &meta) != nil {
		return nil
	}
	return &meta
}

// setMetaHeaders sets the response headers S3 metadata records (those of
// a value's PUT that S3 returns on GET and HEAD). fasthttp drops CR and LF
// from header values.
func setMetaHeaders(h *fasthttp.ResponseHeader, meta *client.ObjectMeta) {
	if meta.ContentType != "" {
		h.SetContentType(meta.ContentType)
	}
	for _, kv := range [...][2]string{
		{"Content-Encoding", meta.ContentEncoding},
		{"Content-Disposition", meta.ContentDisposition},
		{"Content-Language", meta.ContentLanguage},
		{"Cache-Control", meta.CacheControl},
		{"Expires", meta.Expires},
	} {
		if kv[1] != "" {
			h.Set(kv[0], kv[1])
		}
	}
	for name, v := range meta.User {
		if validHeaderName(name) {
			h.Set("X-Amz-Meta-"+name, v)
		}
	}
}

// validHeaderName reports whether name is a non-empty HTTP token.
func validHeaderName(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
