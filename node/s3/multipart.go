package s3

// Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy,
// CompleteMultipartUpload, AbortMultipartUpload, ListParts and
// ListMultipartUploads, and GetObject/HeadObject of one part. The master
// keeps the uploads and parts (node/multipart.go); a part's bytes stream
// from the client, decoded and checked as a PutObject's, to the volumes
// (from redirectMin by the redirected write path, so not through the
// master, as a PutObject's), and its MD5 (the part's ETag) is computed on
// the way and recorded once the part is stored. Complete copies no byte:
// the object becomes a manifest of its parts, read back part after part.

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
)

var (
	errNoSuchUpload      = newError(fasthttp.StatusNotFound, "NoSuchUpload", "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.")
	errInvalidPartNumber = newError(fasthttp.StatusRequestedRangeNotSatisfiable, "InvalidPartNumber", "The requested partnumber is not satisfiable")
	errPartNumberArg     = newError(fasthttp.StatusBadRequest, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
)

// maxCompleteXML bounds a CompleteMultipartUpload document (10,000 parts
// and their markup).
const maxCompleteXML = 4 << 20

// serveMultipart routes the object requests that name an upload
// (?uploads, ?uploadId=).
func (s *Server) serveMultipart(r *request) *apiError {
	ctx := r.ctx
	args := ctx.QueryArgs()
	switch {
	case ctx.IsPost() && args.Has("uploads"):
		return s.createUpload(r)
	case !args.Has("uploadId"):
		return errMethodNotAllowed
	case ctx.IsPut() && len(ctx.Request.Header.Peek("X-Amz-Copy-Source")) > 0:
		return s.uploadPartCopy(r)
	case ctx.IsPut():
		return s.uploadPart(r)
	case ctx.IsPost():
		return s.completeUpload(r)
	case ctx.IsDelete():
		return s.abortUpload(r)
	case ctx.IsGet():
		return s.listParts(r)
	}
	return errMethodNotAllowed
}

// uploadPath is the master's endpoint of upload id of key, with query q.
func uploadPath(key, id, q string) string {
	p := "/_kvdb/s3/mp" + escapedKey(key) + "?id=" + url.QueryEscape(id)
	if q != "" {
		p += "&" + q
	}
	return p
}

// uploadError turns the master's 404 on an upload into NoSuchUpload.
func uploadError(aerr *apiError) *apiError {
	if aerr != nil && aerr.status == fasthttp.StatusNotFound && aerr.code != "NoSuchBucket" {
		return errNoSuchUpload
	}
	return aerr
}

type initiateResult struct {
	XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
	Xmlns    string   `xml:"xmlns,attr"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	UploadID string   `xml:"UploadId"`
}

func (s *Server) createUpload(r *request) *apiError {
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	meta, aerr := metaFromHeaders(&r.ctx.Request.Header)
	if aerr != nil {
		return aerr
	}
	b, _ := json.Marshal(meta)
	var up client.Upload
	if aerr := s.masterJSON(&r.id, "POST", "/_kvdb/s3/mp"+escapedKey(key), b, &up); aerr != nil {
		return aerr
	}
	writeXML(r.ctx, initiateResult{Xmlns: xmlns, Bucket: r.bucket, Key: r.key, UploadID: up.ID})
	return nil
}

// partNumber reads ?partNumber= (1 to 10,000).
func partNumber(args *fasthttp.Args) (int, *apiError) {
	n, err := strconv.Atoi(string(args.Peek("partNumber")))
	if err != nil || n < 1 || n > 10000 {
		return 0, errPartNumberArg
	}
	return n, nil
}

// storePart stores a part and records its MD5 (sum, called once the body
// is through). It returns the part as recorded. A part of redirectMin or
// more goes by the redirected write path, as a PutObject does: the master
// admits it from its headers (the upload must be open) and the bytes go to
// a volume, never through the master; a smaller one streams through the
// master.
func (s *Server) storePart(r *request, key, id string, n int, body io.Reader, size int64, failure func() *apiError, sum func() string) (client.Part, *apiError) {
	var part client.Part
	var tag string
	var aerr *apiError
	if size >= redirectMin {
		tag, aerr = s.storeRedirected(&r.id, uploadPath(key, id, "part="+strconv.Itoa(n)), key, body, size, failure)
	} else {
		// The master refuses a part of an unknown upload before reading
		// it, which the gateway, still sending, would see as a broken
		// connection: ask first (a page of no parts). The redirected path
		// needs no such question: its refusal comes before the body.
		if aerr := s.masterJSON(&r.id, "GET", uploadPath(key, id, "limit=0"), nil, nil); aerr != nil {
			return part, uploadError(aerr)
		}
		tag, aerr = s.storeTo(&r.id, uploadPath(key, id, "part="+strconv.Itoa(n)), key, body, size, failure)
	}
	if aerr != nil {
		return part, uploadError(aerr)
	}
	aerr = s.masterJSON(&r.id, "POST", uploadPath(key, id, "part="+strconv.Itoa(n)+"&md5="+sum()), nil, &part, "If-Match", tag)
	return part, uploadError(aerr)
}

func (s *Server) uploadPart(r *request) *apiError {
	ctx := r.ctx
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	n, aerr := partNumber(ctx.QueryArgs())
	if aerr != nil {
		return aerr
	}
	id := string(ctx.QueryArgs().Peek("uploadId"))
	b, aerr := s.newBody(ctx, &r.id)
	if aerr != nil {
		return aerr
	}
	part, aerr := s.storePart(r, key, id, n, b, b.want, b.failure, b.md5Hex)
	if aerr != nil {
		return aerr
	}
	ctx.Response.Header.Set("ETag", `"`+part.MD5+`"`)
	if algo, sum := b.checkedAlgo(); algo != "" {
		ctx.Response.Header.Set("X-Amz-Checksum-"+strings.ToUpper(algo), sum)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	return nil
}

type copyPartResult struct {
	XMLName      xml.Name `xml:"CopyPartResult"`
	Xmlns        string   `xml:"xmlns,attr"`
	LastModified string   `xml:"LastModified"`
	ETag         string   `xml:"ETag"`
}

// copySourceRange reads x-amz-copy-source-range ("bytes=FIRST-LAST",
// both within the source) against the source's size.
func copySourceRange(v []byte, size int64) (start, length int64, aerr *apiError) {
	if len(v) == 0 {
		return 0, size, nil
	}
	bad := newError(fasthttp.StatusBadRequest, "InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
	spec, ok := bytes.CutPrefix(bytes.TrimSpace(v), []byte("bytes="))
	a, b, ok2 := bytes.Cut(spec, []byte("-"))
	if !ok || !ok2 {
		return 0, 0, bad
	}
	first, err1 := strconv.ParseInt(string(a), 10, 64)
	last, err2 := strconv.ParseInt(string(b), 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, bad
	}
	if last >= size {
		return 0, 0, newError(fasthttp.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
	}
	return first, last - first + 1, nil
}

// uploadPartCopy copies a range of an object (or all of it) into a part,
// streaming it from a volume through the gateway, its MD5 computed on
// the way.
func (s *Server) uploadPartCopy(r *request) *apiError {
	ctx := r.ctx
	h := &ctx.Request.Header
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	n, aerr := partNumber(ctx.QueryArgs())
	if aerr != nil {
		return aerr
	}
	id := string(ctx.QueryArgs().Peek("uploadId"))
	src, aerr := copySource(h)
	if aerr != nil {
		return aerr
	}
	info, aerr := s.objectInfo(&r.id, src, true)
	if aerr != nil {
		return aerr
	}
	if conditions(h, "X-Amz-Copy-Source-", info.S3ETag(), info.Modified) != 0 {
		return errPrecondition
	}
	start, length, aerr := copySourceRange(h.Peek("X-Amz-Copy-Source-Range"), info.Size)
	if aerr != nil {
		return aerr
	}
	if length > s.cfg.MaxObjectSize {
		return errTooLarge
	}
	sum := md5.New()
	md5Hex := func() string { return hex.EncodeToString(sum.Sum(nil)) }
	var part client.Part
	if length == 0 {
		part, aerr = s.storePart(r, key, id, n, bytes.NewReader(nil), 0, func() *apiError { return nil }, md5Hex)
	} else {
		v, aerr2 := s.openValue(&r.id, &info, start, length, length != info.Size, func(p []byte) error { sum.Write(p); return nil })
		if aerr2 != nil {
			return aerr2
		}
		part, aerr = s.storePart(r, key, id, n, v, length, v.failure, md5Hex)
		v.Close()
	}
	if aerr != nil {
		return aerr
	}
	writeXML(ctx, copyPartResult{Xmlns: xmlns, LastModified: s3Time(part.Modified), ETag: `"` + part.MD5 + `"`})
	return nil
}

// completeRequest is a CompleteMultipartUpload document.
type completeRequest struct {
	XMLName xml.Name `xml:"CompleteMultipartUpload"`
	Parts   []struct {
		PartNumber string `xml:"PartNumber"`
		ETag       string `xml:"ETag"`
	} `xml:"Part"`
}

// parseComplete reads a CompleteMultipartUpload document into its part
// list, in the order given (the master checks the order).
func parseComplete(doc []byte) ([]client.CompletePart, *apiError) {
	var req completeRequest
	if len(doc) > maxCompleteXML || xml.Unmarshal(doc, &req) != nil || len(req.Parts) == 0 || len(req.Parts) > 10000 {
		return nil, errMalformedXML
	}
	out := make([]client.CompletePart, 0, len(req.Parts))
	for _, p := range req.Parts {
		n, err := strconv.Atoi(strings.TrimSpace(p.PartNumber))
		if err != nil {
			return nil, errMalformedXML
		}
		if n < 1 || n > 10000 {
			return nil, errPartNumberArg
		}
		out = append(out, client.CompletePart{Number: n, ETag: strings.TrimSpace(p.ETag)})
	}
	return out, nil
}

type completeResult struct {
	XMLName  xml.Name `xml:"CompleteMultipartUploadResult"`
	Xmlns    string   `xml:"xmlns,attr"`
	Location string   `xml:"Location"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	ETag     string   `xml:"ETag"`
}

func (s *Server) completeUpload(r *request) *apiError {
	ctx := r.ctx
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	id := string(ctx.QueryArgs().Peek("uploadId"))
	b, aerr := s.newBody(ctx, &r.id)
	if aerr != nil {
		return aerr
	}
	if b.want > maxCompleteXML {
		return errMalformedXML
	}
	doc, err := io.ReadAll(io.LimitReader(b, maxCompleteXML+1))
	if err != nil {
		if f := b.failure(); f != nil {
			return f
		}
		return errIncompleteBody
	}
	parts, aerr := parseComplete(doc)
	if aerr != nil {
		return aerr
	}
	var hdr []string
	if v := bytes.TrimSpace(ctx.Request.Header.Peek("If-None-Match")); len(v) > 0 {
		if string(v) != "*" {
			return newError(fasthttp.StatusNotImplemented, "NotImplemented", "If-None-Match on CompleteMultipartUpload takes only *")
		}
		hdr = append(hdr, "If-None-Match", "*")
	}
	body, _ := json.Marshal(parts)
	var info client.ObjectInfo
	if aerr := s.masterJSON(&r.id, "POST", uploadPath(key, id, "complete"), body, &info, hdr...); aerr != nil {
		return uploadError(aerr)
	}
	loc := "http://" + string(ctx.Host()) + "/" + r.bucket + "/" + (&url.URL{Path: r.key}).EscapedPath()
	writeXML(ctx, completeResult{Xmlns: xmlns, Location: loc, Bucket: r.bucket, Key: r.key, ETag: info.S3ETag()})
	return nil
}

func (s *Server) abortUpload(r *request) *apiError {
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	id := string(r.ctx.QueryArgs().Peek("uploadId"))
	if aerr := s.masterJSON(&r.id, "DELETE", uploadPath(key, id, ""), nil, nil); aerr != nil {
		return uploadError(aerr)
	}
	r.ctx.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

type partEntry struct {
	PartNumber   int    `xml:"PartNumber"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
}

type listPartsResult struct {
	XMLName              xml.Name    `xml:"ListPartsResult"`
	Xmlns                string      `xml:"xmlns,attr"`
	Bucket               string      `xml:"Bucket"`
	Key                  string      `xml:"Key"`
	UploadID             string      `xml:"UploadId"`
	Initiator            owner       `xml:"Initiator"`
	Owner                owner       `xml:"Owner"`
	StorageClass         string      `xml:"StorageClass"`
	PartNumberMarker     int         `xml:"PartNumberMarker"`
	NextPartNumberMarker int         `xml:"NextPartNumberMarker"`
	MaxParts             int         `xml:"MaxParts"`
	IsTruncated          bool        `xml:"IsTruncated"`
	Parts                []partEntry `xml:"Part"`
}

func (s *Server) listParts(r *request) *apiError {
	args := r.ctx.QueryArgs()
	key, aerr := kvdbKey(r.bucket, r.key)
	if aerr != nil {
		return aerr
	}
	id := string(args.Peek("uploadId"))
	marker, limit := 0, 1000
	if v := args.Peek("part-number-marker"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			return newError(fasthttp.StatusBadRequest, "InvalidArgument", "part-number-marker must be a number from 0")
		}
		marker = n
	}
	if v := args.Peek("max-parts"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			return newError(fasthttp.StatusBadRequest, "InvalidArgument", "max-parts must be a number from 0")
		}
		limit = min(n, 1000)
	}
	var list client.PartList
	q := "after=" + strconv.Itoa(marker) + "&limit=" + strconv.Itoa(limit)
	if aerr := s.masterJSON(&r.id, "GET", uploadPath(key, id, q), nil, &list); aerr != nil {
		return uploadError(aerr)
	}
	out := listPartsResult{Xmlns: xmlns, Bucket: r.bucket, Key: r.key, UploadID: id, Initiator: theOwner, Owner: theOwner,
		StorageClass: "STANDARD", PartNumberMarker: marker, MaxParts: limit, IsTruncated: list.Truncated, Parts: []partEntry{}}
	for _, p := range list.Parts {
		out.Parts = append(out.Parts, partEntry{PartNumber: p.Number, LastModified: s3Time(p.Modified), ETag: `"` + p.MD5 + `"`, Size: p.Size})
		out.NextPartNumberMarker = p.Number
	}
	writeXML(r.ctx, out)
	return nil
}

type uploadEntry struct {
	Key          string `xml:"Key"`
	UploadID     string `xml:"UploadId"`
	Initiator    owner  `xml:"Initiator"`
	Owner        owner  `xml:"Owner"`
	StorageClass string `xml:"StorageClass"`
	Initiated    string `xml:"Initiated"`
}

type listUploadsResult struct {
	XMLName            xml.Name       `xml:"ListMultipartUploadsResult"`
	Xmlns              string         `xml:"xmlns,attr"`
	Bucket             string         `xml:"Bucket"`
	KeyMarker          string         `xml:"KeyMarker"`
	UploadIDMarker     string         `xml:"UploadIdMarker"`
	NextKeyMarker      string         `xml:"NextKeyMarker"`
	NextUploadIDMarker string         `xml:"NextUploadIdMarker"`
	Prefix             string         `xml:"Prefix"`
	Delimiter          *string        `xml:"Delimiter"`
	EncodingType       string         `xml:"EncodingType,omitempty"`
	MaxUploads         int            `xml:"MaxUploads"`
	IsTruncated        bool           `xml:"IsTruncated"`
	Uploads            []uploadEntry  `xml:"Upload"`
	CommonPrefixes     []commonPrefix `xml:"CommonPrefixes"`
}

// listUploads answers ListMultipartUploads (GET /BUCKET?uploads).
func (s *Server) listUploads(r *request) *apiError {
	args := r.ctx.QueryArgs()
	p, aerr := parseListParams(args)
	if aerr != nil {
		return aerr
	}
	if v := args.Peek("max-uploads"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			return newError(fasthttp.StatusBadRequest, "InvalidArgument", "max-uploads must be a number from 0")
		}
		p.maxKeys = min(n, 1000)
	}
	keyMarker, idMarker := string(args.Peek("key-marker")), string(args.Peek("upload-id-marker"))
	if keyMarker == "" {
		idMarker = ""
	}
	q := url.Values{}
	q.Set("prefix", p.prefix)
	q.Set("delimiter", p.delimiter)
	q.Set("key", keyMarker)
	q.Set("id", idMarker)
	q.Set("limit", strconv.Itoa(p.maxKeys))
	var list client.UploadList
	if aerr := s.masterJSON(&r.id, "GET", "/_kvdb/s3/uploads/"+r.bucket+"?"+q.Encode(), nil, &list); aerr != nil {
		return aerr
	}
	out := listUploadsResult{Xmlns: xmlns, Bucket: r.bucket, KeyMarker: p.enc(keyMarker), UploadIDMarker: idMarker,
		Prefix: p.enc(p.prefix), MaxUploads: p.maxKeys, IsTruncated: list.Truncated,
		NextKeyMarker: p.enc(list.NextKey), NextUploadIDMarker: list.NextID}
	if args.Has("delimiter") {
		d := p.enc(p.delimiter)
		out.Delimiter = &d
	}
	if p.encode {
		out.EncodingType = "url"
	}
	for _, u := range list.Uploads {
		out.Uploads = append(out.Uploads, uploadEntry{Key: p.enc(u.Key), UploadID: u.ID, Initiator: theOwner, Owner: theOwner,
			StorageClass: "STANDARD", Initiated: s3Time(u.Initiated)})
	}
	for _, cp := range list.Prefixes {
		out.CommonPrefixes = append(out.CommonPrefixes, commonPrefix{Prefix: p.enc(cp)})
	}
	writeXML(r.ctx, out)
	return nil
}
