package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/store"
)

// Deletions on the request path. A DELETE (and every deleteBlobs caller)
// first records, in the catalog, the copies it is about to delete, as
// garbage entries; then it deletes them from their volumes; then the
// entries are cleared. Two things keep the second and third steps cheap
// when many deletions run at once:
//
//   - Each volume has a queue: the deletions waiting for it go in one
//     request (POST /_kvdb/delete, a list of versions), at most
//     maxDeleteInFlight at a time, so concurrent DELETEs share round trips.
//   - The volume deletes them lazily (store.DeleteNoSync): each copy is out
//     of its index, so no read finds it, before the request is answered,
//     but its tombstone waits for the volume's next fdatasync. The garbage
//     entries stay in the catalog until a sync of that volume
//     (POST /_kvdb/sync) has returned after the deletion; the settler does
//     that for many deletions at once, off the request path, and clears
//     their entries in one catalog write. A volume that crashes before the
//     sync may bring a copy back; its entry is still queued, and the GC
//     loop deletes it again.

const (
	// maxDeleteBatch is how many deletions one request to a volume takes.
	maxDeleteBatch = 256
	// maxDeleteInFlight is how many such requests a volume has at once.
	maxDeleteInFlight = 2
)

// deleteItem is one deletion waiting in a volume's queue.
type deleteItem struct {
	waiter
	key     []byte
	version uint64
	err     error // the outcome: nil when deleted or already gone
}

// deleteQueues batches the deletions for each volume (batchq.go).
type deleteQueues struct {
	batchQueues[*deleteItem]
}

func newDeleteQueues(vc *volumeClient) *deleteQueues {
	return &deleteQueues{batchQueues[*deleteItem]{send: vc.deleteMany, maxBatch: maxDeleteBatch, inFlight: maxDeleteInFlight}}
}

// enqueue queues the deletion of version of key from the volume at addr,
// lazily, together with the other deletions queued for it; its done is
// closed once it has an outcome (err; a version already gone is none).
// (A caller that sent the queue itself instead of a sender goroutine
// measured 3-5 % fewer 1 KiB cycles.)
func (d *deleteQueues) enqueue(addr string, key []byte, version uint64) *deleteItem {
	it := &deleteItem{waiter: newWaiter(), key: key, version: version}
	d.add(addr, it)
	return it
}

// deleteMany deletes items from the volume at addr lazily, in one request,
// setting each item's err. A volume that lacks the endpoint (an older
// build) gets them one by one, durably.
func (vc *volumeClient) deleteMany(addr string, items []*deleteItem) {
	lines, err := vc.sendList(addr, "delete", appendDeleteList(nil, items), len(items))
	if errors.Is(err, errNoEndpoint) {
		for _, it := range items {
			it.err = vc.deleteBlob(addr, it.key, it.version)
		}
		return
	}
	for i, it := range items {
		if err != nil {
			it.err = err
			continue
		}
		switch l := lines[i]; {
		case bytes.Equal(l, []byte("200")), bytes.Equal(l, []byte("404")):
		default:
			it.err = fmt.Errorf("volume %s: %s", addr, l)
		}
	}
}

// errNoEndpoint is sendList's error when the volume lacks the endpoint (a
// build older than the caller's).
var errNoEndpoint = errors.New("the volume lacks the endpoint")

// sendList posts a list of n items (body) to the volume at addr's endpoint
// op (delete, put), signed with the body's SHA-256, and returns the
// outcome lines of its answer, one per item.
func (vc *volumeClient) sendList(addr, op string, body []byte, n int) ([][]byte, error) {
	sum := sha256.Sum256(body)
	u := "http://" + addr + "/" + ReservedPrefix + op + "?b=" + base64.RawURLEncoding.EncodeToString(sum[:])
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(vc.sec.signURL(fasthttp.MethodPost, u))
	req.SetBodyRaw(body)
	if err := vc.hc.DoTimeout(req, resp, 30*time.Second); err != nil {
		return nil, err
	}
	if lacksEndpoint(resp) {
		return nil, errNoEndpoint
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("volume %s answered %d: %s", addr, resp.StatusCode(), bytes.TrimSpace(resp.Body()))
	}
	lines := bytes.Split(bytes.TrimSuffix(resp.Body(), []byte("\n")), []byte("\n"))
	if len(lines) != n {
		return nil, fmt.Errorf("volume %s answered %d outcomes for %d items", addr, len(lines), n)
	}
	// The lines outlive resp.
	for i, l := range lines {
		lines[i] = bytes.Clone(l)
	}
	return lines, nil
}

// syncLog makes the lazy deletions the volume at addr answered durable; a
// volume without the endpoint deleted them durably already.
func (vc *volumeClient) syncLog(addr string) error {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(vc.sec.signURL(fasthttp.MethodPost, "http://"+addr+"/"+ReservedPrefix+"sync"))
	if err := vc.hc.DoTimeout(req, resp, 30*time.Second); err != nil {
		return err
	}
	switch {
	case resp.StatusCode() == fasthttp.StatusOK:
		return nil
	case lacksEndpoint(resp):
		return nil
	}
	return fmt.Errorf("volume %s answered %d: %s", addr, resp.StatusCode(), bytes.TrimSpace(resp.Body()))
}

// lacksEndpoint reports whether resp is a volume's answer to an internal
// endpoint it does not have (a build older than the caller's).
func lacksEndpoint(resp *fasthttp.Response) bool {
	return resp.StatusCode() == fasthttp.StatusNotFound && bytes.HasPrefix(resp.Body(), []byte(noAdminEndpoint))
}

// appendDeleteList encodes deletions as lines of "VERSION /ESCAPED-KEY"
// (the key as in a URL path).
func appendDeleteList(dst []byte, items []*deleteItem) []byte {
	for _, it := range items {
		dst = appendVersion(dst, it.version)
		dst = append(dst, " /"...)
		dst = AppendEscapedKey(dst, it.key)
		dst = append(dst, '\n')
	}
	return dst
}

// parseDeleteList decodes appendDeleteList's lines, calling fn with each;
// the key passed to fn is valid only during the call.
func parseDeleteList(body []byte, fn func(key []byte, version uint64)) error {
	var key []byte
	for n := 1; len(body) > 0; n++ {
		line, rest, ok := bytes.Cut(body, []byte("\n"))
		if !ok {
			return fmt.Errorf("deletion %d: no newline", n)
		}
		body = rest
		v, k, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			return fmt.Errorf("deletion %d: no space", n)
		}
		ver, err := parseVersion(v)
		if err != nil {
			return fmt.Errorf("deletion %d: %w", n, err)
		}
		if key, err = parseStoredKey(key, k); err != nil {
			return fmt.Errorf("deletion %d: %w", n, err)
		}
		fn(key, ver)
	}
	return nil
}

// deleteMany is the volume's side: it deletes every listed version lazily,
// all at once (so they share log commits), and answers one line per
// deletion, in order: 200, 404, or the status and reason of a failure.
func (v *Volume) deleteMany(ctx *fasthttp.RequestCtx) {
	body, ok := readList(ctx)
	if !ok {
		return
	}
	type del struct {
		key     []byte
		version uint64
	}
	var dels []del
	err := parseDeleteList(body, func(key []byte, version uint64) {
		dels = append(dels, del{bytes.Clone(key), version})
	})
	if err == nil && len(dels) > maxDeleteBatch {
		err = fmt.Errorf("%d deletions in one request; at most %d", len(dels), maxDeleteBatch)
	}
	if err != nil {
		replyText(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	outcomes := make([]error, len(dels))
	var wg sync.WaitGroup
	for i, d := range dels {
		wg.Go(func() { outcomes[i] = v.store.DeleteNoSync(d.key, d.version) })
	}
	wg.Wait()
	out := make([]byte, 0, 4*len(dels))
	for _, err := range outcomes {
		switch {
		case err == nil:
			out = append(out, "200\n"...)
		case errors.Is(err, store.ErrNotFound):
			out = append(out, "404\n"...)
		default:
			out = appendFailure(out, err)
		}
	}
	replyList(ctx, out)
}

// readList reads the body of a list request (POST, its SHA-256 in b=, at
// most maxListBody bytes), or answers the request with the reason it
// cannot.
func readList(ctx *fasthttp.RequestCtx) ([]byte, bool) {
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
		return nil, false
	}
	if n := ctx.Request.Header.ContentLength(); n < 0 || n > maxListBody {
		replyText(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("a list needs a Content-Length of at most %d", maxListBody))
		return nil, false
	}
	body := ctx.PostBody()
	want, err := base64.RawURLEncoding.DecodeString(string(ctx.QueryArgs().Peek("b")))
	if sum := sha256.Sum256(body); err != nil || !bytes.Equal(want, sum[:]) {
		replyText(ctx, fasthttp.StatusBadRequest, "the body does not match its checksum (b=)")
		return nil, false
	}
	return body, true
}

// maxListBody bounds a list request's body: the largest put list
// (putq.go; a deletion list of 256 versions with keys of 1024 bytes,
// escaped, is smaller).
const maxListBody = maxPutBatch * (maxPutHeader + smallWriteMax)

// appendFailure appends the outcome line of a failed item: its status and
// the reason, on one line.
func appendFailure(out []byte, err error) []byte {
	out = strconv.AppendInt(out, int64(storeStatus(err)), 10)
	out = append(out, ' ')
	out = append(out, bytes.ReplaceAll([]byte(err.Error()), []byte("\n"), []byte(" "))...)
	return append(out, '\n')
}

// replyList answers a list request with its outcome lines.
func replyList(ctx *fasthttp.RequestCtx, out []byte) {
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBody(out)
}

// settleInterval is the least time between two settling rounds, so that
// each round (a sync per volume and one catalog write) covers many
// deletions.
const settleInterval = 100 * time.Millisecond

// settler holds lazy deletions whose garbage entries are to be cleared
// once their volumes have synced.
type settler struct {
	mu    sync.Mutex
	items []settleItem
	kick  chan struct{}
	// round is held by a settling round (tests hold it to keep the
	// entries queued).
	round sync.Mutex
	// busy counts, by garbageKey, the deletions under way (from deleteBlobs
	// to the end of their settling round), which the GC passes leave alone.
	busy map[string]int
}

// track marks a deletion under way (on) or over (off).
func (st *settler) track(g garbageItem, on bool) {
	k := string(garbageKey(g.vol, g.key, g.version))
	st.mu.Lock()
	defer st.mu.Unlock()
	if on {
		if st.busy == nil {
			st.busy = make(map[string]int)
		}
		st.busy[k]++
		return
	}
	if st.busy[k]--; st.busy[k] <= 0 {
		delete(st.busy, k)
	}
}

// underWay reports whether deleteBlobs or the settler is handling g.
func (st *settler) underWay(g garbageItem) bool {
	k := string(garbageKey(g.vol, g.key, g.version))
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.busy[k] > 0
}

type settleItem struct {
	addr string
	garbageItem
}

// settle queues deleted copies for settleLoop.
func (m *Master) settle(items []settleItem) {
	if len(items) == 0 {
		return
	}
	m.settler.mu.Lock()
	m.settler.items = append(m.settler.items, items...)
	m.settler.mu.Unlock()
	select {
	case m.settler.kick <- struct{}{}:
	default:
	}
}

// settleLoop syncs the volumes that deleted copies lazily, then clears
// those copies' garbage entries in one catalog write, a round at a time.
// What it drops (on a failure, when stopping, on a master that lost the
// lead) stays queued in the catalog for the GC loop, which deletes it
// again, durably.
func (m *Master) settleLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.settler.kick:
		}
		for {
			m.settler.mu.Lock()
			items := m.settler.items
			m.settler.items = nil
			m.settler.mu.Unlock()
			if len(items) == 0 {
				break
			}
			start := time.Now()
			m.settler.round.Lock()
			m.settleAll(items)
			m.settler.round.Unlock()
			select {
			case <-m.stop:
				return
			case <-time.After(settleInterval - time.Since(start)):
			}
		}
	}
}

func (m *Master) settleAll(items []settleItem) {
	var addrs []string
	for _, it := range items {
		if !slices.Contains(addrs, it.addr) {
			addrs = append(addrs, it.addr)
		}
	}
	synced := make(map[string]bool, len(addrs))
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, addr := range addrs {
		wg.Go(func() {
			err := m.vc.syncLog(addr)
			if err != nil {
				m.log.Warn("sync after deletions failed; the GC deletes them again", "volume", addr, "err", err)
			}
			mu.Lock()
			synced[addr] = err == nil
			mu.Unlock()
		})
	}
	wg.Wait()
	done := make([]garbageItem, 0, len(items))
	for _, it := range items {
		if synced[it.addr] {
			done = append(done, it.garbageItem)
		}
	}
	if err := m.cat.doneGarbageAll(done); err != nil && m.leads() {
		m.log.Warn("clearing the entries of deleted copies; the GC clears them", "err", err)
	}
	for _, it := range items {
		m.settler.track(it.garbageItem, false)
	}
}
