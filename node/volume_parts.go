package node

// The volume's side of a multipart value (see multipart.go): GET
// /_kvdb/parts/KEY?v=VER, the URL of the master's 302 for such a value,
// streams its parts in order. The volume asks the master for the manifest
// (the parts and which live volumes hold each), then sends each part from
// its own disk by sendfile when it holds a copy, or from another volume's,
// passing the bytes through. Range requests may span part boundaries. No
// part is held in memory: one part at a time is open, and bytes go
// through fasthttp's buffers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// maxPlanSize bounds the manifest a volume reads from the master (10,000
// parts with a few replica addresses each).
const maxPlanSize = 16 << 20

// serveParts answers GET (and HEAD) of /_kvdb/parts/KEY?v=VER (raw is the
// path after "parts").
func (v *Volume) serveParts(ctx *fasthttp.RequestCtx, raw []byte) {
	key, ver, ok := keyVersionArgs(ctx, raw)
	if !ok {
		return
	}
	plan, st, err := v.fetchPlan(key, ver)
	if err != nil {
		replyText(ctx, st, err.Error())
		return
	}
	h := &ctx.Response.Header
	h.Set("ETag", plan.ETag)
	mtime := versionTime(ver)
	h.SetBytesV("Last-Modified", appendLastModified(nil, mtime))
	h.Set("Accept-Ranges", "bytes")
	h.SetContentType("application/octet-stream")
	if plan.Meta != nil {
		setMetaHeaders(h, plan.Meta)
	}
	start, length := int64(0), plan.Size
	if rh := ctx.Request.Header.Peek("Range"); len(rh) > 0 && ifRangeMatches(ctx, []byte(plan.ETag), mtime) {
		s, e, err := parseRange(rh, plan.Size)
		switch {
		case errors.Is(err, errRangeUnsatisfiable):
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(plan.Size, 10))
			replyText(ctx, fasthttp.StatusRequestedRangeNotSatisfiable, "range not satisfiable")
			return
		case err == nil:
			start, length = s, e-s+1
			h.SetContentRange(int(s), int(e), int(plan.Size))
			ctx.SetStatusCode(fasthttp.StatusPartialContent)
		}
	}
	if ctx.IsHead() || length == 0 {
		ctx.Response.SkipBody = ctx.IsHead()
		h.SetContentLength(int(length))
		return
	}
	ctx.SetBodyStream(v.newPartsStream(plan, start, length), int(length))
}

// newPartsStream streams length bytes of plan's value from offset start.
func (v *Volume) newPartsStream(plan *partsPlan, start, length int64) *partsStream {
	ps := &partsStream{v: v, parts: plan.Parts, left: length}
	// Skip the parts before the range.
	for ps.i < len(ps.parts) && start >= ps.parts[ps.i].Size {
		start -= ps.parts[ps.i].Size
		ps.i++
	}
	ps.skip = start
	return ps
}

// OpenParts streams length bytes from offset start of version ver of the
// multipart value key, as GET /_kvdb/parts/KEY does: an S3 gateway beside
// the volume (s3.Config.Local) sends it, the parts this volume holds by
// sendfile, the others from their volumes.
func (v *Volume) OpenParts(key []byte, ver uint64, start, length int64) (io.ReadCloser, error) {
	plan, _, err := v.fetchPlan(key, ver)
	if err != nil {
		return nil, err
	}
	if start < 0 || length < 0 || start+length > plan.Size {
		return nil, fmt.Errorf("bytes %d to %d of a %d-byte value", start, start+length, plan.Size)
	}
	return v.newPartsStream(plan, start, length), nil
}

// fetchPlan asks the master for the parts of version ver of key. On error
// it returns the status to answer.
func (v *Volume) fetchPlan(key []byte, ver uint64) (*partsPlan, int, error) {
	master, ok := v.MasterAddr()
	if !ok {
		return nil, fasthttp.StatusServiceUnavailable, errors.New("no master known to this volume")
	}
	b := make([]byte, 0, 64+3*len(key))
	b = append(b, "http://"...)
	b = append(b, master...)
	b = append(b, "/"+ReservedPrefix+"manifest/"...)
	b = AppendEscapedKey(b, key)
	b = append(b, "?v="...)
	b = appendVersion(b, ver)
	uri := string(b)
	for hop := 0; hop < 4; hop++ {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI(v.sec.signURL("GET", uri))
		req.URI().DisablePathNormalizing = true
		err := v.client.DoTimeout(req, resp, 30*time.Second)
		fasthttp.ReleaseRequest(req)
		if err != nil {
			fasthttp.ReleaseResponse(resp)
			return nil, fasthttp.StatusServiceUnavailable, fmt.Errorf("asking the master for the parts: %v", err)
		}
		st := resp.StatusCode()
		switch {
		case st == fasthttp.StatusTemporaryRedirect || st == fasthttp.StatusFound:
			// Another master leads: ask it (signed for it).
			loc := string(resp.Header.Peek("Location"))
			fasthttp.ReleaseResponse(resp)
			if i := strings.Index(loc, "&e="); i >= 0 {
				loc = loc[:i]
			}
			if loc == "" {
				return nil, fasthttp.StatusServiceUnavailable, errors.New("the master redirected nowhere")
			}
			uri = loc
			continue
		case st != fasthttp.StatusOK:
			msg := strings.TrimSpace(string(resp.Body()))
			fasthttp.ReleaseResponse(resp)
			if st == fasthttp.StatusNotFound {
				return nil, st, errors.New("the key holds another value now")
			}
			return nil, fasthttp.StatusServiceUnavailable, fmt.Errorf("the master answered %d: %s", st, msg)
		}
		body := resp.Body()
		if len(body) > maxPlanSize {
			fasthttp.ReleaseResponse(resp)
			return nil, fasthttp.StatusInternalServerError, errors.New("manifest too large")
		}
		var plan partsPlan
		err = json.Unmarshal(body, &plan)
		fasthttp.ReleaseResponse(resp)
		if err != nil {
			return nil, fasthttp.StatusInternalServerError, fmt.Errorf("the master's manifest: %v", err)
		}
		var total int64
		for _, p := range plan.Parts {
			total += p.Size
		}
		if total != plan.Size || plan.Size < 0 {
			return nil, fasthttp.StatusInternalServerError, errors.New("the master's manifest does not add up")
		}
		return &plan, 0, nil
	}
	return nil, fasthttp.StatusServiceUnavailable, errors.New("too many redirects between masters")
}

// partsStream is the body of a multipart value's answer: the parts from
// parts[i] (from byte skip of it) on, left bytes in all. fasthttp calls
// WriteTo, which sends local parts by sendfile; Read serves any other
// caller.
type partsStream struct {
	v     *Volume
	parts []planPart
	i     int
	skip  int64
	left  int64
	// The open segment: cur holds curN more bytes of the value.
	cur     io.Reader
	curN    int64
	closeFn func()
	// remote is the volume cur reads from ("" for a local file); failed
	// are the volumes that failed the current part.
	remote string
	failed []string
	buf    []byte
}

// writerOnly hides a writer's ReadFrom.
type writerOnly struct{ io.Writer }

// open opens the segment of parts[i] the stream needs next.
func (p *partsStream) open() error {
	if p.i >= len(p.parts) {
		return io.ErrUnexpectedEOF
	}
	part := p.parts[p.i]
	n := min(part.Size-p.skip, p.left)
	key := []byte(part.Key)
	if f, _, err := p.v.store.OpenBlob(key, part.Version); err == nil && len(p.failed) == 0 {
		if p.skip > 0 {
			if _, err := f.Seek(p.skip, io.SeekCurrent); err != nil {
				f.Close()
				return fmt.Errorf("seek %q: %w", key, err)
			}
		}
		p.cur, p.curN, p.remote, p.closeFn = f, n, "", func() { f.Close() }
		return nil
	}
	var last error = errors.New("no live volume holds it")
	for _, addr := range part.Vols {
		if addr == p.v.httpAddr || contains(p.failed, addr) {
			continue
		}
		resp, err := p.v.readRemote(addr, key, part.Version, p.skip, n, part.Size)
		if err != nil {
			last = err
			continue
		}
		p.cur, p.curN, p.remote = resp.BodyStream(), n, addr
		p.closeFn = func() {
			_ = resp.CloseBodyStream()
			fasthttp.ReleaseResponse(resp)
		}
		return nil
	}
	return fmt.Errorf("part %q: %w", key, last)
}

// readRemote starts reading n bytes from offset off of version ver of
// key (size bytes in all) from the volume at addr.
func (v *Volume) readRemote(addr string, key []byte, ver uint64, off, n, size int64) (*fasthttp.Response, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	u := appendBlobURL(make([]byte, 0, 64+3*len(key)), addr, key, ver)
	if v.sec != nil {
		u = v.sec.appendReadSig(u, key, ver, time.Now().Add(time.Minute).Unix())
	}
	req.SetRequestURIBytes(u)
	req.URI().DisablePathNormalizing = true
	partial := off > 0 || n < size
	if partial {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
	}
	resp := fasthttp.AcquireResponse()
	resp.StreamBody = true
	if err := v.client.Do(req, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		return nil, err
	}
	if st := resp.StatusCode(); !(st == fasthttp.StatusOK && !partial || st == fasthttp.StatusPartialContent && partial) {
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		return nil, fmt.Errorf("volume %s answered %d", addr, st)
	}
	return resp, nil
}

func (p *partsStream) closeSegment() {
	if p.closeFn != nil {
		p.closeFn()
	}
	p.cur, p.curN, p.closeFn = nil, 0, nil
}

// WriteTo sends the rest of the stream to w. Through fasthttp's writer
// (an io.ReaderFrom) a local part goes by sendfile.
func (p *partsStream) WriteTo(w io.Writer) (int64, error) {
	rf, _ := w.(io.ReaderFrom)
	var total int64
	for p.left > 0 {
		if p.cur == nil {
			if err := p.open(); err != nil {
				p.v.log.Warn("streaming a multipart value", "err", err)
				return total, err
			}
		}
		want := p.curN
		lr := &io.LimitedReader{R: p.cur, N: want}
		var n int64
		var err error
		switch {
		case p.remote != "":
			// Written, not read into w: a bufio.Writer's ReadFrom keeps a
			// read error as its own, and the stream could not go on from
			// another replica.
			if p.buf == nil {
				p.buf = make([]byte, 64<<10)
			}
			n, err = io.CopyBuffer(writerOnly{w}, lr, p.buf)
		case rf != nil:
			n, err = rf.ReadFrom(lr) // sendfile
		default:
			n, err = io.Copy(w, lr)
		}
		total += n
		p.left -= n
		remote := p.remote
		p.closeSegment()
		if err == nil && n != want {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && remote != "" && !clientGone(w) {
			// The volume the part came from failed mid-way: go on from
			// the same byte on another replica.
			p.v.log.Warn("a volume failed while its part streamed; trying another", "part", p.parts[p.i].Key, "volume", remote, "err", err)
			p.failed = append(p.failed, remote)
			p.skip += n
			continue
		}
		if err != nil {
			p.v.log.Warn("streaming a multipart value", "part", p.parts[p.i].Key, "err", err)
			return total, err
		}
		p.i++
		p.skip, p.failed = 0, nil
	}
	return total, nil
}

// clientGone reports whether writing to the client has failed (then
// there is no one to go on for): fasthttp's buffered writer keeps its
// error, and an empty write returns it.
func clientGone(w io.Writer) bool {
	_, err := w.Write(nil)
	return err != nil
}

// Read reads the stream (WriteTo is the fast way).
func (p *partsStream) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if p.cur == nil {
		if err := p.open(); err != nil {
			return 0, err
		}
	}
	if int64(len(b)) > p.curN {
		b = b[:p.curN]
	}
	n, err := p.cur.Read(b)
	p.curN -= int64(n)
	p.left -= int64(n)
	if p.curN == 0 {
		p.closeSegment()
		p.i++
		p.skip = 0
		return n, nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close releases the open segment (fasthttp calls it when the answer is
// sent or cut).
func (p *partsStream) Close() error {
	p.closeSegment()
	return nil
}

// Keys is the number of values (versions of keys) the volume holds.
func (v *Volume) Keys() int { return int(v.store.Stats().Keys) }
