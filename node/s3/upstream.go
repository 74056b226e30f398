package s3

// The gateway's side as a client of kvdb: the master's native API and
// /_kvdb/s3/ endpoints, and the volumes the master redirects reads to.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node"
	"github.com/kvdb/kvdb/node/client"
)

// escapedKey is a kvdb key as a URL path (with its leading '/').
func escapedKey(key string) string {
	return "/" + string(node.AppendEscapedKey(nil, []byte(key)))
}

// masterAddr resolves the master's address.
func (s *Server) masterAddr() (string, *apiError) {
	addr, err := s.cfg.Master()
	if err != nil || addr == "" {
		s.log.Warn("no master to talk to", "err", err)
		return "", errUnavailable
	}
	return addr, nil
}

// newMasterRequest prepares a request to the master for id (the caller
// releases it).
func (s *Server) newMasterRequest(id *identity, method, pathAndQuery string) (*fasthttp.Request, *apiError) {
	addr, aerr := s.masterAddr()
	if aerr != nil {
		return nil, aerr
	}
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(method)
	req.SetRequestURI("http://" + addr + pathAndQuery)
	if t := id.token(); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	return req, nil
}

// masterJSON sends a small request to the master and decodes its JSON
// answer into out (if not nil). body may be nil.
func (s *Server) masterJSON(id *identity, method, pathAndQuery string, body []byte, out any, hdr ...string) *apiError {
	req, aerr := s.newMasterRequest(id, method, pathAndQuery)
	if aerr != nil {
		return aerr
	}
	defer fasthttp.ReleaseRequest(req)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	for hop := 0; ; hop++ {
		if err := s.client.DoTimeout(req, resp, time.Minute); err != nil {
			s.log.Warn("master request failed", "method", method, "path", pathAndQuery, "err", err)
			return errUnavailable
		}
		// A master that does not lead sends every request to the one that
		// does (307 for a write, 302 for a read), having done nothing: the
		// request goes there as it is.
		st := resp.StatusCode()
		loc := resp.Header.Peek(fasthttp.HeaderLocation)
		if st != fasthttp.StatusTemporaryRedirect && st != fasthttp.StatusFound || len(loc) == 0 || hop == maxHops {
			break
		}
		req.SetRequestURIBytes(loc)
	}
	if st := resp.StatusCode(); st < 200 || st > 299 {
		return s.masterError(resp)
	}
	if out != nil {
		if err := json.Unmarshal(resp.Body(), out); err != nil {
			s.log.Error("master answer", "path", pathAndQuery, "err", err)
			return errInternal
		}
	}
	return nil
}

// masterError maps an error answer of the master to an S3 error.
func (s *Server) masterError(resp *fasthttp.Response) *apiError {
	st := resp.StatusCode()
	var e client.S3Error
	if strings.HasPrefix(string(resp.Header.ContentType()), "application/json") && json.Unmarshal(resp.Body(), &e) == nil && e.Code != "" {
		switch e.Code {
		case "NoSuchBucket":
			return errNoSuchBucket
		case "NoSuchKey":
			return errNoSuchKey
		case "BucketAlreadyOwnedByYou":
			return errBucketExists
		case "BucketNotEmpty":
			return errBucketNotEmpty
		case "InvalidBucketName":
			return errBucketName
		case "PreconditionFailed":
			return errPrecondition
		}
		return newError(st, e.Code, e.Message)
	}
	msg := strings.TrimSpace(string(resp.Body()))
	switch st {
	case fasthttp.StatusBadRequest:
		return newError(st, "InvalidRequest", msg)
	case fasthttp.StatusUnauthorized, fasthttp.StatusForbidden:
		return errAccessDenied
	case fasthttp.StatusNotFound:
		return errNoSuchKey
	case fasthttp.StatusConflict:
		return newError(st, "OperationAborted", msg)
	case fasthttp.StatusPreconditionFailed:
		return errPrecondition
	case fasthttp.StatusRequestEntityTooLarge:
		return errTooLarge
	case fasthttp.StatusServiceUnavailable:
		return newError(st, "ServiceUnavailable", msg)
	case fasthttp.StatusInsufficientStorage:
		return errInsufficientSpace
	}
	s.log.Warn("master error", "status", st, "body", msg)
	return errInternal
}

// objectInfo asks the master about an object (key is "BUCKET/KEY"); with
// locate, where its bytes can be read.
func (s *Server) objectInfo(id *identity, key string, locate bool) (client.ObjectInfo, *apiError) {
	return s.objectInfoPart(id, key, locate, 0)
}

// objectInfoPart is objectInfo that also asks where part (> 0) lies.
func (s *Server) objectInfoPart(id *identity, key string, locate bool, part int) (client.ObjectInfo, *apiError) {
	var info client.ObjectInfo
	p := "/_kvdb/s3/object" + escapedKey(key)
	var q []string
	if locate {
		q = append(q, "locate")
		if s.cfg.Local != nil {
			q = append(q, "near="+s.cfg.Local.Name())
		}
	}
	if part > 0 {
		q = append(q, "part="+strconv.Itoa(part))
	}
	if len(q) > 0 {
		p += "?" + strings.Join(q, "&")
	}
	aerr := s.masterJSON(id, "GET", p, nil, &info)
	return info, aerr
}

// storeValue streams a value into PUT /KEY on the master and returns the
// kvdb ETag. size is the body's length (-1: unknown, sent chunked). body
// is a checking reader (a *body or *valueStream): if its checks fail it
// errors before its last byte, the master never receives the whole value
// and commits nothing, and storeValue returns that failure. hdr are extra
// headers (If-None-Match, If-Match).
func (s *Server) storeValue(id *identity, key string, r io.Reader, size int64, failure func() *apiError, hdr ...string) (string, *apiError) {
	if size >= redirectMin {
		return s.storeRedirected(id, escapedKey(key), key, r, size, failure, hdr...)
	}
	return s.storeTo(id, escapedKey(key), key, r, size, failure, hdr...)
}

// redirectMin is the smallest value (or part) the gateway sends by the
// redirected write path (as kvdb's own client does from 1 MiB): below it
// the extra round trip costs more than the master's copy of the bytes.
const redirectMin = 1 << 20

// newExpectClient is the client of storeRedirected's first request.
func newExpectClient(idle time.Duration) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			ExpectContinueTimeout: idle,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       10 * time.Second,
			DisableCompression:    true,
			ResponseHeaderTimeout: idle,
		},
		// The 307 is followed by hand, with fasthttp: the body goes once,
		// to the volume.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// maxMasterHops bounds the masters storeRedirected asks in turn: a master
// that follows sends the write on to the leader (307, before the body).
const maxMasterHops = 3

// storeRedirected stores a value by kvdb's redirected write path, so that
// no byte of it crosses the master: the PUT goes to the master's write
// endpoint pathAndQuery (a value's /KEY, or a part's
// /_kvdb/s3/mp/...?id=&part=) with Expect: 100-continue, the master
// answers 307 with a write ticket on the first replica before the body is
// sent, and the body streams there; that volume writes the replicas,
// commits to the master and relays its answer. A master that follows
// answers 307 to the leader, which is asked the same way. A master that
// answers 100 Continue instead (no coordinator reachable, redirects
// disabled) takes the body itself, as storeTo would send it; so does the
// master when the volume cannot be reached before a byte is sent. key
// names the value in the log; the rest is as storeValue's.
func (s *Server) storeRedirected(id *identity, pathAndQuery, key string, r io.Reader, size int64, failure func() *apiError, hdr ...string) (string, *apiError) {
	addr, aerr := s.masterAddr()
	if aerr != nil {
		return "", aerr
	}
	target := "http://" + addr + pathAndQuery
	var loc string
	for hop := 0; ; hop++ {
		sent := &sentBody{r: r, closed: make(chan struct{})}
		req, err := http.NewRequest(http.MethodPut, target, sent)
		if err != nil {
			return "", errInternal
		}
		req.ContentLength = size
		req.Header.Set("Expect", "100-continue")
		req.Header.Set("Content-Type", "application/octet-stream")
		if t := id.token(); t != "" {
			req.Header.Set("Authorization", "Bearer "+t)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := s.std.Do(req)
		// Once the transport closed the body it reads it no more.
		sent.wait(s.cfg.IdleTimeout)
		if err != nil {
			if f := failure(); f != nil {
				return "", f
			}
			s.log.Warn("storing a value through the master failed", "key", key, "err", err)
			return "", errUnavailable
		}
		loc = resp.Header.Get("Location")
		if resp.StatusCode != http.StatusTemporaryRedirect || loc == "" || sent.n > 0 {
			// Answered by the master: it took the body, or refused the write.
			defer resp.Body.Close()
			if f := failure(); f != nil {
				return "", f
			}
			return s.stdAnswer(resp)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if volumeWrite(loc) || hop+1 == maxMasterHops {
			break
		}
		target = loc // to the leader
	}
	vreq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(vreq)
	vreq.Header.SetMethod(fasthttp.MethodPut)
	vreq.SetRequestURI(loc)
	vreq.Header.SetContentType("application/octet-stream")
	if !volumeWrite(loc) {
		// Still a master after maxMasterHops: it takes the body itself.
		if t := id.token(); t != "" {
			vreq.Header.Set("Authorization", "Bearer "+t)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			vreq.Header.Set(hdr[i], hdr[i+1])
		}
	}
	sent := &sentBody{r: r, closed: make(chan struct{})}
	vreq.SetBodyStream(sent, int(size))
	vresp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(vresp)
	err := s.client.Do(vreq, vresp)
	if f := failure(); f != nil {
		return "", f
	}
	if err != nil && sent.n == 0 && volumeWrite(loc) {
		// The volume could not be reached (it died a moment ago, and the
		// master does not know yet): no byte was read, so the body can
		// still go through the master, which replaces a failed volume.
		s.log.Warn("the coordinating volume is unreachable; storing through the master", "key", key, "url", loc, "err", err)
		return s.storeTo(id, pathAndQuery, key, r, size, failure, hdr...)
	}
	if err != nil {
		s.log.Warn("storing a value at its coordinating volume failed", "key", key, "url", loc, "err", err)
		return "", errUnavailable
	}
	if st := vresp.StatusCode(); st != fasthttp.StatusOK && st != fasthttp.StatusCreated {
		return "", s.masterError(vresp)
	}
	return string(vresp.Header.Peek("ETag")), nil
}

// volumeWrite reports whether loc, the Location of a master's 307, is a
// volume's write endpoint (with a ticket) rather than another master.
func volumeWrite(loc string) bool {
	u, err := url.Parse(loc)
	return err == nil && strings.HasPrefix(u.EscapedPath(), "/"+node.ReservedPrefix+"write/")
}

// stdAnswer is storeTo's handling of a net/http answer of the master.
func (s *Server) stdAnswer(resp *http.Response) (string, *apiError) {
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated {
		return resp.Header.Get("ETag"), nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	fr := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(fr)
	fr.SetStatusCode(resp.StatusCode)
	fr.Header.SetContentType(resp.Header.Get("Content-Type"))
	fr.SetBodyRaw(b)
	return "", s.masterError(fr)
}

// sentBody is a value's body as a client sends it: n counts the bytes it
// read, closed tells when net/http's transport is done with it (it may
// close it from another goroutine after Do returned).
type sentBody struct {
	r      io.Reader
	n      int64
	once   sync.Once
	closed chan struct{}
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *sentBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// wait waits until the transport closed the body, at most d.
func (b *sentBody) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.closed:
	case <-t.C:
	}
}

// storeTo streams a value through the master, to its write endpoint
// pathAndQuery (a value's /KEY or a part's /_kvdb/s3/mp/...?id=&part=), as
// storeValue and storePart do below redirectMin.
func (s *Server) storeTo(id *identity, pathAndQuery, key string, r io.Reader, size int64, failure func() *apiError, hdr ...string) (string, *apiError) {
	req, aerr := s.newMasterRequest(id, "PUT", pathAndQuery)
	if aerr != nil {
		return "", aerr
	}
	defer fasthttp.ReleaseRequest(req)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if size == 0 {
		// Checked before anything is sent: an empty body that fails its
		// checks must not be stored either.
		if _, err := io.Copy(io.Discard, r); err != nil {
			if f := failure(); f != nil {
				return "", f
			}
			return "", errIncompleteBody
		}
		req.Header.SetContentLength(0)
	} else {
		req.SetBodyStream(r, int(size))
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	err := s.client.Do(req, resp)
	if f := failure(); f != nil {
		return "", f
	}
	if err != nil {
		s.log.Warn("storing a value through the master failed", "key", key, "err", err)
		return "", errUnavailable
	}
	if st := resp.StatusCode(); st != fasthttp.StatusOK && st != fasthttp.StatusCreated {
		return "", s.masterError(resp)
	}
	return string(resp.Header.Peek("ETag")), nil
}

// recordMeta records an object's S3 metadata for the version whose kvdb
// ETag is tag. It reports the object as the master now describes it.
func (s *Server) recordMeta(id *identity, key, tag string, meta *client.ObjectMeta) (client.ObjectInfo, *apiError) {
	b, _ := json.Marshal(meta)
	var info client.ObjectInfo
	aerr := s.masterJSON(id, "PUT", "/_kvdb/s3/object"+escapedKey(key), b, &info, "If-Match", tag)
	if aerr != nil && aerr != errPrecondition {
		s.log.Warn("recording S3 metadata failed; the object's ETag falls back to kvdb's", "key", key, "err", aerr)
	}
	return info, aerr
}

// maxHops bounds the redirects a read follows (a volume that lost its copy
// sends the reader back to the master, which sends it to another volume).
const maxHops = 4

// openValue starts reading length bytes of an object's value from offset
// start (partial: a Range read) at the volume the master named.
func (s *Server) openValue(id *identity, info *client.ObjectInfo, start, length int64, partial bool, observe func([]byte) error) (*valueStream, *apiError) {
	masterAddr, aerr := s.masterAddr()
	if aerr != nil {
		return nil, aerr
	}
	loc := info.Location
	if loc == "" {
		return nil, errUnavailable
	}
	for hop := 0; hop < maxHops; hop++ {
		req := fasthttp.AcquireRequest()
		req.SetRequestURI(loc)
		if partial {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, start+length-1))
		}
		if string(req.URI().Host()) == masterAddr && id.token() != "" {
			// Sent back to the master: it wants the key.
			req.Header.Set("Authorization", "Bearer "+id.token())
		}
		resp := fasthttp.AcquireResponse()
		resp.StreamBody = true
		err := s.client.Do(req, resp)
		fasthttp.ReleaseRequest(req)
		if err != nil {
			fasthttp.ReleaseResponse(resp)
			s.log.Warn("reading a value from a volume failed", "url", loc, "err", err)
			return nil, errUnavailable
		}
		st := resp.StatusCode()
		switch {
		case st == fasthttp.StatusFound || st == fasthttp.StatusTemporaryRedirect:
			loc = string(resp.Header.Peek("Location"))
			_ = resp.CloseBodyStream()
			fasthttp.ReleaseResponse(resp)
			if loc == "" {
				return nil, errUnavailable
			}
			continue
		case st == fasthttp.StatusOK && !partial, st == fasthttp.StatusPartialContent && partial:
		default:
			aerr := s.masterError(readSmall(resp))
			_ = resp.CloseBodyStream()
			fasthttp.ReleaseResponse(resp)
			if st == fasthttp.StatusNotFound {
				// The version went away between the master's answer and
				// the read: the key was overwritten or deleted meanwhile.
				aerr = errNoSuchKey
			}
			return nil, aerr
		}
		if tag := string(resp.Header.Peek("ETag")); tag != info.ETag {
			_ = resp.CloseBodyStream()
			fasthttp.ReleaseResponse(resp)
			return nil, errorf(fasthttp.StatusServiceUnavailable, "ServiceUnavailable", "the object changed while it was being read; retry")
		}
		v := &valueStream{resp: resp, length: length, observe: observe}
		if info.Parts > 0 {
			// A multipart value's ETag is not the xxHash of its bytes:
			// each part read whole is checked against its own.
			v.parts = newPartCheck(info.PartSums, start)
		} else if !partial {
			v.h = xxhash.New()
			v.want = info.ETag
		}
		v.guard = newGuard(resp.BodyStream(), v.see, v.check)
		return v, nil
	}
	return nil, errUnavailable
}

// readSmall reads at most 4 KiB of a streamed error answer into its body,
// for masterError.
func readSmall(resp *fasthttp.Response) *fasthttp.Response {
	if r := resp.BodyStream(); r != nil {
		b, _ := io.ReadAll(io.LimitReader(r, 4<<10))
		resp.SetBodyRaw(b)
	}
	return resp
}

// valueStream is a value being read from a volume. A whole value is
// checked against its xxHash (the kvdb ETag) as it passes, and its last
// byte is kept back until the check holds: a client is cut off rather than
// handed a corrupt or short value.
type valueStream struct {
	*guard
	resp    *fasthttp.Response
	length  int64
	n       int64
	h       *xxhash.Digest
	want    string
	parts   *partCheck
	observe func([]byte) error
	failed  *apiError
}

// partCheck checks a multipart value's parts against their xxHashes as
// the bytes pass (the parts a read covers whole; a range's partial first
// and last parts go unchecked).
type partCheck struct {
	sums  []client.PartSum
	i     int   // the part the next byte belongs to
	off   int64 // that byte's offset in it
	whole bool  // part i is read from its first byte
	h     *xxhash.Digest
}

// newPartCheck starts checking at offset start of the value (nil: no
// part sums known).
func newPartCheck(sums []client.PartSum, start int64) *partCheck {
	if len(sums) == 0 {
		return nil
	}
	c := &partCheck{sums: sums, h: xxhash.New()}
	for c.i < len(sums) && start >= sums[c.i].Size {
		start -= sums[c.i].Size
		c.i++
	}
	c.off, c.whole = start, start == 0
	return c
}

// see checks p, the next bytes; false when a part does not match.
func (c *partCheck) see(p []byte) bool {
	for len(p) > 0 && c.i < len(c.sums) {
		k := int(min(int64(len(p)), c.sums[c.i].Size-c.off))
		if c.whole {
			c.h.Write(p[:k])
		}
		c.off += int64(k)
		p = p[k:]
		if c.off == c.sums[c.i].Size {
			if c.whole && c.h.Sum64() != c.sums[c.i].Sum {
				return false
			}
			c.i, c.off, c.whole = c.i+1, 0, true
			c.h.Reset()
		}
	}
	return true
}

func (v *valueStream) see(p []byte) error {
	v.n += int64(len(p))
	if v.n > v.length {
		return v.fail("the volume sent more bytes than the value holds")
	}
	if v.h != nil {
		v.h.Write(p)
	}
	if v.parts != nil && !v.parts.see(p) {
		return v.fail("a part of the value read does not match its checksum")
	}
	if v.observe != nil {
		return v.observe(p)
	}
	return nil
}

func (v *valueStream) check() error {
	if v.n != v.length {
		return v.fail(fmt.Sprintf("the volume sent %d of %d bytes", v.n, v.length))
	}
	if v.h != nil {
		var b [18]byte
		if got := string(appendETag(b[:0], v.h.Sum64())); got != v.want {
			return v.fail("the value read does not match its checksum")
		}
	}
	return nil
}

func (v *valueStream) fail(msg string) error {
	if v.failed == nil {
		v.failed = newError(fasthttp.StatusInternalServerError, "InternalError", msg)
	}
	return v.failed
}

func (v *valueStream) failure() *apiError { return v.failed }

// Close releases the connection to the volume (fasthttp calls it once the
// body is sent, or the client went away).
func (v *valueStream) Close() error {
	if v.resp != nil {
		_ = v.resp.CloseBodyStream()
		fasthttp.ReleaseResponse(v.resp)
		v.resp = nil
	}
	return nil
}

// appendETag renders a kvdb ETag (the quoted 16-digit hex xxHash).
func appendETag(dst []byte, sum uint64) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 60; i >= 0; i -= 4 {
		dst = append(dst, hexDigits[(sum>>uint(i))&15])
	}
	return append(dst, '"')
}
