package node

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/kvdb/kvdb/node/client"
	"github.com/valyala/fasthttp"
)

// lookup returns key's current record (shared: not to be modified).
func (m *Master) lookup(key []byte) (*Record, bool, error) { return m.cat.lookup(key) }

// handleRead answers GET and HEAD. The key stays in a stack buffer: the
// redirect of a cached key allocates nothing.
func (m *Master) handleRead(ctx *fasthttp.RequestCtx, path []byte) {
	var kb [256]byte
	key, err := ParseKey(kb[:0], path)
	if err != nil {
		replyError(ctx, err)
		return
	}
	rec, found, err := m.lookup(key)
	switch {
	case err != nil:
		replyError(ctx, err)
	case !found:
		replyText(ctx, fasthttp.StatusNotFound, "key not found")
	case m.readPreconditionFailed(ctx, rec):
	case ctx.IsGet():
		var tried []byte
		if len(ctx.URI().QueryString()) > 0 { // no parse (nor allocation) without one
			tried = ctx.QueryArgs().Peek("tried")
		}
		if len(tried) == 0 {
			m.redirect(ctx, key, rec, nil)
			return
		}
		back := sentBackCount(ctx)
		missing, _ := parseVersion(ctx.QueryArgs().Peek("missing"))
		if back >= maxSentBack && missing != rec.Version {
			// Each time, the version it was sent to was replaced or
			// deleted before it got there: the key changes faster than
			// this reader follows. It retries, rather than chasing on.
			ctx.Response.Header.Set("Retry-After", "1")
			replyText(ctx, fasthttp.StatusServiceUnavailable, "the key was replaced or deleted each time this read was redirected; retry")
			return
		}
		tried = m.sentBack(ctx, key, rec, tried)
		m.redirect(ctx, key, rec, tried)
		if loc := ctx.Response.Header.Peek("Location"); rec.Parts == 0 && len(loc) > 0 {
			// The volume counts one more when it sends the reader back.
			ctx.Response.Header.Set("Location", string(loc)+"&back="+strconv.Itoa(back))
		}
	default:
		m.headRecord(ctx, key, rec)
	}
}

// readPreconditionFailed evaluates a GET's or HEAD's preconditions against
// rec and, when they stop it, answers 304 or 412 and reports true.
func (m *Master) readPreconditionFailed(ctx *fasthttp.RequestCtx, rec *Record) bool {
	cond, any := readConditions(&ctx.Request.Header)
	if !any {
		return false
	}
	var b [64]byte
	tag := rec.appendTag(b[:0])
	st := cond.check(true, true, tag, rec.ModTime)
	if st == 0 {
		return false
	}
	h := &ctx.Response.Header
	h.SetBytesV("ETag", tag)
	h.SetBytesV("Last-Modified", appendLastModified(b[len(tag):len(tag)], rec.ModTime))
	if st == fasthttp.StatusNotModified {
		ctx.SetStatusCode(st)
		return true
	}
	replyText(ctx, st, conditionReason(st))
	return true
}

// sentBack handles a reader a volume sent back (GET /KEY?tried=VOL,...
// &missing=VER): the volumes it names did not hold the version they were
// asked for. When that is still the current version they lost their copy:
// it is checked and repaired at once (lostCopy), and the tried volumes are
// skipped. When the key has moved on to a newer version since, the reader
// simply gets a fresh answer. It returns the tried list that still applies.
func (m *Master) sentBack(ctx *fasthttp.RequestCtx, key []byte, rec *Record, tried []byte) []byte {
	missing, err := parseVersion(ctx.QueryArgs().Peek("missing"))
	if err != nil || missing != rec.Version || !validTried(tried) {
		return nil
	}
	for name := range bytes.SplitSeq(tried, []byte(",")) {
		if vol := string(name); contains(rec.Replicas, vol) {
			m.reportMissing(key, missing, vol)
		}
	}
	return tried
}

// reportMissing checks and repairs vol's lost copy of version of key in
// the background, a few at a time; more reports than that are left to the
// placement loop and verify.
func (m *Master) reportMissing(key []byte, version uint64, vol string) {
	select {
	case m.missingSem <- struct{}{}:
	default:
		return
	}
	k := bytes.Clone(key)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() { <-m.missingSem }()
		if _, err := m.lostCopy(k, version, vol); err != nil {
			m.log.Warn("checking a copy a reader did not find", "volume", vol, "key", string(k), "err", err)
		}
	}()
}

// maxSentBack is how many times a reader may come back from volumes that
// no longer held the version they were sent to, the key having moved on
// each time, before it is answered 503 (with Retry-After) instead of a
// new redirect: a client following redirects gives up after 10.
const maxSentBack = 3

// sentBackCount is the back= argument of a reader sent back by a volume:
// how many times volumes sent it back so far.
func sentBackCount(ctx *fasthttp.RequestCtx) int {
	n, err := strconv.Atoi(string(ctx.QueryArgs().Peek("back")))
	if err != nil || n < 0 {
		return 0
	}
	return min(n, maxTried)
}

// maxTried bounds the volumes a reader is sent on from (and so the hops of
// one read).
const maxTried = 16

// validTried reports whether tried is a short comma-separated list of volume
// names (it goes back into a URL).
func validTried(tried []byte) bool {
	if len(tried) > maxTried*64 || bytes.Count(tried, []byte(",")) >= maxTried {
		return false
	}
	for n := range bytes.SplitSeq(tried, []byte(",")) {
		if !nameRE.Match(n) {
			return false
		}
	}
	return true
}

// listed reports whether name is one of the comma-separated names in list.
func listed(list []byte, name string) bool {
	for n := range bytes.SplitSeq(list, []byte(",")) {
		if string(n) == name {
			return true
		}
	}
	return false
}

// redirect answers 302 to a live volume holding rec's version of key,
// other than those in tried (volumes that did not have it).
func (m *Master) redirect(ctx *fasthttp.RequestCtx, key []byte, rec *Record, tried []byte) {
	m.redirectNear(ctx, key, rec, tried, "")
}

// redirectNear is redirect with near, when it names a live replica that
// answers probes, as the volume chosen. It returns the name of the volume
// chosen ("" for a multipart value's or when none is live).
func (m *Master) redirectNear(ctx *fasthttp.RequestCtx, key []byte, rec *Record, tried []byte, near string) string {
	if rec.Parts > 0 {
		m.redirectParts(ctx, key, rec) // multipart.go
		return ""
	}
	view := m.view.Load()
	bad := *m.unreachable.Load()
	if near != "" && !bad[near] && contains(rec.Replicas, near) {
		if vol, ok := view.vols[near]; ok {
			m.redirectTo(ctx, vol, key, rec, tried)
			return near
		}
	}
	loads := *m.loads.Load()
	// The least loaded live replica that answers probes (ties go to the
	// first in the record, the ring's owner); failing that, any live one.
	best, bestLoad := -1, int64(0)
	for i, name := range rec.Replicas {
		if _, ok := view.vols[name]; !ok || bad[name] || len(tried) > 0 && listed(tried, name) {
			continue
		}
		var load int64
		if l := loads[name]; l != nil {
			load = l.estimate()
		}
		if best < 0 || load < bestLoad {
			best, bestLoad = i, load
		}
	}
	if best >= 0 {
		name := rec.Replicas[best]
		if l := loads[name]; l != nil {
			l.sent.Add(1)
		}
		m.redirectTo(ctx, view.vols[name], key, rec, tried)
		return name
	}
	for _, name := range rec.Replicas {
		if vol, ok := view.vols[name]; ok && (len(tried) == 0 || !listed(tried, name)) {
			m.redirectTo(ctx, vol, key, rec, tried)
			return name
		}
	}
	if len(tried) > 0 {
		replyText(ctx, fasthttp.StatusServiceUnavailable, "no live volume holds this version of the key right now; it is being repaired")
		return ""
	}
	replyText(ctx, fasthttp.StatusServiceUnavailable, "no live volume holds this key right now")
	return ""
}

func (m *Master) redirectTo(ctx *fasthttp.RequestCtx, vol Member, key []byte, rec *Record, tried []byte) {
	var ub [512]byte
	loc := appendBlobURL(ub[:0], vol.HTTP, key, rec.Version)
	if len(tried) > 0 {
		// The volume adds itself if it lacks the version too, so the
		// reader never comes back to a volume that already failed it.
		loc = append(loc, "&tried="...)
		loc = append(loc, tried...)
	}
	var meta []byte
	if rec.Meta {
		// The volume sends the value's S3 headers too (Content-Type...).
		// A copy of the key: it would otherwise escape, and the stack
		// buffer of every redirect with it.
		if meta = m.metaArg(bytes.Clone(key), rec.Version); meta != nil {
			loc = append(loc, "&m="...)
			loc = append(loc, meta...)
		}
	}
	if m.sec != nil {
		loc = m.sec.appendReadSigMeta(loc, key, rec.Version, time.Now().Add(m.cfg.RedirectTTL).Unix(), meta)
	}
	ctx.Response.Header.SetBytesV("Location", loc)
	// The ETag goes after the URL, in ub while it has room; a long key's
	// URL has outgrown ub, and ub[len(loc):] would be out of range.
	ctx.Response.Header.SetBytesV("ETag", rec.appendTag(loc[len(loc):]))
	ctx.SetStatusCode(fasthttp.StatusFound)
}

// headRecord answers HEAD from the index.
func (m *Master) headRecord(ctx *fasthttp.RequestCtx, key []byte, rec *Record) {
	h := &ctx.Response.Header
	var b [64]byte
	h.SetBytesV("ETag", rec.appendTag(b[:0]))
	h.SetBytesV("Last-Modified", appendLastModified(b[:0], rec.ModTime))
	h.SetContentType("application/octet-stream")
	if rec.Meta {
		if meta, err := m.objMeta(bytes.Clone(key), rec.Version); err == nil && meta != nil {
			setMetaHeaders(h, meta)
		}
	}
	h.Set("Accept-Ranges", "bytes")
	ctx.Response.SkipBody = true
	h.SetContentLength(int(rec.Size))
}

// handleList answers GET /PREFIX?list with keys in byte order.
func (m *Master) handleList(ctx *fasthttp.RequestCtx, path []byte) {
	prefix, err := unescape(nil, bytes.TrimPrefix(path, []byte("/")))
	if err == nil {
		err = ValidatePrefix(prefix)
	}
	if err != nil {
		replyError(ctx, err)
		return
	}
	args := ctx.QueryArgs()
	limit := 1000
	if b := args.Peek("limit"); len(b) > 0 {
		n, err := strconv.Atoi(string(b))
		if err != nil || n < 1 || n > 10000 {
			replyText(ctx, fasthttp.StatusBadRequest, "limit must be 1 to 10000")
			return
		}
		limit = n
	}
	keys, next, err := m.cat.list(prefix, args.Peek("start"), limit)
	if err != nil {
		replyError(ctx, err)
		return
	}
	if keys == nil {
		keys = []string{}
	}
	b, _ := json.Marshal(client.ListPage{Keys: keys, Next: next})
	replyJSON(ctx, fasthttp.StatusOK, b)
}
