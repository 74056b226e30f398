package node

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// The redirected write path, on the master's side. A PUT or POST that
// carries Expect: 100-continue is admitted from its headers alone (as every
// write is), then answered 307 before its body is sent: to the first
// replica, with a write ticket (ticket.go). That volume takes the body,
// streams it to the other replicas and commits to the master
// (handleCommit), which checks the write against what it promised, checks
// the conditions again under the key lock, commits, and answers; the volume
// relays the answer to the client. No value byte crosses the master.
// The parts of multipart uploads take the same path (expectPart in
// multipart.go): a part is a value under its part key, and its commit
// also checks that its upload is still open.

// maxTicketSpares bounds the spare volumes a ticket names, for replacing
// replicas that fail mid-stream.
const maxTicketSpares = 3

// redirectWrite admits a write for the redirected path and answers 307
// with the ticket; any other status is the write's refusal. For a
// multipart part (key is its part key), upload is the key of the object
// the upload is to, kept with the intent: the commit checks that upload is
// still open.
func (m *Master) redirectWrite(ctx *fasthttp.RequestCtx, key []byte, plan *writePlan, size int64, upload []byte) int {
	n := m.cfg.Replicas
	first, ok := plan.view.vols[plan.candidates[0]]
	if !ok || (*m.unreachable.Load())[first.Name] {
		// No reachable coordinator: the body comes through the master.
		return fasthttp.StatusContinue
	}
	version, err := m.cat.nextVersion()
	if err != nil {
		replyError(ctx, err)
		return statusOf(err)
	}
	now := time.Now()
	wi := writeIntent{
		Size: size, Expiry: now.Add(ticketTTL).Unix(), Issued: now.Unix(),
		Replicas:   plan.candidates[:n],
		Spares:     plan.candidates[n:min(len(plan.candidates), n+maxTicketSpares)],
		CreateOnly: plan.createOnly,
		Upload:     string(upload),
	}
	if plan.conditional {
		wi.IfMatch, wi.IfNone = string(plan.cond.ifMatch), string(plan.cond.ifNoneMatch)
		if !plan.cond.ifUnmodifiedSince.IsZero() {
			wi.IfUnmodSec = plan.cond.ifUnmodifiedSince.Unix()
		}
	}
	if err := m.cat.addTicket(version, key, &wi); err != nil {
		replyError(ctx, err)
		return statusOf(err)
	}
	t := ticket{Version: version, Size: size, Max: m.cfg.MaxValueSize, Expiry: wi.Expiry, Replicas: wi.Replicas, Spares: wi.Spares}
	for _, name := range append(slices.Clone(wi.Replicas), wi.Spares...) {
		t.Addrs = append(t.Addrs, plan.view.vols[name].HTTP)
	}
	loc := make([]byte, 0, 128+3*len(key))
	loc = append(loc, "http://"...)
	loc = append(loc, first.HTTP...)
	loc = append(loc, "/"+ReservedPrefix+"write/"...)
	loc = AppendEscapedKey(loc, key)
	loc = append(loc, '?')
	loc = append(loc, m.sec.ticketQuery(key, &t)...)
	ctx.Response.Header.SetBytesV("Location", loc)
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.Response.SetBodyString("send the value to " + first.Name + "\n")
	m.metrics.redirectedWrite()
	return fasthttp.StatusTemporaryRedirect
}

// conditions rebuilds the preconditions a ticket was admitted with.
func (wi *writeIntent) plan() writePlan {
	p := writePlan{createOnly: wi.CreateOnly}
	if wi.IfMatch != "" || wi.IfNone != "" || wi.IfUnmodSec != 0 {
		p.conditional = true
		p.cond.ifMatch, p.cond.ifNoneMatch = []byte(wi.IfMatch), []byte(wi.IfNone)
		if wi.IfUnmodSec != 0 {
			p.cond.ifUnmodifiedSince = time.Unix(wi.IfUnmodSec, 0).UTC()
		}
	}
	return p
}

// serveWriteInternal serves the endpoints a coordinating volume calls
// (signed as every internal request is): POST /_kvdb/commit/KEY and
// POST /_kvdb/intent/KEY. False when path is neither.
func (m *Master) serveWriteInternal(ctx *fasthttp.RequestCtx, path []byte) bool {
	rest, ok := bytes.CutPrefix(path, []byte("/"+ReservedPrefix))
	if !ok {
		return false
	}
	var commit bool
	switch {
	case bytes.HasPrefix(rest, []byte("commit/")):
		commit = true
	case bytes.HasPrefix(rest, []byte("intent/")):
	default:
		return false
	}
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed")
		return true
	}
	if !m.sec.allowInternal(ctx, rest) {
		return true
	}
	key, ver, ok := keyVersionArgs(ctx, rest[bytes.IndexByte(rest, '/'):])
	if !ok {
		return true
	}
	if commit {
		m.handleCommit(ctx, key, ver)
	} else {
		m.handleIntent(ctx, key, ver)
	}
	return true
}

// handleIntent records that a coordinator is about to copy a redirected
// write's value to a spare (vol=), which the ticket must name.
func (m *Master) handleIntent(ctx *fasthttp.RequestCtx, key []byte, ver uint64) {
	vol := string(ctx.QueryArgs().Peek("vol"))
	wi, found, err := m.cat.getTicket(ver, key)
	switch {
	case err != nil:
		replyError(ctx, err)
	case !found:
		replyText(ctx, fasthttp.StatusForbidden, "no write under way for this ticket")
	case !contains(wi.Spares, vol):
		replyText(ctx, fasthttp.StatusForbidden, fmt.Sprintf("volume %q is not a spare of this write", vol))
	default:
		if err := m.cat.addPending(ver, key, vol); err != nil {
			replyError(ctx, err)
			return
		}
		replyText(ctx, fasthttp.StatusOK, "ok")
	}
}

// handleCommit commits a redirected write that its coordinator has on every
// replica (size=, sum=, r= the replicas, tried= every volume written to),
// or abandons it (abort=1). The write takes effect here, under the key
// lock, exactly as a write through the master does: its conditions are
// checked again, a multipart part's upload must still be open, and one
// overtaken by a later write is refused; a refused write's blobs are
// deleted. The answer (status, ETag, the write reply) is what the client
// gets.
func (m *Master) handleCommit(ctx *fasthttp.RequestCtx, key []byte, ver uint64) {
	args := ctx.QueryArgs()
	tried := splitNames(args.Peek("tried"))
	mu := m.cat.lock(key)
	wi, found, err := m.cat.getTicket(ver, key)
	if err != nil || !found {
		mu.Unlock()
		if err == nil {
			// Abandoned (timed out, or issued before this master led)
			// or committed already: what the coordinator wrote is
			// garbage, unless it is the current version (which the
			// garbage collector never deletes).
			m.abandonWrite(m.view.Load(), key, ver, tried)
			if ver <= m.ledFrom.Load() {
				// Not the client's fault: the master that issued the
				// ticket no longer leads (or restarted since). Nothing
				// took effect, and the write may be sent again.
				err = withStatus(fasthttp.StatusServiceUnavailable, errors.New("the write's ticket was issued before the leading master took over (the leadership moved, or the master restarted): the write did not take effect; retry it"))
			} else {
				err = withStatus(fasthttp.StatusForbidden, errors.New("write ticket already used, abandoned or unknown"))
			}
		}
		replyError(ctx, err)
		return
	}
	for _, vol := range tried {
		if !contains(wi.Replicas, vol) && !contains(wi.Spares, vol) {
			mu.Unlock()
			replyText(ctx, fasthttp.StatusForbidden, fmt.Sprintf("volume %q is not named by the ticket", vol))
			return
		}
	}
	abandon := func(st int, msg string) {
		mu.Unlock()
		m.abandonWrite(m.view.Load(), key, ver, append(tried, wi.Replicas...))
		replyText(ctx, st, msg)
	}
	if args.Has("abort") {
		abandon(fasthttp.StatusOK, "abandoned")
		return
	}
	size, err1 := strconv.ParseInt(string(args.Peek("size")), 10, 64)
	sum, err2 := strconv.ParseUint(string(args.Peek("sum")), 16, 64)
	replicas := splitNames(args.Peek("r"))
	switch {
	case err1 != nil || err2 != nil || size < 0:
		abandon(fasthttp.StatusBadRequest, "bad size= or sum=")
		return
	case wi.Size >= 0 && size != wi.Size:
		abandon(fasthttp.StatusBadRequest, fmt.Sprintf("%d bytes stored, %d declared", size, wi.Size))
		return
	case size > m.cfg.MaxValueSize:
		abandon(fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("value is over the maximum of %d bytes", m.cfg.MaxValueSize))
		return
	case len(replicas) != len(wi.Replicas):
		abandon(fasthttp.StatusBadRequest, fmt.Sprintf("%d replicas, want %d", len(replicas), len(wi.Replicas)))
		return
	}
	for _, r := range replicas {
		if !contains(tried, r) {
			abandon(fasthttp.StatusBadRequest, fmt.Sprintf("replica %q was not written to", r))
			return
		}
	}
	mu.Unlock()
	rec := Record{Version: ver, Size: size, Checksum: sum, ModTime: versionTime(ver), Replicas: replicas}
	plan := wi.plan()
	replaced, err := m.commitWrite(key, &rec, tried, &plan, func() error {
		// Another commit of this ticket may have won the lock meanwhile.
		if _, found, err := m.cat.getTicket(ver, key); err != nil || !found {
			return cmp.Or(err, withStatus(fasthttp.StatusForbidden, errors.New("write ticket already used")))
		}
		// A part takes effect only while its upload takes parts, as
		// writePart's commit checks (not completed, not aborted).
		if id, _, ok := parsePartKey(key); ok {
			if wi.Upload == "" {
				return withStatus(fasthttp.StatusForbidden, errors.New("the ticket of a part names no upload"))
			}
			return m.openUpload([]byte(wi.Upload), id)
		}
		return nil
	})
	if err != nil {
		m.abandonWrite(m.view.Load(), key, ver, append(tried, wi.Replicas...))
		replyError(ctx, err)
		return
	}
	replyWritten(ctx, key, &rec, replaced)
}

// splitNames splits a comma-separated list of volume names, dropping any
// that is not a valid name.
func splitNames(b []byte) []string {
	var out []string
	for n := range strings.SplitSeq(string(b), ",") {
		if nameRE.MatchString(n) {
			out = append(out, n)
		}
	}
	return out
}

// sweepTickets abandons redirected writes whose coordinator never
// committed (it died, or the client went away) within
// RedirectedWriteTimeout of the ticket's issue.
func (m *Master) sweepTickets() {
	cutoff := time.Now().Add(-m.cfg.RedirectedWriteTimeout).Unix()
	type stale struct {
		key  []byte
		ver  uint64
		vols []string
	}
	var old []stale
	err := m.cat.tickets(func(ver uint64, key []byte, wi writeIntent) bool {
		if wi.Issued < cutoff {
			old = append(old, stale{key, ver, append(wi.Replicas, wi.Spares...)})
		}
		return len(old) < 1000
	})
	if err != nil {
		m.log.Error("ticket scan", "err", err)
		return
	}
	view := m.view.Load()
	for _, s := range old {
		mu := m.cat.lock(s.key)
		_, found, err := m.cat.getTicket(s.ver, s.key)
		if err == nil && found {
			m.log.Warn("abandoning a redirected write never committed", "key", string(s.key), "version", formatVersion(s.ver))
			m.abandonWrite(view, s.key, s.ver, s.vols)
		}
		mu.Unlock()
	}
}

// commitURL is the signed URL a coordinating volume commits a write with.
func commitURL(sec *signer, master string, key []byte, ver uint64, size int64, sum uint64, replicas, tried []string) string {
	u := internalURL(master, "commit/", key, ver) + "&size=" + strconv.FormatInt(size, 10) +
		"&sum=" + strconv.FormatUint(sum, 16) + "&r=" + url.QueryEscape(strings.Join(replicas, ",")) +
		"&tried=" + url.QueryEscape(strings.Join(tried, ","))
	return sec.signURL(fasthttp.MethodPost, u)
}
