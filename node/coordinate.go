package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/store"
)

// The redirected write path, on the volume's side: a client sends the body
// of a write the master admitted to PUT (or POST) /_kvdb/write/KEY with the
// master's ticket (ticket.go, redirect_write.go). KEY may also be a
// multipart part's (_kvdb/mp/UPLOAD/NNNNN): the master commits only what
// it issued a ticket for. This volume, the ticket's first replica, stores
// the body and streams it to the other replicas at the same time
// (replicate.go), replaces a replica that failed by having a spare copy the
// value from here, then commits to the master and relays its answer. The
// volume answers only after every replica has the value on disk and the
// master has committed it.

// usedTickets remembers the tickets this volume has taken, until they
// expire: a ticket is good for one upload.
type usedTickets struct {
	mu   sync.Mutex
	seen map[uint64]int64 // version -> expiry (unix s)
}

// take reports whether t was not used before, and marks it used.
func (u *usedTickets) take(t *ticket, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen == nil {
		u.seen = make(map[uint64]int64)
	}
	cutoff := now.Add(-clockSkew).Unix()
	if len(u.seen) > 1024 {
		for v, exp := range u.seen {
			if exp < cutoff {
				delete(u.seen, v)
			}
		}
	}
	if _, ok := u.seen[t.Version]; ok {
		return false
	}
	u.seen[t.Version] = t.Expiry
	return true
}

// checkTicket reads and checks the ticket of a request to
// /_kvdb/write/KEY; it answers the refusal itself (403, 400, 413) and then
// returns false.
func (v *Volume) checkTicket(ctx *fasthttp.RequestCtx, key []byte, size int64) (ticket, bool) {
	args := ctx.QueryArgs()
	t, err := v.sec.parseTicket(key, args.Peek("t"), args.Peek("s"), time.Now())
	switch {
	case errors.Is(err, errTicket):
		replyText(ctx, fasthttp.StatusBadRequest, err.Error())
	case err != nil:
		replyText(ctx, fasthttp.StatusForbidden, "forbidden: "+err.Error())
	case t.Replicas[0] != v.name:
		replyText(ctx, fasthttp.StatusForbidden, fmt.Sprintf("forbidden: the ticket is for volume %s, this is %s", t.Replicas[0], v.name))
	case t.Size >= 0 && size > t.Size:
		replyText(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes, the ticket is for %d", size, t.Size))
	case t.Size >= 0 && size >= 0 && size != t.Size:
		replyText(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("body of %d bytes, the ticket is for %d", size, t.Size))
	default:
		return t, true
	}
	return t, false
}

// expectWrite answers Expect: 100-continue on the write endpoint: a
// ticket that would be refused is refused before the body is sent.
func (v *Volume) expectWrite(ctx *fasthttp.RequestCtx) int {
	rest, ok := bytes.CutPrefix(ctx.URI().PathOriginal(), []byte("/"+ReservedPrefix+"write/"))
	if !ok || !(ctx.IsPut() || ctx.IsPost()) {
		return fasthttp.StatusContinue
	}
	key, err := parseStoredKey(nil, rest)
	if err != nil {
		return statusOf(err)
	}
	if _, ok := v.checkTicket(ctx, key, bodySize(&ctx.Request.Header)); !ok {
		return ctx.Response.StatusCode()
	}
	return fasthttp.StatusContinue
}

// coordinateWrite takes the body of a redirected write and coordinates it.
func (v *Volume) coordinateWrite(ctx *fasthttp.RequestCtx, key []byte) {
	if !ctx.IsPut() && !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "PUT, POST")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed")
		return
	}
	size := bodySize(&ctx.Request.Header)
	t, ok := v.checkTicket(ctx, key, size)
	if !ok {
		return
	}
	if !v.tickets.take(&t, time.Now()) {
		replyText(ctx, fasthttp.StatusForbidden, "forbidden: this write ticket was used already")
		return
	}
	master, ok := v.gossip.httpOf(RoleMaster)
	if !ok {
		replyText(ctx, fasthttp.StatusServiceUnavailable, "this volume sees no master to commit the write to")
		return
	}
	var body io.Reader = ctx.RequestBodyStream()
	if size == 0 {
		body = bytes.NewReader(nil)
	}
	if size < 0 && t.Size >= 0 {
		size = t.Size // a chunked body must still be the declared size
	}
	lim := &limitedBody{r: body, max: t.Max}
	members := v.volumeMembers()
	for _, name := range append(slices.Clone(t.Replicas), t.Spares...) {
		if addr, ok := t.addr(name); ok && addr != "" && name != v.name {
			members[name] = Member{Name: name, Role: RoleVolume, HTTP: addr}
		}
	}
	r := replicator{
		log: v.log,
		put: func(name string, body io.Reader) putResult {
			if name == v.name {
				return v.putLocal(key, t.Version, size, body)
			}
			mem, ok := members[name]
			if !ok {
				return putResult{vol: name, err: fmt.Errorf("volume %s is not live", name), status: fasthttp.StatusServiceUnavailable}
			}
			return v.vc.putBlob(mem, key, t.Version, size, body)
		},
		copy: func(dst, src string) putResult {
			d, ok1 := members[dst]
			s, ok2 := members[src]
			if !ok1 || !ok2 {
				return putResult{vol: dst, err: fmt.Errorf("volume %s or %s is not live", dst, src)}
			}
			return v.vc.pull(d, s, key, t.Version)
		},
		intent: func(vol string) error { return v.masterIntent(master, key, t.Version, vol) },
	}
	ok2, tried, err := r.run(key, size, lim, t.Replicas, t.Spares)
	if err != nil {
		v.abortWrite(master, key, t.Version, tried)
		if lim.over {
			replyText(ctx, fasthttp.StatusRequestEntityTooLarge, "value is over the maximum size")
			return
		}
		replyError(ctx, err)
		return
	}
	replicas := make([]string, len(ok2))
	for i, res := range ok2 {
		replicas[i] = res.vol
	}
	v.commitWrite(ctx, master, key, t.Version, ok2[0].size, ok2[0].checksum, replicas, tried)
}

// putLocal stores the body on this volume, as a replica of the write.
func (v *Volume) putLocal(key []byte, version uint64, size int64, body io.Reader) putResult {
	res := putResult{vol: v.name}
	m, err := v.store.Put(key, version, body, size)
	if err != nil {
		res.err, res.status = err, storeStatus(err)
		if errors.Is(err, store.ErrNoSpace) {
			v.forceMeta.Store(true)
			v.kickMeta()
		}
		return res
	}
	v.metrics.wroteBlob(m.Size)
	res.size, res.checksum = m.Size, m.Checksum
	return res
}

// volumeMembers maps the live volumes' names to their members, this one
// included.
func (v *Volume) volumeMembers() map[string]Member {
	out := map[string]Member{v.name: {Name: v.name, Role: RoleVolume, HTTP: v.httpAddr}}
	for _, m := range v.gossip.snapshot() {
		if m.Role == RoleVolume {
			out[m.Name] = m
		}
	}
	return out
}

// masterRequest sends one signed POST to the master's internal write API
// (uri builds its URL for a master's address, starting with master) and
// returns the answer (the caller releases it). A master that follows
// answers with a redirect to the leader, or says there is none: nothing was
// done there, and the request goes to the leader, or again after a pause,
// for a few seconds at most.
func (v *Volume) masterRequest(master string, uri func(master string) string) (*fasthttp.Response, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	deadline := time.Now().Add(10 * time.Second)
	for {
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(uri(master))
		req.URI().DisablePathNormalizing = true
		resp := fasthttp.AcquireResponse()
		if err := v.client.DoTimeout(req, resp, 30*time.Second); err != nil {
			fasthttp.ReleaseResponse(resp)
			return nil, err
		}
		next := ""
		switch {
		case resp.StatusCode() == fasthttp.StatusTemporaryRedirect:
			if u, err := url.Parse(string(resp.Header.Peek(fasthttp.HeaderLocation))); err == nil {
				next = u.Host
			}
		case resp.StatusCode() == fasthttp.StatusServiceUnavailable && len(resp.Header.Peek(headerNotLeader)) > 0:
			time.Sleep(100 * time.Millisecond)
			next, _ = v.gossip.httpOf(RoleMaster)
		}
		if next == "" || time.Now().After(deadline) {
			return resp, nil
		}
		fasthttp.ReleaseResponse(resp)
		master = next
	}
}

// masterIntent asks the master to record that the value is about to be
// copied to the spare vol.
func (v *Volume) masterIntent(master string, key []byte, version uint64, vol string) error {
	resp, err := v.masterRequest(master, func(master string) string {
		return v.sec.signURL(fasthttp.MethodPost, internalURL(master, "intent/", key, version)+"&vol="+vol)
	})
	if err != nil {
		return fmt.Errorf("recording the copy to %s with the master: %w", vol, err)
	}
	defer fasthttp.ReleaseResponse(resp)
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("recording the copy to %s with the master: status %d: %s", vol, resp.StatusCode(), bytes.TrimSpace(resp.Body()))
	}
	return nil
}

// abortWrite tells the master a write will not be committed, so that what
// was written is deleted now rather than when the ticket times out.
func (v *Volume) abortWrite(master string, key []byte, version uint64, tried []string) {
	resp, err := v.masterRequest(master, func(master string) string {
		return v.sec.signURL(fasthttp.MethodPost, internalURL(master, "commit/", key, version)+"&abort=1&tried="+strings.Join(tried, ","))
	})
	if err != nil {
		v.log.Warn("abandoning a write with the master", "key", string(key), "err", err)
		return
	}
	fasthttp.ReleaseResponse(resp)
}

// commitWrite asks the master to commit the write and relays its answer to
// the client.
func (v *Volume) commitWrite(ctx *fasthttp.RequestCtx, master string, key []byte, version uint64, size int64, sum uint64, replicas, tried []string) {
	resp, err := v.masterRequest(master, func(master string) string {
		return commitURL(v.sec, master, key, version, size, sum, replicas, tried)
	})
	if err != nil {
		// The master may or may not have committed: the client must not
		// take the write as done, nor as failed for sure.
		replyText(ctx, fasthttp.StatusServiceUnavailable, "the master did not answer the commit: the write may or may not have taken effect: "+err.Error())
		return
	}
	defer fasthttp.ReleaseResponse(resp)
	ctx.SetStatusCode(resp.StatusCode())
	if tag := resp.Header.Peek(fasthttp.HeaderETag); len(tag) > 0 {
		ctx.Response.Header.SetBytesV(fasthttp.HeaderETag, tag)
	}
	ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
	ctx.Response.SetBody(resp.Body())
}
