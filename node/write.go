package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/kvdb/kvdb/node/client"
	"github.com/valyala/fasthttp"
)

// writePlan is what admitWrite decided for a write.
type writePlan struct {
	view       *clusterView
	createOnly bool // POST: 409 when the key exists
	// cond are the request's preconditions (If-Match, If-None-Match: *
	// and so on: 412 when they fail), when conditional.
	cond        conditions
	conditional bool
	candidates  []string
}

// refusal is the status (0: none) and reason a write gets when the key's
// current state is found and cur.
func (p *writePlan) refusal(found bool, cur *Record) (int, string) {
	if found && p.createOnly {
		return fasthttp.StatusConflict, "key already exists"
	}
	if !p.conditional {
		return 0, ""
	}
	var b [24]byte
	var tag []byte
	var mtime time.Time
	if found {
		tag, mtime = cur.appendTag(b[:0]), cur.ModTime
	}
	if st := p.cond.check(false, found, tag, mtime); st != 0 {
		if found && len(p.cond.ifNoneMatch) > 0 {
			return st, "key already exists (If-None-Match)"
		}
		return st, conditionReason(st)
	}
	return 0, ""
}

// admitWrite checks, from the headers alone, whether a write of size bytes
// (-1: unknown) to key can go ahead, and picks the volumes to try. A
// refusal is a status and a one-line reason. It runs before any byte of the
// body is read, and for Expect: 100-continue before the client sends one.
func (m *Master) admitWrite(ctx *fasthttp.RequestCtx, key []byte, size int64) (writePlan, int, string) {
	var p writePlan
	h := &ctx.Request.Header
	if size > m.cfg.MaxValueSize {
		return p, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("value of %d bytes is over the maximum of %d", size, m.cfg.MaxValueSize)
	}
	p.createOnly = ctx.IsPost()
	p.cond, p.conditional = readConditions(h)
	if p.createOnly || p.conditional {
		// Refused early when it would be refused at commit anyway (the
		// commit checks again, under the key lock).
		var rec Record
		found, err := m.cat.get(key, &rec)
		if err != nil {
			return p, statusOf(err), err.Error()
		}
		if st, msg := p.refusal(found, &rec); st != 0 {
			return p, st, msg
		}
	}
	var st int
	var msg string
	p.view, p.candidates, st, msg = m.placeWrite(key, size)
	return p, st, msg
}

// placeWrite picks the volumes to try for a write of size bytes (-1:
// unknown) to key, in the current view, in order; a refusal is a status
// and a one-line reason.
func (m *Master) placeWrite(key []byte, size int64) (*clusterView, []string, int, string) {
	view := m.view.Load()
	n := m.cfg.Replicas
	if len(view.vols) < n {
		return view, nil, fasthttp.StatusServiceUnavailable, fmt.Sprintf("%d live volumes, %d replicas needed", len(view.vols), n)
	}
	candidates := make([]string, 0, len(view.vols))
	order := view.ring.Order(key)
	if len(order) < n {
		// Too few volumes outside those draining: draining ones may still
		// take the value (rebalance moves it off once there is room).
		order = append(slices.Clone(order), view.draining...)
	}
	for _, name := range m.reachableFirst(order) {
		if vol := view.vols[name]; size < 0 || vol.Total == 0 || vol.Free >= size {
			candidates = append(candidates, name)
		}
	}
	if len(candidates) < n {
		return view, nil, fasthttp.StatusInsufficientStorage, fmt.Sprintf("only %d volumes have room for %d bytes, %d replicas needed", len(candidates), size, n)
	}
	return view, candidates, 0, ""
}

// expect answers Expect: 100-continue on the write of a value or of a
// multipart part (PUT /_kvdb/s3/mp/BUCKET/KEY?id=&part=N): a write the
// master would refuse gets its final status before the client sends the
// body (fasthttp sends it with no body and closes the connection), and one
// it admits is sent to a volume (307, redirectWrite) unless redirects are
// off or no volume can coordinate it. Anything else is read and handled
// as usual.
func (m *Master) expect(ctx *fasthttp.RequestCtx) int {
	if !ctx.IsPut() && !ctx.IsPost() {
		return fasthttp.StatusContinue
	}
	path := ctx.URI().PathOriginal()
	part := isPartWrite(ctx, path)
	if bytes.HasPrefix(path, []byte("/"+ReservedPrefix)) && !part {
		return fasthttp.StatusContinue
	}
	if !m.leads() {
		// A follower sends the writer to the leader before the body.
		return m.followerExpect(ctx)
	}
	if st, _ := m.authStatus(ctx, path); st != 0 {
		return st
	}
	if part {
		return m.expectPart(ctx, path) // multipart.go
	}
	if len(ctx.URI().QueryString()) > 0 {
		return fasthttp.StatusBadRequest
	}
	key, err := ParseKey(nil, path)
	if err != nil {
		return statusOf(err)
	}
	size := bodySize(&ctx.Request.Header)
	plan, st, msg := m.admitWrite(ctx, key, size)
	if st != 0 {
		ctx.Response.SetBodyString(msg + "\n")
		return st
	}
	if m.cfg.DisableWriteRedirect {
		return fasthttp.StatusContinue
	}
	return m.redirectWrite(ctx, key, &plan, size, nil)
}

// handleWrite stores a value: PUT creates or replaces, POST (or PUT with
// If-None-Match: *) only creates.
func (m *Master) handleWrite(ctx *fasthttp.RequestCtx, key []byte) { m.writeValue(ctx, key, nil) }

// writeValue stores the request's body as key's value; check, if not nil,
// runs under the key lock at the commit and may refuse it (the parts of a
// multipart upload are written this way: the upload must still be open).
func (m *Master) writeValue(ctx *fasthttp.RequestCtx, key []byte, check func() error) {
	size := bodySize(&ctx.Request.Header)
	plan, refused, msg := m.admitWrite(ctx, key, size)
	if refused != 0 {
		replyText(ctx, refused, msg)
		return
	}
	candidates := plan.candidates
	view, n := plan.view, m.cfg.Replicas
	var rec Record

	version, err := m.cat.nextVersion()
	if err != nil {
		replyError(ctx, err)
		return
	}
	var body io.Reader = ctx.RequestBodyStream()
	if size == 0 {
		body = bytes.NewReader(nil)
	}
	lim := &limitedBody{r: body, max: m.cfg.MaxValueSize}
	ok, tried, err := m.replicate(view, key, version, size, lim, candidates, n)
	if err != nil {
		m.abandonWrite(view, key, version, tried)
		switch {
		case lim.over:
			replyText(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("value is over the maximum of %d bytes", m.cfg.MaxValueSize))
		default:
			replyError(ctx, err)
		}
		return
	}

	rec = Record{Version: version, Size: ok[0].size, Checksum: ok[0].checksum, ModTime: versionTime(version)}
	for _, r := range ok {
		rec.Replicas = append(rec.Replicas, r.vol)
	}
	replaced, err := m.commitWrite(key, &rec, tried, &plan, check)
	if err != nil {
		m.abandonWrite(view, key, version, tried)
		replyError(ctx, err)
		return
	}
	replyWritten(ctx, key, &rec, replaced)
}

// commitWrite makes rec (written to the volumes in tried) the key's value,
// if the write's conditions (plan) still hold and it was not overtaken; see
// catalog.commitWrite. check, if not nil, runs first under the key lock (a
// redirected write's ticket must still be there). The replaced version
// stays readable for MoveGrace. On error nothing changed; the caller
// abandons the write.
func (m *Master) commitWrite(key []byte, rec *Record, tried []string, plan *writePlan, check func() error) (replaced bool, err error) {
	replaced, err = m.cat.commitWrite(key, rec, tried, func(found bool, old *Record) error {
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		if st, msg := plan.refusal(found, old); st != 0 {
			return withStatus(st, errors.New(msg))
		}
		return nil
	}, func(old *Record) func() {
		// Readers redirected to the old version a moment ago still find
		// it for MoveGrace: held before its deletion is queued.
		m.holdGarbage(old.Replicas, key, old.Version)
		return func() { m.releaseGarbage(old.Replicas, key, old.Version) }
	})
	return replaced, err
}

// replyWritten answers a committed write: 201 for a new key, 200 for a
// replaced value, with the ETag and the write reply.
func replyWritten(ctx *fasthttp.RequestCtx, key []byte, rec *Record, replaced bool) {
	status := fasthttp.StatusCreated
	if replaced {
		status = fasthttp.StatusOK
	}
	ctx.Response.Header.Set("ETag", rec.ETag())
	b, _ := json.Marshal(client.WriteReply{ETag: rec.ETag(), Key: string(key), Size: rec.Size})
	replyJSON(ctx, status, b)
}

// errSuperseded refuses a write that a concurrent write to the same key,
// started later, overtook: the stored value is newer, so this one cannot take
// effect. The client may retry (it then gets a new, larger version).
var errSuperseded = withStatus(fasthttp.StatusConflict, errors.New("a concurrent write to this key committed first; nothing was changed, retry to replace it"))

// limitedBody fails a body (of unknown length) once it passes max bytes.
type limitedBody struct {
	r    io.Reader
	max  int64
	n    int64
	over bool
}

func (l *limitedBody) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		l.over = true
		return n, withStatus(fasthttp.StatusRequestEntityTooLarge, errors.New("value over the maximum size"))
	}
	return n, err
}

// replicate streams body to the first n candidates in parallel, replacing
// those that fail from the others (see replicator). It returns the n
// successful replicas and every volume it wrote to (or tried to).
func (m *Master) replicate(view *clusterView, key []byte, version uint64, size int64, body io.Reader, candidates []string, n int) ([]putResult, []string, error) {
	targets, spares := candidates[:n], candidates[n:]
	var small []byte
	if size >= 0 && size <= smallWriteMax {
		small = make([]byte, size)
		if got, err := io.ReadFull(body, small); err != nil {
			return nil, nil, bodyError(err, int64(got), size)
		}
	}
	if err := m.cat.addPending(version, key, targets...); err != nil {
		return nil, nil, err
	}
	r := replicator{
		log: m.log,
		put: func(name string, body io.Reader) putResult {
			return m.vc.putBlob(view.vols[name], key, version, size, body)
		},
		copy: func(dst, src string) putResult {
			return m.vc.pull(view.vols[dst], view.vols[src], key, version)
		},
		intent: func(vol string) error { return m.cat.addPending(version, key, vol) },
	}
	if small != nil {
		return r.complete(key, m.putSmall(view, key, version, small, targets), slices.Clone(targets), spares)
	}
	return r.run(key, size, body, targets, spares)
}

// bodyError explains a failed read of the client's body.
func bodyError(err error, read, size int64) error {
	var es *errStatus
	if errors.As(err, &es) {
		return err
	}
	if size >= 0 && read < size {
		return withStatus(fasthttp.StatusBadRequest, fmt.Errorf("body ended after %d of %d bytes: %v", read, size, err))
	}
	return withStatus(fasthttp.StatusBadRequest, fmt.Errorf("reading body: %v", err))
}

// replicaError is the answer when too few replicas took a write: 507 when
// every volume that answered was out of space, 503 otherwise.
func replicaError(failed []putResult) error {
	full := len(failed) > 0
	var first error
	for _, r := range failed {
		if r.status != fasthttp.StatusInsufficientStorage {
			full = false
		}
		if first == nil {
			first = fmt.Errorf("volume %s: %w", r.vol, r.err)
		}
	}
	if first == nil {
		first = errors.New("no volume took the write")
	}
	if full {
		return withStatus(fasthttp.StatusInsufficientStorage, fmt.Errorf("every candidate volume is out of space (%v)", first))
	}
	return withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("not enough volumes took the write: %v", first))
}

// abandonWrite queues the blobs of a write that will not commit for
// deletion and deletes them now where it can.
func (m *Master) abandonWrite(view *clusterView, key []byte, version uint64, tried []string) {
	if len(tried) == 0 {
		return
	}
	if err := m.cat.abandon(version, key, tried); err != nil {
		m.log.Error("index", "err", err)
		return
	}
	go m.deleteBlobs(append([]byte(nil), key...), version, tried)
}
