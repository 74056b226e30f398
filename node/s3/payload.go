package s3

// Request bodies. A PutObject body goes to the master as it arrives, so
// every check on it (the signed SHA-256, chunk signatures, trailer and
// header checksums, Content-MD5, the decoded length) can only be decided
// at its end, when the master already has all the bytes but the last: the
// readers here hold the last byte back until the checks pass. A failing
// check makes Read return an error instead; the upload to the master is
// then cut one byte short, the master answers 400 and commits nothing
// (kvdb's "nothing is left half-written"), and the client gets the S3
// error. Nothing is buffered beyond one fixed buffer per request.

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// guardBufSize is the buffer a guard reads through.
const guardBufSize = 64 << 10

// guard passes src through while observe sees every byte, but keeps the
// last byte back until src has ended and check has passed: whoever reads
// it sees the whole stream only if it is good, and an error otherwise.
type guard struct {
	src     io.Reader
	observe func([]byte) error // may be nil
	check   func() error       // at the end of src; may be nil
	buf     []byte
	// alt, when set, is a second buffer the fills alternate with, so that
	// the bytes observe saw stay untouched through the next fill: an
	// observer may go on reading them on another goroutine until its
	// next call (body hashes this way).
	alt  []byte
	swap bool // the last fill was observed: the next goes to alt
	off  int
	end  int
	held bool // buf[0] is a byte kept back from the last fill
	done bool
	err  error
}

func newGuard(src io.Reader, observe func([]byte) error, check func() error) *guard {
	return &guard{src: src, observe: observe, check: check, buf: make([]byte, guardBufSize)}
}

func (g *guard) Read(p []byte) (int, error) {
	for {
		if g.off < g.end {
			n := copy(p, g.buf[g.off:g.end])
			g.off += n
			return n, nil
		}
		if g.done {
			return 0, io.EOF
		}
		if g.err != nil {
			return 0, g.err
		}
		start := 0
		prev := g.buf
		if g.alt != nil && g.swap {
			g.buf, g.alt = g.alt, g.buf
		}
		g.swap = false
		if g.held {
			// The byte kept back goes first, at buf[0].
			g.buf[0] = prev[g.end]
			start = 1
			g.held = false
		}
		n, err := g.src.Read(g.buf[start:])
		if n > 0 && g.observe != nil {
			g.swap = true
			if oerr := g.observe(g.buf[start : start+n]); oerr != nil {
				g.err = oerr
				return 0, oerr
			}
		}
		total := start + n
		switch {
		case err == io.EOF:
			if g.check != nil {
				if cerr := g.check(); cerr != nil {
					g.err = cerr
					return 0, cerr
				}
			}
			g.done = true
			g.off, g.end = 0, total
		case err != nil:
			g.err = err
			return 0, err
		case total > 0:
			// Keep the last byte back; it moves to buf[0] at the next fill.
			g.off, g.end = 0, total-1
			g.held = true
		}
	}
}

// body is a PutObject (or DeleteObjects, CreateBucket) body with its
// checks. aerr is the S3 error of the first check that failed.
type body struct {
	*guard
	want int64 // decoded length; -1 unknown
	max  int64
	n    int64
	md5  hash.Hash
	// sha is the SHA-256 of a signed payload, to match shaWant.
	sha     hash.Hash
	shaWant []byte
	// contentMD5 is the Content-MD5 header's digest.
	contentMD5 []byte
	// sum is the x-amz-checksum-ALGO header's algorithm, to match sumWant.
	sumAlgo string
	sum     hash.Hash
	sumWant []byte
	// trailer: the checksum an aws-chunked trailer announces
	// (x-amz-trailer).
	trailerAlgo string
	trailerSum  hash.Hash
	chunked     *chunkedReader
	aerr        *apiError
	// hashed is closed when the hashes have taken the bytes of the last
	// fill (nil: no hashing under way). The hashes (MD5 above all, about
	// 1.4 s of CPU per GiB, and SHA-256 for a signed payload) run on a
	// goroutine of their own, one fill behind the stream, so that they
	// overlap with the reads and writes of the bytes instead of adding
	// to them; the guard's second buffer keeps those bytes intact
	// meanwhile.
	hashed chan struct{}
}

// md5Hex is the body's MD5 in hex, once it has been read.
func (b *body) md5Hex() string {
	b.hashWait()
	return hex.EncodeToString(b.md5.Sum(nil))
}

// hashWait waits for the hashing of the last fill.
func (b *body) hashWait() {
	if b.hashed != nil {
		<-b.hashed
		b.hashed = nil
	}
}

// hash feeds p to every hash the body keeps.
func (b *body) hash(p []byte) {
	b.md5.Write(p)
	if b.sha != nil {
		b.sha.Write(p)
	}
	if b.sum != nil {
		b.sum.Write(p)
	}
	if b.trailerSum != nil {
		b.trailerSum.Write(p)
	}
}

// failure is the S3 error the body failed with (nil if none).
func (b *body) failure() *apiError { return b.aerr }

// checkedAlgo is the x-amz-checksum algorithm checked, "" if none.
func (b *body) checkedAlgo() (string, string) {
	b.hashWait()
	switch {
	case b.sum != nil:
		return b.sumAlgo, base64.StdEncoding.EncodeToString(b.sumWant)
	case b.trailerSum != nil:
		return b.trailerAlgo, base64.StdEncoding.EncodeToString(b.trailerSum.Sum(nil))
	}
	return "", ""
}

// newBody sets up the reading and checking of the request's body for id.
func (s *Server) newBody(ctx *fasthttp.RequestCtx, id *identity) (*body, *apiError) {
	h := &ctx.Request.Header
	b := &body{want: -1, max: s.cfg.MaxObjectSize, md5: md5.New()}
	var src io.Reader = ctx.RequestBodyStream()
	cl := h.ContentLength()
	if strings.HasPrefix(id.payload, "STREAMING-") {
		dl, err := strconv.ParseInt(string(h.Peek("X-Amz-Decoded-Content-Length")), 10, 64)
		if err != nil || dl < 0 {
			return nil, errMissingLength
		}
		b.want = dl
		c := &chunkedReader{
			br:      bufio.NewReaderSize(src, 16<<10),
			signed:  id.payload != streamingUnsignedTrailer,
			trailer: id.payload != streamingSigned,
		}
		if c.signed && id.key != nil {
			c.key, c.amzDate, c.scope, c.prev = id.key, id.amzDate, id.scope, id.seed
			c.h = sha256.New()
		}
		if t := strings.TrimSpace(string(h.Peek("X-Amz-Trailer"))); t != "" {
			algo := checksumHeaderAlgo(t)
			if algo == "" || !c.trailer {
				return nil, errorf(fasthttp.StatusBadRequest, "InvalidRequest", "x-amz-trailer %q is not a supported checksum for this payload", t)
			}
			b.trailerAlgo, b.trailerSum = algo, checksumAlgos[algo]()
		}
		src = c
		b.chunked = c
	} else {
		switch {
		case cl >= 0:
			b.want = int64(cl)
		case cl == -2: // no body at all
			b.want = 0
		}
		if b.want == 0 {
			src = bytes.NewReader(nil)
		}
		if len(id.payload) == 64 {
			b.sha = sha256.New()
			b.shaWant, _ = hex.DecodeString(id.payload)
		}
	}
	if b.want > b.max {
		return nil, errTooLarge
	}
	if v := h.Peek("Content-Md5"); len(v) > 0 {
		d, err := base64.StdEncoding.DecodeString(string(v))
		if err != nil || len(d) != md5.Size {
			return nil, errInvalidDigest
		}
		b.contentMD5 = d
	}
	var bad *apiError
	h.VisitAll(func(k, v []byte) {
		algo := checksumHeaderAlgo(string(k))
		if algo == "" || bad != nil {
			return
		}
		d, err := base64.StdEncoding.DecodeString(string(v))
		size := checksumAlgos[algo]().Size()
		switch {
		case b.sum != nil:
			bad = newError(fasthttp.StatusBadRequest, "InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
		case err != nil || len(d) != size:
			bad = errorf(fasthttp.StatusBadRequest, "InvalidRequest", "Value for x-amz-checksum-%s header is invalid.", algo)
		default:
			b.sumAlgo, b.sum, b.sumWant = algo, checksumAlgos[algo](), d
		}
	})
	if bad != nil {
		return nil, bad
	}
	b.guard = newGuard(src, b.observe, b.finish)
	b.guard.alt = make([]byte, guardBufSize)
	return b, nil
}

// fail records the first S3 error and returns it as the read error.
func (b *body) fail(e *apiError) error {
	if b.aerr == nil {
		b.aerr = e
	}
	return b.aerr
}

func (b *body) observe(p []byte) error {
	b.n += int64(len(p))
	if b.n > b.max {
		return b.fail(errTooLarge)
	}
	if b.want >= 0 && b.n > b.want {
		return b.fail(errorf(fasthttp.StatusBadRequest, "IncompleteBody", "The body holds more than the %d bytes announced", b.want))
	}
	b.hashWait()
	if len(p) < asyncHashMin {
		b.hash(p)
		return nil
	}
	done := make(chan struct{})
	b.hashed = done
	go func() {
		b.hash(p)
		close(done)
	}()
	return nil
}

// asyncHashMin is the smallest fill hashed on a goroutine of its own:
// below it a goroutine costs more than it saves.
const asyncHashMin = 16 << 10

// Read reads the checked body; errors from below become S3 errors.
func (b *body) Read(p []byte) (int, error) {
	n, err := b.guard.Read(p)
	if err != nil && err != io.EOF && b.aerr == nil {
		var ae *apiError
		if errors.As(err, &ae) {
			b.aerr = ae
		} else {
			b.aerr = errIncompleteBody
		}
	}
	return n, err
}

func (b *body) finish() error {
	b.hashWait()
	if b.want >= 0 && b.n != b.want {
		return b.fail(errIncompleteBody)
	}
	if b.trailerSum != nil {
		got := b.trailerSum.Sum(nil)
		v, ok := b.chunked.trailers["x-amz-checksum-"+b.trailerAlgo]
		if !ok {
			return b.fail(errorf(fasthttp.StatusBadRequest, "InvalidRequest", "The x-amz-checksum-%s trailer was announced but not sent", b.trailerAlgo))
		}
		if want, err := base64.StdEncoding.DecodeString(v); err != nil || !bytes.Equal(want, got) {
			return b.fail(errorf(fasthttp.StatusBadRequest, "BadDigest", "The %s you specified did not match the calculated checksum.", strings.ToUpper(b.trailerAlgo)))
		}
	}
	if b.sha != nil && !bytes.Equal(b.sha.Sum(nil), b.shaWant) {
		return b.fail(errSHA256Mismatch)
	}
	if b.contentMD5 != nil && !bytes.Equal(b.md5.Sum(nil), b.contentMD5) {
		return b.fail(errBadDigest)
	}
	if b.sum != nil && !bytes.Equal(b.sum.Sum(nil), b.sumWant) {
		return b.fail(errorf(fasthttp.StatusBadRequest, "BadDigest", "The %s you specified did not match the calculated checksum.", strings.ToUpper(b.sumAlgo)))
	}
	return nil
}

// chunkedReader decodes an aws-chunked body: chunks "SIZE-HEX[;chunk-
// signature=SIG]\r\nDATA\r\n", a last chunk of size 0, then for the TRAILER
// modes trailer lines "name:value\r\n" and an empty line. With a key, each
// chunk's signature is checked against the chain that starts at the
// request's seed signature, and a signed trailer's x-amz-trailer-signature
// as well (sigv4-streaming and sigv4-streaming-trailers in AWS's docs).
type chunkedReader struct {
	br      *bufio.Reader
	signed  bool // chunks carry signatures
	trailer bool // trailers follow the last chunk
	// key, amzDate, scope: Signature V4 (nil key: signatures are not
	// checked); prev is the last signature of the chain.
	key     []byte
	amzDate string
	scope   string
	prev    string
	h       hash.Hash // SHA-256 of the current chunk
	sig     string    // the current chunk's signature
	left    int64
	inChunk bool
	done    bool
	// trailers are the trailer values by lower-case name.
	trailers map[string]string
}

const maxChunkLine = 4096

var (
	errChunkFormat  = newError(fasthttp.StatusBadRequest, "IncompleteBody", "The aws-chunked body is malformed")
	errChunkSigning = newError(fasthttp.StatusForbidden, "SignatureDoesNotMatch", "The chunk signature we calculated does not match the signature you provided.")
)

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	for c.left == 0 {
		if c.inChunk {
			if err := c.crlf(); err != nil {
				return 0, err
			}
			if err := c.verifyChunk(); err != nil {
				return 0, err
			}
			c.inChunk = false
		}
		size, err := c.header()
		if err != nil {
			return 0, err
		}
		if size == 0 {
			if err := c.verifyChunk(); err != nil {
				return 0, err
			}
			if err := c.readTrailers(); err != nil {
				return 0, err
			}
			c.done = true
			return 0, io.EOF
		}
		c.left, c.inChunk = size, true
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	if n > 0 {
		c.left -= int64(n)
		if c.h != nil {
			c.h.Write(p[:n])
		}
	}
	if err == io.EOF {
		err = errIncompleteBody
	}
	return n, err
}

// line reads one line without its CRLF (or bare LF).
func (c *chunkedReader) line() (string, error) {
	b, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxChunkLine {
			return "", errChunkFormat
		}
		return "", errIncompleteBody
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func (c *chunkedReader) crlf() error {
	l, err := c.line()
	if err != nil {
		return err
	}
	if l != "" {
		return errChunkFormat
	}
	return nil
}

// header reads a chunk header and returns the chunk's size.
func (c *chunkedReader) header() (int64, error) {
	l, err := c.line()
	if err != nil {
		return 0, err
	}
	sizeHex, ext, _ := strings.Cut(l, ";")
	size, err := strconv.ParseInt(strings.TrimSpace(sizeHex), 16, 64)
	if err != nil || size < 0 {
		return 0, errChunkFormat
	}
	c.sig = ""
	if sig, ok := strings.CutPrefix(strings.TrimSpace(ext), "chunk-signature="); ok {
		c.sig = sig
	}
	if c.signed && c.sig == "" {
		return 0, errChunkFormat
	}
	if c.h != nil {
		c.h.Reset()
	}
	return size, nil
}

// verifyChunk checks the signature of the chunk just read (its data hashed
// in c.h) and moves the chain on.
func (c *chunkedReader) verifyChunk() error {
	if c.key == nil {
		return nil
	}
	sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + c.amzDate + "\n" + c.scope + "\n" + c.prev + "\n" + emptySHA256 + "\n" + hex.EncodeToString(c.h.Sum(nil))
	want := hex.EncodeToString(hmacSHA256(c.key, sts))
	if !hmac.Equal([]byte(want), []byte(c.sig)) {
		return errChunkSigning
	}
	c.prev = c.sig
	return nil
}

// readTrailers reads what follows the last chunk: nothing but an empty
// line, or trailer lines and an empty line (a client that ends the body
// right after the trailers is forgiven the empty line).
func (c *chunkedReader) readTrailers() error {
	c.trailers = map[string]string{}
	var signed strings.Builder
	var trailerSig string
	for n := 0; ; n++ {
		l, err := c.line()
		if err != nil {
			if errors.Is(err, errIncompleteBody) && n > 0 && c.trailer {
				break
			}
			if errors.Is(err, errIncompleteBody) && n == 0 && c.trailer {
				break // "0\r\n" then the end, without trailers
			}
			return err
		}
		if l == "" {
			break
		}
		if n > 16 {
			return errChunkFormat
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || !c.trailer {
			return errChunkFormat
		}
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if name == "x-amz-trailer-signature" {
			trailerSig = value
			continue
		}
		c.trailers[name] = value
		signed.WriteString(name + ":" + value + "\n")
	}
	if c.key != nil && c.trailer {
		sum := sha256.Sum256([]byte(signed.String()))
		sts := "AWS4-HMAC-SHA256-TRAILER\n" + c.amzDate + "\n" + c.scope + "\n" + c.prev + "\n" + hex.EncodeToString(sum[:])
		want := hex.EncodeToString(hmacSHA256(c.key, sts))
		if !hmac.Equal([]byte(want), []byte(trailerSig)) {
			return errChunkSigning
		}
	}
	return nil
}
