package s3

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
)

// maxUserMeta is S3's limit on x-amz-meta-* headers (names and values).
const maxUserMeta = 2 << 10

func (s *Server) serveObject(r *request) *apiError {
	ctx := r.ctx
	args := ctx.QueryArgs()
	if args.Has("uploadId") || args.Has("uploads") {
		return s.serveMultipart(r) // multipart.go
	}
	if args.Has("tagging") || args.Has("retention") || args.Has("legal-hold") || args.Has("torrent") ||
		args.Has("restore") || args.Has("select") || args.Has("attributes") {
		return errNotImplemented
	}
	switch {
	case ctx.IsGet() && args.Has("acl"):
		if _, aerr := s.objectInfo(&r.id, r.bucket+"/"+r.key, false); aerr != nil {
			return aerr
		}
		writeXML(ctx, ownerACL())
		return nil
	case ctx.IsGet(), ctx.IsHead():
		return s.getObject(r)
	case ctx.IsPut() && args.Has("acl"):
		return errNotImplemented
	case ctx.IsPut() && len(ctx.Request.Header.Peek("X-Amz-Copy-Source")) > 0:
		return s.copyObject(r)
	case ctx.IsPut():
		return s.putObject(r)
	case ctx.IsDelete():
		return s.deleteObject(r)
	}
	return errMethodNotAllowed
}

// metaFromHeaders takes the metadata a PutObject (or a CopyObject that
// replaces it) stores from the request's headers.
func metaFromHeaders(h *fasthttp.RequestHeader) (client.ObjectMeta, *apiError) {
	m := client.ObjectMeta{
		ContentType:        string(h.ContentType()),
		ContentDisposition: string(h.Peek("Content-Disposition")),
		ContentLanguage:    string(h.Peek("Content-Language")),
		CacheControl:       string(h.Peek("Cache-Control")),
		Expires:            string(h.Peek("Expires")),
	}
	// aws-chunked describes the upload, not the object (s3-tests
	// test_object_content_encoding_aws_chunked).
	var enc []string
	for _, e := range strings.Split(string(h.Peek("Content-Encoding")), ",") {
		if e = strings.TrimSpace(e); e != "" && !strings.EqualFold(e, "aws-chunked") {
			enc = append(enc, e)
		}
	}
	m.ContentEncoding = strings.Join(enc, ", ")
	size := 0
	h.VisitAll(func(k, v []byte) {
		name := strings.ToLower(string(k))
		if n, ok := strings.CutPrefix(name, "x-amz-meta-"); ok && n != "" {
			if m.User == nil {
				m.User = map[string]string{}
			}
			m.User[n] = string(v)
			size += len(n) + len(v)
		}
	})
	if size > maxUserMeta {
		return m, errMetadataTooLarge
	}
	return m, nil
}

// setObjectHeaders writes an object's headers into a GET or HEAD answer.
func setObjectHeaders(ctx *fasthttp.RequestCtx, info *client.ObjectInfo) {
	h := &ctx.Response.Header
	m := info.Meta
	if m == nil {
		m = &client.ObjectMeta{}
	}
	ct := m.ContentType
	if ct == "" {
		ct = "binary/octet-stream"
	}
	h.SetContentType(ct)
	for name, v := range map[string]string{
		"Content-Encoding": m.ContentEncoding, "Content-Disposition": m.ContentDisposition,
		"Content-Language": m.ContentLanguage, "Cache-Control": m.CacheControl, "Expires": m.Expires,
	} {
		if v != "" {
			h.Set(name, v)
		}
	}
	// The names as stored (lower case), as S3 sends them: botocore takes
	// the metadata's keys from the header names as they arrive.
	h.DisableNormalizing()
	for name, v := range m.User {
		h.Set("x-amz-meta-"+name, v)
	}
	h.Set("ETag", info.S3ETag())
	h.Set("Last-Modified", httpDate(info.Modified))
	h.Set("Accept-Ranges", "bytes")
	if ctx.IsGet() {
		// A signed GET may override the answer's headers.
		args := ctx.QueryArgs()
		for q, name := range map[string]string{
			"response-content-type": "Content-Type", "response-content-language": "Content-Language",
			"response-expires": "Expires", "response-cache-control": "Cache-Control",
			"response-content-disposition": "Content-Disposition", "response-content-encoding": "Content-Encoding",
		} {
			if v := args.Peek(q); len(v) > 0 {
				h.Set(name, string(v))
			}
		}
	}
}

// conditions evaluates If-Match, If-Unmodified-Since, If-None-Match and
// If-Modified-Since (with prefix "X-Amz-Copy-Source-" for a copy's
// source) in RFC 9110's order against an object: 0 (go on), 304 or 412.
func conditions(h *fasthttp.RequestHeader, prefix, etag string, mtime time.Time) int {
	mtime = mtime.Truncate(time.Second)
	im, inm := h.Peek(prefix+"If-Match"), h.Peek(prefix+"If-None-Match")
	date := func(name string) (time.Time, bool) {
		v := h.Peek(prefix + name)
		if len(v) == 0 {
			return time.Time{}, false
		}
		t, err := fasthttp.ParseHTTPDate(v)
		return t, err == nil
	}
	switch {
	case len(im) > 0:
		if !etagMatches(im, etag) {
			return fasthttp.StatusPreconditionFailed
		}
	default:
		if t, ok := date("If-Unmodified-Since"); ok && mtime.After(t) {
			return fasthttp.StatusPreconditionFailed
		}
	}
	switch {
	case len(inm) > 0:
		if etagMatches(inm, etag) {
			return fasthttp.StatusNotModified
		}
	default:
		if t, ok := date("If-Modified-Since"); ok && !mtime.After(t) {
			return fasthttp.StatusNotModified
		}
	}
	return 0
}

// etagMatches compares an entity-tag list (or "*") with etag, quotes and
// W/ prefixes aside (S3 clients send ETags quoted or not).
func etagMatches(list []byte, etag string) bool {
	want := strings.Trim(etag, `"`)
	for _, item := range bytes.Split(list, []byte(",")) {
		item = bytes.TrimSpace(item)
		item = bytes.TrimPrefix(item, []byte("W/"))
		if string(item) == "*" || strings.Trim(string(item), `"`) == want {
			return true
		}
	}
	return false
}

var errInvalidRange = newError(fasthttp.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")

// parseRange reads a single-range Range header against size. Syntax it
// does not understand (and several ranges) is ignored, as S3 does: the
// whole object is answered.
func parseRange(v []byte, size int64) (start, length int64, partial bool, aerr *apiError) {
	spec, ok := bytes.CutPrefix(bytes.TrimSpace(v), []byte("bytes="))
	if !ok || bytes.IndexByte(spec, ',') >= 0 {
		return 0, size, false, nil
	}
	a, b, ok := bytes.Cut(spec, []byte("-"))
	if !ok {
		return 0, size, false, nil
	}
	if len(a) == 0 {
		n, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil || n < 0 {
			return 0, size, false, nil
		}
		if n == 0 || size == 0 {
			return 0, 0, false, errInvalidRange
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	first, err := strconv.ParseInt(string(a), 10, 64)
	if err != nil || first < 0 {
		return 0, size, false, nil
	}
	last := size - 1
	if len(b) > 0 {
		if last, err = strconv.ParseInt(string(b), 10, 64); err != nil {
			// Past int64: to the end.
			last = size - 1
		}
		if last < first {
			return 0, size, false, nil
		}
	}
	if first >= size {
		return 0, 0, false, errInvalidRange
	}
	last = min(last, size-1)
	return first, last - first + 1, true, nil
}

func (s *Server) getObject(r *request) *apiError {
	ctx := r.ctx
	h := &ctx.Request.Header
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	part := 0
	if v := ctx.QueryArgs().Peek("partNumber"); len(v) > 0 {
		if part, aerr = partNumber(ctx.QueryArgs()); aerr != nil {
			return aerr
		}
		if len(h.Peek("Range")) > 0 {
			return newError(fasthttp.StatusBadRequest, "InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
		}
	}
	info, aerr := s.objectInfoPart(&r.id, key, ctx.IsGet(), part)
	if aerr != nil {
		return aerr
	}
	etag := info.S3ETag()
	switch conditions(h, "", etag, info.Modified) {
	case fasthttp.StatusPreconditionFailed:
		return errPrecondition
	case fasthttp.StatusNotModified:
		ctx.Response.Header.Set("ETag", etag)
		ctx.Response.Header.Set("Last-Modified", httpDate(info.Modified))
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		ctx.Response.SkipBody = true
		return nil
	}
	start, length, partial := int64(0), info.Size, false
	switch {
	case part == 0:
	case info.Parts > 0 && part <= info.Parts:
		start, length, partial = info.PartStart, info.PartSize, true
		ctx.Response.Header.Set("X-Amz-Mp-Parts-Count", strconv.Itoa(info.Parts))
	case info.Parts == 0 && part == 1:
	default:
		return errInvalidPartNumber
	}
	if rh := h.Peek("Range"); len(rh) > 0 && ifRange(h, etag, info.Modified) {
		start, length, partial, aerr = parseRange(rh, info.Size)
		if aerr != nil {
			ctx.Response.Header.Set("Content-Range", "bytes */"+strconv.FormatInt(info.Size, 10))
			return aerr
		}
	}
	setObjectHeaders(ctx, &info)
	if partial {
		ctx.Response.Header.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(start+length-1, 10)+"/"+strconv.FormatInt(info.Size, 10))
		ctx.SetStatusCode(fasthttp.StatusPartialContent)
	} else {
		ctx.SetStatusCode(fasthttp.StatusOK)
	}
	if ctx.IsHead() {
		ctx.Response.SkipBody = true
		ctx.Response.Header.SetContentLength(int(length))
		return nil
	}
	if length == 0 {
		ctx.Response.SetBodyRaw(nil)
		return nil
	}
	if f := s.openLocal(key, &info, start, length); f != nil {
		// fasthttp sends it (a local file by sendfile) and closes it.
		ctx.SetBodyStream(f, int(length))
		return nil
	}
	v, aerr := s.openValue(&r.id, &info, start, length, partial, nil)
	if aerr != nil {
		ctx.Response.Header.Del("Content-Range")
		return aerr
	}
	ctx.SetBodyStream(v, int(length))
	return nil
}

// openLocal opens length bytes of the object's value at offset start
// through the gateway's own volume: its copy, when the master named that
// volume to read from, or a multipart value's parts stream (local parts
// from disk). Nil when there is no such volume, the master named another,
// or the copy is gone (the value was replaced meanwhile): then the value
// is read over HTTP as usual.
func (s *Server) openLocal(key string, info *client.ObjectInfo, start, length int64) io.ReadCloser {
	if s.cfg.Local == nil {
		return nil
	}
	if info.Parts > 0 && info.Version != 0 {
		rc, err := s.cfg.Local.OpenParts([]byte(key), info.Version, start, length)
		if err != nil {
			s.log.Debug("streaming the parts through the local volume; reading over HTTP", "key", key, "err", err)
			return nil
		}
		return rc
	}
	if info.Parts > 0 || info.Volume == "" || info.Volume != s.cfg.Local.Name() {
		return nil
	}
	f, size, err := s.cfg.Local.OpenCopy([]byte(key), info.Version)
	if err != nil {
		s.log.Debug("reading the local copy; reading over HTTP", "key", key, "err", err)
		return nil
	}
	if size != info.Size {
		f.Close()
		return nil
	}
	if start > 0 {
		if _, err := f.Seek(start, io.SeekCurrent); err != nil {
			f.Close()
			return nil
		}
	}
	return f
}

// ifRange reports whether a Range applies: no If-Range, or one naming the
// current ETag or a date not before the last modification.
func ifRange(h *fasthttp.RequestHeader, etag string, mtime time.Time) bool {
	ir := h.Peek("If-Range")
	if len(ir) == 0 {
		return true
	}
	if t, err := fasthttp.ParseHTTPDate(ir); err == nil {
		return !mtime.Truncate(time.Second).After(t)
	}
	return etagMatches(ir, etag)
}

func httpDate(t time.Time) string { return string(fasthttp.AppendHTTPDate(nil, t)) }

func (s *Server) putObject(r *request) *apiError {
	ctx := r.ctx
	h := &ctx.Request.Header
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	meta, aerr := metaFromHeaders(h)
	if aerr != nil {
		return aerr
	}
	b, aerr := s.newBody(ctx, &r.id)
	if aerr != nil {
		return aerr
	}
	if aerr := s.checkBucket(&r.id, r.bucket); aerr != nil {
		return aerr
	}
	hdr, aerr := s.writeConditions(r, key)
	if aerr != nil {
		return aerr
	}
	tag, aerr := s.storeValue(&r.id, key, b, b.want, b.failure, hdr...)
	if aerr != nil {
		return aerr
	}
	meta.MD5 = b.md5Hex()
	_, _ = s.recordMeta(&r.id, key, tag, &meta)
	ctx.Response.Header.Set("ETag", `"`+meta.MD5+`"`)
	if algo, sum := b.checkedAlgo(); algo != "" {
		ctx.Response.Header.Set("X-Amz-Checksum-"+strings.ToUpper(algo), sum)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	return nil
}

// writeConditions turns a PutObject's If-None-Match: * and If-Match (on
// the S3 ETag) into the master's conditions on the kvdb ETag.
func (s *Server) writeConditions(r *request, key string) ([]string, *apiError) {
	h := &r.ctx.Request.Header
	var hdr []string
	if v := bytes.TrimSpace(h.Peek("If-None-Match")); len(v) > 0 {
		if string(v) != "*" {
			return nil, newError(fasthttp.StatusNotImplemented, "NotImplemented", "If-None-Match on PutObject takes only *")
		}
		hdr = append(hdr, "If-None-Match", "*")
	}
	if v := bytes.TrimSpace(h.Peek("If-Match")); len(v) > 0 {
		info, aerr := s.objectInfo(&r.id, key, false)
		if aerr != nil {
			return nil, aerr
		}
		if !etagMatches(v, info.S3ETag()) {
			return nil, errPrecondition
		}
		hdr = append(hdr, "If-Match", info.ETag)
	}
	return hdr, nil
}

func (s *Server) deleteObject(r *request) *apiError {
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	if aerr := s.deleteKey(&r.id, key); aerr != nil {
		return aerr
	}
	r.ctx.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

// deleteKey deletes an object and its metadata; an absent key is fine.
func (s *Server) deleteKey(id *identity, key string) *apiError {
	aerr := s.masterJSON(id, "DELETE", "/_kvdb/s3/object"+escapedKey(key), nil, nil)
	if aerr == errNoSuchKey {
		return nil
	}
	return aerr
}

type deleteRequest struct {
	XMLName xml.Name `xml:"Delete"`
	Quiet   bool     `xml:"Quiet"`
	Objects []struct {
		Key       string `xml:"Key"`
		VersionID string `xml:"VersionId"`
	} `xml:"Object"`
}

type deleteResult struct {
	XMLName xml.Name        `xml:"DeleteResult"`
	Xmlns   string          `xml:"xmlns,attr"`
	Deleted []deletedObject `xml:"Deleted"`
	Errors  []deleteError   `xml:"Error"`
}

type deletedObject struct {
	Key string `xml:"Key"`
}

type deleteError struct {
	Key     string `xml:"Key"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// maxDeleteBody bounds a DeleteObjects document (1000 keys of 1 KiB and
// their markup).
const maxDeleteBody = 2 << 20

func (s *Server) deleteObjects(r *request) *apiError {
	b, aerr := s.newBody(r.ctx, &r.id)
	if aerr != nil {
		return aerr
	}
	if b.want > maxDeleteBody {
		return errMalformedXML
	}
	doc, err := io.ReadAll(io.LimitReader(b, maxDeleteBody+1))
	if err != nil {
		if f := b.failure(); f != nil {
			return f
		}
		return errIncompleteBody
	}
	var req deleteRequest
	if len(doc) > maxDeleteBody || xml.Unmarshal(doc, &req) != nil || len(req.Objects) == 0 || len(req.Objects) > 1000 {
		return errMalformedXML
	}
	if aerr := s.checkBucket(&r.id, r.bucket); aerr != nil {
		return aerr
	}
	out := deleteResult{Xmlns: xmlns}
	for _, o := range req.Objects {
		key, aerr := kvdbKey(r.bucket, o.Key)
		if aerr == nil {
			aerr = s.deleteKey(&r.id, key)
		}
		switch {
		case aerr != nil:
			out.Errors = append(out.Errors, deleteError{Key: o.Key, Code: aerr.code, Message: aerr.msg})
		case !req.Quiet:
			out.Deleted = append(out.Deleted, deletedObject{Key: o.Key})
		}
	}
	writeXML(r.ctx, out)
	return nil
}

// copySource is the kvdb key X-Amz-Copy-Source names.
func copySource(h *fasthttp.RequestHeader) (string, *apiError) {
	srcRaw := string(h.Peek("X-Amz-Copy-Source"))
	srcRaw, version, _ := strings.Cut(srcRaw, "?versionId=")
	if version != "" && version != "null" {
		return "", newError(fasthttp.StatusNotImplemented, "NotImplemented", "kvdb keeps no object versions")
	}
	srcPath, err := url.PathUnescape(strings.TrimPrefix(srcRaw, "/"))
	srcBucket, srcKey, ok := strings.Cut(srcPath, "/")
	if err != nil || !ok || srcKey == "" {
		return "", newError(fasthttp.StatusBadRequest, "InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
	}
	return kvdbKey(srcBucket, srcKey)
}

type copyObjectResult struct {
	XMLName      xml.Name `xml:"CopyObjectResult"`
	Xmlns        string   `xml:"xmlns,attr"`
	LastModified string   `xml:"LastModified"`
	ETag         string   `xml:"ETag"`
}

// copyObject streams the source's bytes from a volume into a PUT of the
// destination: nothing is held in memory, and the bytes are checked
// against the source's checksum on the way (a bad copy is cut short and
// not stored).
func (s *Server) copyObject(r *request) *apiError {
	ctx := r.ctx
	h := &ctx.Request.Header
	dst, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	src, aerr := copySource(h)
	if aerr != nil {
		return aerr
	}
	replace := false
	switch d := string(h.Peek("X-Amz-Metadata-Directive")); d {
	case "", "COPY":
	case "REPLACE":
		replace = true
	default:
		return newError(fasthttp.StatusBadRequest, "InvalidArgument", "Unknown metadata directive.")
	}
	info, aerr := s.objectInfo(&r.id, src, src != dst)
	if aerr != nil {
		return aerr
	}
	if conditions(h, "X-Amz-Copy-Source-", info.S3ETag(), info.Modified) != 0 {
		return errPrecondition
	}
	var meta client.ObjectMeta
	if info.Meta != nil {
		meta = *info.Meta
	}
	if replace {
		md5sum, mpTag := meta.MD5, meta.ETag
		if meta, aerr = metaFromHeaders(h); aerr != nil {
			return aerr
		}
		meta.MD5, meta.ETag = md5sum, mpTag
	}
	if src == dst {
		if !replace {
			return newError(fasthttp.StatusBadRequest, "InvalidRequest", "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.")
		}
		if meta.MD5 != "" || meta.ETag != "" {
			// Only the metadata changes: no byte needs to move.
			got, aerr := s.recordMeta(&r.id, dst, info.ETag, &meta)
			if aerr != nil {
				return aerr
			}
			writeXML(ctx, copyObjectResult{Xmlns: xmlns, LastModified: s3Time(got.Modified), ETag: got.S3ETag()})
			return nil
		}
		// No MD5 known (a value written natively): copy to compute it.
		if info, aerr = s.objectInfo(&r.id, src, true); aerr != nil {
			return aerr
		}
	}
	if info.Size > s.cfg.MaxObjectSize {
		return newError(fasthttp.StatusBadRequest, "InvalidRequest", "The specified copy source is larger than the maximum allowable size for a copy source: "+strconv.FormatInt(s.cfg.MaxObjectSize, 10))
	}
	// A copy of a multipart object is one value: its ETag is its MD5.
	meta.ETag = ""
	if aerr := s.checkBucket(&r.id, r.bucket); aerr != nil {
		return aerr
	}
	hdr, aerr := s.writeConditions(r, dst)
	if aerr != nil {
		return aerr
	}
	var sum = md5.New()
	observe := func(p []byte) error { sum.Write(p); return nil }
	if meta.MD5 != "" {
		observe = nil // the source's MD5 is known, and the bytes are checked against its xxHash
	}
	var tag string
	if info.Size == 0 {
		tag, aerr = s.storeValue(&r.id, dst, bytes.NewReader(nil), 0, func() *apiError { return nil }, hdr...)
	} else {
		v, aerr2 := s.openValue(&r.id, &info, 0, info.Size, false, observe)
		if aerr2 != nil {
			return aerr2
		}
		tag, aerr = s.storeValue(&r.id, dst, v, info.Size, v.failure, hdr...)
		v.Close()
	}
	if aerr != nil {
		return aerr
	}
	if meta.MD5 == "" {
		meta.MD5 = hex.EncodeToString(sum.Sum(nil))
	}
	got, aerr := s.recordMeta(&r.id, dst, tag, &meta)
	modified := got.Modified
	if aerr != nil {
		modified = time.Now()
	}
	writeXML(ctx, copyObjectResult{Xmlns: xmlns, LastModified: s3Time(modified), ETag: `"` + meta.MD5 + `"`})
	return nil
}
