package node

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
	"github.com/kvdb/kvdb/store"
)

// The master's side of consistency checking:
//
//   - POST /_kvdb/lost/KEY?v=VERSION&vol=NAME: a volume's scrub quarantined
//     its copy of a version (see scrub.go). The master drops the volume from
//     the key's replicas and makes a new copy from a healthy replica.
//   - POST /_kvdb/verify?repair=0|1&deep=0|1: compares every volume's index
//     with the master's, lists what disagrees (client.VerifyReport) and, with
//     repair, fixes it.
//
// A lost report needs no API key: volumes hold none. It is only a hint:
// the master asks the volume (a signed request when there is a cluster
// secret) whether it holds the version, and acts only if it does not, so a
// forged report changes nothing.

// verifyState is the master's bookkeeping for verify and lost reports.
type verifyState struct {
	running atomic.Bool // a verify is under way
	mu      sync.Mutex
	// restoring counts the copies being made after lost reports.
	restoring int
}

// maxRestoring bounds the copies made at once after lost reports; more
// reports than that are left to the repair loop.
const maxRestoring = 4

// serveLost serves POST /_kvdb/lost/KEY; false when path is not that.
func (m *Master) serveLost(ctx *fasthttp.RequestCtx, path []byte) bool {
	rest, ok := bytes.CutPrefix(path, []byte("/"+ReservedPrefix+"lost/"))
	if !ok {
		return false
	}
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed on lost")
		return true
	}
	key, ver, ok := keyVersionArgs(ctx, rest)
	if !ok {
		return true
	}
	vol := string(ctx.QueryArgs().Peek("vol"))
	if !nameRE.MatchString(vol) {
		replyText(ctx, fasthttp.StatusBadRequest, "bad or missing vol=")
		return true
	}
	dropped, err := m.lostCopy(key, ver, vol)
	if err != nil {
		replyError(ctx, err)
		return true
	}
	b, _ := json.Marshal(map[string]bool{"dropped": dropped})
	replyJSON(ctx, fasthttp.StatusOK, b)
	return true
}

// lostCopy handles vol's report that it no longer holds version of key:
// once the volume confirms it, vol is dropped from the key's replicas and
// a new copy is made. It reports whether vol was dropped; an error means
// the report should be sent again later.
func (m *Master) lostCopy(key []byte, version uint64, vol string) (bool, error) {
	var rec Record
	found, err := m.cat.get(key, &rec)
	if err != nil || !found || rec.Version != version || !contains(rec.Replicas, vol) {
		return false, err
	}
	mem, live := m.view.Load().vols[vol]
	if !live {
		return false, withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("volume %s is not live", vol))
	}
	_, held, err := m.volumeEntry(mem, key, version)
	if err != nil {
		return false, withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("asking %s: %w", vol, err))
	}
	if held {
		return false, nil
	}
	dropped, err := m.dropReplica(key, version, vol)
	if err != nil || !dropped {
		return false, err
	}
	m.log.Warn("a volume lost its copy of a value (corrupt and quarantined, or gone); making a new one",
		"volume", vol, "key", string(key), "version", formatVersion(version))
	m.restoreSoon(key)
	return true, nil
}

// dropReplica removes vol from the replicas of key, provided the record is
// still at version and names vol: the volume no longer holds that version.
// No deletion is queued, as there is nothing left to delete; a new copy on
// the same volume stays safe. It reports whether the record changed.
func (m *Master) dropReplica(key []byte, version uint64, vol string) (bool, error) {
	next, dropped, err := m.cat.dropReplica(key, version, vol)
	if dropped && len(next.Replicas) == 0 {
		m.log.Error("the last copy of a value is lost", "key", string(key), "version", formatVersion(version), "volume", vol)
	}
	return dropped, err
}

// restoreSoon makes the copies key lacks in the background (a few at a
// time; the repair loop takes over beyond that, and after a failure).
func (m *Master) restoreSoon(key []byte) {
	select {
	case <-m.stop:
		return
	default:
	}
	m.verifier.mu.Lock()
	ok := m.verifier.restoring < maxRestoring
	if ok {
		m.verifier.restoring++
	}
	m.verifier.mu.Unlock()
	if !ok {
		m.kickRepair()
		return
	}
	key = bytes.Clone(key)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if !m.restoreKey(key) {
			m.kickRepair()
		}
		m.verifier.mu.Lock()
		m.verifier.restoring--
		m.verifier.mu.Unlock()
	}()
}

// restoreKey copies key's current version to live volumes until it has
// the replica count (see repairKey), and reports whether it has.
func (m *Master) restoreKey(key []byte) bool {
	var rec Record
	found, err := m.cat.get(key, &rec)
	if err != nil || !found {
		return err == nil
	}
	view := m.view.Load()
	if liveCount(view, rec.Replicas) >= m.cfg.Replicas {
		return true
	}
	m.repairKey(view, key, &rec)
	found, err = m.cat.get(key, &rec)
	return err == nil && (!found || liveCount(view, rec.Replicas) >= m.cfg.Replicas)
}

func liveCount(view *clusterView, names []string) int {
	n := 0
	for _, name := range names {
		if _, ok := view.vols[name]; ok {
			n++
		}
	}
	return n
}

// volumeEntry asks vol for its index entry of (key, version); held is false
// when the volume does not hold the version.
func (m *Master) volumeEntry(vol Member, key []byte, version uint64) (e indexEntry, held bool, err error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(m.sec.signURL(fasthttp.MethodGet, internalURL(vol.HTTP, "check/", key, version)))
	req.URI().DisablePathNormalizing = true
	if err := m.client.DoTimeout(req, resp, 30*time.Second); err != nil {
		return e, false, err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return e, false, fmt.Errorf("volume %s answered %d: %s", vol.Name, resp.StatusCode(), trimBody(resp.Body()))
	}
	var r checkReply
	if err := json.Unmarshal(resp.Body(), &r); err != nil {
		return e, false, fmt.Errorf("volume %s: bad check reply: %w", vol.Name, err)
	}
	return r.indexEntry, r.Held, nil
}

// quarantineOn has vol take version of key out of service.
func (m *Master) quarantineOn(vol Member, key []byte, version uint64, reason string) error {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	uri := internalURL(vol.HTTP, "quarantine/", key, version) + "&reason=" + url.QueryEscape(reason)
	req.SetRequestURI(m.sec.signURL(fasthttp.MethodPost, uri))
	req.URI().DisablePathNormalizing = true
	if err := m.client.DoTimeout(req, resp, 30*time.Second); err != nil {
		return err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("volume %s answered %d: %s", vol.Name, resp.StatusCode(), trimBody(resp.Body()))
	}
	return nil
}

// indexPage reads one page of vol's index listing (see listIndex).
func (m *Master) indexPage(vol Member, start, startVer string) (indexPage, error) {
	var page indexPage
	u := "http://" + vol.HTTP + "/" + ReservedPrefix + "index?limit=1000&start=" + url.QueryEscape(start) + "&start_version=" + startVer
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(m.sec.signURL(fasthttp.MethodGet, u))
	if err := m.client.DoTimeout(req, resp, 60*time.Second); err != nil {
		return page, fmt.Errorf("list index of %s: %w", vol.Name, err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return page, fmt.Errorf("list index of %s: status %d: %s", vol.Name, resp.StatusCode(), trimBody(resp.Body()))
	}
	if err := json.Unmarshal(resp.Body(), &page); err != nil {
		return page, fmt.Errorf("list index of %s: %w", vol.Name, err)
	}
	return page, nil
}

// handleVerify serves POST /_kvdb/verify?repair=0|1&deep=0|1. One verify
// runs at a time (409 otherwise); it answers when done, which for a deep
// one takes as long as reading every volume.
func (m *Master) handleVerify(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed on verify")
		return
	}
	repair, err1 := boolArg(ctx, "repair")
	deep, err2 := boolArg(ctx, "deep")
	if err := cmp.Or(err1, err2); err != nil {
		replyError(ctx, err)
		return
	}
	if !m.verifier.running.CompareAndSwap(false, true) {
		replyText(ctx, fasthttp.StatusConflict, "a verify is already running")
		return
	}
	defer m.verifier.running.Store(false)
	select {
	case <-m.stop:
		replyText(ctx, fasthttp.StatusServiceUnavailable, "master is stopping")
		return
	default:
	}
	m.wg.Add(1)
	defer m.wg.Done()
	c, cancel := stopContext(m.stop)
	defer cancel()
	rep, err := m.verifyCluster(c, repair, deep)
	if err != nil {
		replyError(ctx, err)
		return
	}
	m.log.Info("verify done", "keys", rep.Keys, "missing", rep.Counts.Missing, "extra", rep.Counts.Extra,
		"mismatch", rep.Counts.Mismatch, "corrupt", rep.Counts.Corrupt, "orphans", rep.Counts.Orphans,
		"under_replicated", rep.UnderReplicated, "errors", rep.Counts.Errors, "repair", repair, "deep", deep)
	b, _ := json.Marshal(rep)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// boolArg reads a 0/1 (or false/true) query argument; absent is false.
func boolArg(ctx *fasthttp.RequestCtx, name string) (bool, error) {
	switch v := string(ctx.QueryArgs().Peek(name)); v {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	default:
		return false, withStatus(fasthttp.StatusBadRequest, fmt.Errorf("%s=%q: want 0 or 1", name, v))
	}
}

// verifyRun is one verify under way.
type verifyRun struct {
	m      *Master
	ctx    context.Context
	view   *clusterView
	repair bool
	gc     atomic.Bool // garbage was queued

	mu  sync.Mutex // guards rep: volumes are streamed in parallel
	rep *client.VerifyReport
}

// verifyCluster checks every live volume against the index; see
// client.VerifyReport. Memory stays bounded whatever the number of keys: the
// master's index and each volume's listing are walked side by side in key
// order, a page at a time, and every list stops at client.VerifyLimit.
func (m *Master) verifyCluster(ctx context.Context, repair, deep bool) (*client.VerifyReport, error) {
	view := m.view.Load()
	if err := m.verifyReady(view); err != nil {
		return nil, err
	}
	began := time.Now()
	rep := &client.VerifyReport{
		Volumes: map[string]*client.VerifyVolume{}, Missing: []client.VerifyFinding{}, Extra: []client.VerifyFinding{},
		Mismatch: []client.VerifyFinding{}, Corrupt: []client.VerifyFinding{}, Orphans: []client.VerifyOrphan{}, Errors: []string{},
		Deep: deep, Repair: repair,
	}
	if repair {
		rep.Repaired = &client.VerifyCounts{}
	}
	r := &verifyRun{m: m, ctx: ctx, view: view, repair: repair, rep: rep}
	names := make([]string, 0, len(view.vols))
	for name := range view.vols {
		names = append(names, name)
		rep.Volumes[name] = &client.VerifyVolume{}
	}
	sort.Strings(names)
	r.walk(names)
	r.eachVolume(names, r.orphans)
	if deep {
		r.eachVolume(names, r.scrub)
	}
	if r.gc.Load() {
		m.kickGC()
	}
	if err := ctx.Err(); err != nil {
		r.fail("verify stopped before the end: the master is stopping")
	}
	c := rep.Counts
	rep.Clean = c == (client.VerifyCounts{}) && rep.UnderReplicated == 0
	rep.Seconds = time.Since(began).Seconds()
	return rep, nil
}

// verifyReady refuses to verify while the index may lack keys that
// volumes hold: a version would look unreferenced, and repair would queue
// it for deletion.
func (m *Master) verifyReady(view *clusterView) error {
	m.mergeMu.Lock()
	defer m.mergeMu.Unlock()
	if n := len(m.merging); n > 0 {
		return withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("the index of %d volumes is being merged; verify once /_kvdb/ready answers 200", n))
	}
	for name := range view.vols {
		if !m.merged[name] {
			return withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("the index of volume %s is not merged yet; verify once /_kvdb/ready answers 200", name))
		}
	}
	return nil
}

// fail records something that kept part of the check from completing.
func (r *verifyRun) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Counts.Errors++
	if len(r.rep.Errors) < client.VerifyLimit {
		r.rep.Errors = append(r.rep.Errors, fmt.Sprintf(format, args...))
	}
}

// volumeFailed records that vol could not be checked completely.
func (r *verifyRun) volumeFailed(vol, what string, err error) {
	r.mu.Lock()
	if v := r.rep.Volumes[vol]; v != nil && v.Error == "" {
		v.Error = what + ": " + err.Error()
	}
	r.mu.Unlock()
	r.fail("volume %s: %s: %v", vol, what, err)
}

// add appends f to list (up to client.VerifyLimit) and counts it.
func (r *verifyRun) add(list *[]client.VerifyFinding, count func(*client.VerifyCounts) *int64, f client.VerifyFinding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*count(&r.rep.Counts)++
	if f.Repaired {
		*count(r.rep.Repaired)++
	}
	if len(*list) < client.VerifyLimit {
		*list = append(*list, f)
	}
}

func countMissing(c *client.VerifyCounts) *int64  { return &c.Missing }
func countExtra(c *client.VerifyCounts) *int64    { return &c.Extra }
func countMismatch(c *client.VerifyCounts) *int64 { return &c.Mismatch }
func countCorrupt(c *client.VerifyCounts) *int64  { return &c.Corrupt }

// indexCursor walks one volume's index listing a page at a time.
type indexCursor struct {
	vol           Member
	page          []indexEntry
	i             int
	next, nextVer string
	done          bool
	err           error
}

// peek returns the cursor's current entry, fetching the next page when
// needed; nil at the end or after a failure (recorded in the report).
func (r *verifyRun) peek(c *indexCursor) *indexEntry {
	for c.i >= len(c.page) {
		if c.done || c.err != nil {
			return nil
		}
		if c.err = r.ctx.Err(); c.err != nil {
			return nil
		}
		page, err := r.m.indexPage(c.vol, c.next, c.nextVer)
		if err != nil {
			c.err = err
			r.volumeFailed(c.vol.Name, "index listing", err)
			return nil
		}
		c.page, c.i = page.Entries, 0
		r.mu.Lock()
		r.rep.Volumes[c.vol.Name].Versions += int64(len(page.Entries))
		r.mu.Unlock()
		if page.Next == "" {
			c.done = true
		} else {
			c.next, c.nextVer = page.Next, page.NextVersion
		}
	}
	return &c.page[c.i]
}

// walk compares the master's index with every volume's, key by key. Both
// are in byte order of the key (a volume lists a key's versions together,
// oldest first), so each volume's listing is consumed up to the key the
// master's walk is at.
func (r *verifyRun) walk(names []string) {
	curs := make([]*indexCursor, len(names))
	for i, name := range names {
		curs[i] = &indexCursor{vol: r.view.vols[name]}
	}
	type item struct {
		key []byte
		rec Record
	}
	var start []byte
	for r.ctx.Err() == nil {
		var batch []item
		var next []byte
		err := r.m.cat.scanFrom(start, func(key []byte, rec *Record) bool {
			if len(batch) == repairBatch {
				next = bytes.Clone(key)
				return false
			}
			batch = append(batch, item{bytes.Clone(key), rec.clone()})
			return true
		})
		if err != nil {
			r.fail("index scan: %v", err)
			return
		}
		// The iterator is released: checks may take their time.
		for i := range batch {
			if r.ctx.Err() != nil {
				return
			}
			r.checkKey(curs, batch[i].key, &batch[i].rec)
		}
		if next == nil {
			break
		}
		start = next
	}
	// What is left on the volumes comes after the last key of the index.
	for _, c := range curs {
		for e := r.peek(c); e != nil && r.ctx.Err() == nil; e = r.peek(c) {
			c.i++
			r.volumeOnly(c.vol, e)
		}
	}
}

// checkKey compares one record with what each volume lists for its key.
func (r *verifyRun) checkKey(curs []*indexCursor, key []byte, rec *Record) {
	r.mu.Lock()
	r.rep.Keys++
	if rec.Parts == 0 && liveCount(r.view, rec.Replicas) < r.m.cfg.Replicas {
		r.rep.UnderReplicated++
	}
	r.mu.Unlock()
	k := string(key)
	for _, c := range curs {
		for e := r.peek(c); e != nil && e.Key < k; e = r.peek(c) {
			c.i++
			r.volumeOnly(c.vol, e)
		}
		named := contains(rec.Replicas, c.vol.Name)
		held := false
		for e := r.peek(c); e != nil && e.Key == k; e = r.peek(c) {
			c.i++
			ver, err := parseVersion([]byte(e.Version))
			if err != nil {
				continue
			}
			if ver != rec.Version || !named {
				r.extra(c.vol, key, ver)
				continue
			}
			held = true
			if sum, err := strconv.ParseUint(e.Checksum, 16, 64); err != nil || sum != rec.Checksum || e.Size != rec.Size {
				r.mismatch(c.vol, key, rec)
			}
		}
		if named && !held && c.err == nil {
			r.missing(c.vol, key, rec)
		}
	}
}

// volumeOnly handles a listed version of a key the index has no record of.
func (r *verifyRun) volumeOnly(vol Member, e *indexEntry) {
	ver, err := parseVersion([]byte(e.Version))
	if err != nil {
		return
	}
	r.extra(vol, []byte(e.Key), ver)
}

// current re-reads key's record and reports whether it is still at version
// and names vol: findings are confirmed against the present state, so
// that writes, deletions and moves during the walk are not reported.
func (r *verifyRun) current(key []byte, version uint64, vol string) (Record, bool) {
	var cur Record
	found, err := r.m.cat.get(key, &cur)
	if err != nil {
		r.fail("index: %v", err)
		return cur, false
	}
	return cur, found && cur.Version == version && contains(cur.Replicas, vol)
}

// queued reports whether version of key on vol is queued for deletion or
// is being written (a pending intent).
func (r *verifyRun) queued(vol string, key []byte, version uint64) (bool, error) {
	if has, err := r.m.cat.db().Has(garbageKey(vol, key, version), nil); err != nil || has {
		return has, err
	}
	return r.m.cat.db().Has(pendingKey(version, vol, key), nil)
}

// extra confirms and handles a version vol holds that the walk found no
// reference to.
func (r *verifyRun) extra(vol Member, key []byte, version uint64) {
	if q, err := r.queued(vol.Name, key, version); err != nil || q {
		if err != nil {
			r.fail("index: %v", err)
		}
		return
	}
	if _, ok := r.current(key, version, vol.Name); ok {
		return
	}
	_, held, err := r.m.volumeEntry(vol, key, version)
	if err != nil {
		r.fail("volume %s: check %q v%s: %v", vol.Name, key, formatVersion(version), err)
		return
	}
	if !held {
		return
	}
	// Overwritten or deleted (or abandoned) while the volume was asked?
	if q, err := r.queued(vol.Name, key, version); err != nil || q {
		return
	}
	f := client.VerifyFinding{Key: string(key), Version: formatVersion(version), Volume: vol.Name}
	if r.repair && ValidateKey(key) == nil {
		if err := r.m.cat.addGarbage(vol.Name, key, version); err != nil {
			r.fail("index: %v", err)
		} else {
			f.Repaired = true
			r.gc.Store(true)
		}
	}
	r.add(&r.rep.Extra, countExtra, f)
}

// missing confirms and handles a replica the record names that the
// volume's listing lacks.
func (r *verifyRun) missing(vol Member, key []byte, rec *Record) {
	cur, ok := r.current(key, rec.Version, vol.Name)
	if !ok {
		return
	}
	_, held, err := r.m.volumeEntry(vol, key, cur.Version)
	if err != nil {
		r.fail("volume %s: check %q v%s: %v", vol.Name, key, formatVersion(cur.Version), err)
		return
	}
	if held {
		return
	}
	f := client.VerifyFinding{Key: string(key), Version: formatVersion(cur.Version), Volume: vol.Name}
	if r.repair {
		f.Repaired = r.replace(vol, key, &cur, "")
	}
	r.add(&r.rep.Missing, countMissing, f)
}

// mismatch confirms and handles a replica whose checksum (or size) in the
// volume's index differs from the record's.
func (r *verifyRun) mismatch(vol Member, key []byte, rec *Record) {
	cur, ok := r.current(key, rec.Version, vol.Name)
	if !ok {
		return
	}
	e, held, err := r.m.volumeEntry(vol, key, cur.Version)
	if err != nil {
		r.fail("volume %s: check %q v%s: %v", vol.Name, key, formatVersion(cur.Version), err)
		return
	}
	sum, perr := strconv.ParseUint(e.Checksum, 16, 64)
	if !held || perr == nil && sum == cur.Checksum && e.Size == cur.Size {
		return
	}
	f := client.VerifyFinding{Key: string(key), Version: formatVersion(cur.Version), Volume: vol.Name,
		Want: fmt.Sprintf("%016x", cur.Checksum), Got: fmt.Sprintf("%016x", sum)}
	if r.repair {
		f.Repaired = r.replace(vol, key, &cur, "verify: the volume's checksum differs from the master's record")
	}
	r.add(&r.rep.Mismatch, countMismatch, f)
}

// replace takes vol's copy of rec's version out of the record (after
// quarantining it there, when reason is set) and copies the value from a
// healthy replica. It does nothing unless another replica holds the
// version with the recorded checksum: dropping the only copy gains
// nothing. It reports whether the key has its replica count again.
func (r *verifyRun) replace(vol Member, key []byte, rec *Record, reason string) bool {
	if !r.healthyCopy(key, rec, vol.Name) {
		r.fail("%q v%s on %s: no other replica has the recorded checksum; left as it is", key, formatVersion(rec.Version), vol.Name)
		return false
	}
	if reason != "" {
		if err := r.m.quarantineOn(vol, key, rec.Version, reason); err != nil {
			r.fail("volume %s: quarantine %q v%s: %v", vol.Name, key, formatVersion(rec.Version), err)
			return false
		}
	}
	if _, err := r.m.dropReplica(key, rec.Version, vol.Name); err != nil {
		r.fail("index: %v", err)
		return false
	}
	if !r.m.restoreKey(key) {
		r.fail("%q v%s: could not make a new copy; the repair loop retries", key, formatVersion(rec.Version))
		return false
	}
	return true
}

// healthyCopy reports whether a live replica of rec other than exclude
// holds its version with the recorded size and checksum.
func (r *verifyRun) healthyCopy(key []byte, rec *Record, exclude string) bool {
	for _, name := range rec.Replicas {
		mem, ok := r.view.vols[name]
		if name == exclude || !ok {
			continue
		}
		e, held, err := r.m.volumeEntry(mem, key, rec.Version)
		if err != nil || !held {
			continue
		}
		if sum, err := strconv.ParseUint(e.Checksum, 16, 64); err == nil && sum == rec.Checksum && e.Size == rec.Size {
			return true
		}
	}
	return false
}

// fixBad quarantines version of key on vol (its file is bad) and, if the
// record names that copy, replaces it.
func (r *verifyRun) fixBad(vol Member, key []byte, version uint64, reason string) bool {
	if ValidateKey(key) != nil {
		return false
	}
	if err := r.m.quarantineOn(vol, key, version, reason); err != nil {
		r.fail("volume %s: quarantine %q v%s: %v", vol.Name, key, formatVersion(version), err)
		return false
	}
	cur, ok := r.current(key, version, vol.Name)
	if !ok {
		return true
	}
	return r.replace(vol, key, &cur, "")
}

// eachVolume runs fn for every volume in parallel.
func (r *verifyRun) eachVolume(names []string, fn func(Member)) {
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(r.view.vols[name])
		}()
	}
	wg.Wait()
}

// orphans collects vol's disagreements between its files and its index.
func (r *verifyRun) orphans(vol Member) {
	_, err := r.m.volumeStream(r.ctx, vol, fasthttp.MethodGet, "orphans", func(l streamLine) {
		if l.T != "orphan" {
			return
		}
		o := client.VerifyOrphan{Volume: vol.Name, Path: l.Path, Kind: l.Kind, Key: l.Key, Version: l.Version, Error: l.Error}
		if r.repair && l.Kind == store.MissingFile.String() && l.Key != "" {
			if ver, err := parseVersion([]byte(l.Version)); err == nil {
				o.Repaired = r.fixBad(vol, []byte(l.Key), ver, "verify: indexed but its file is missing")
			}
		}
		r.mu.Lock()
		r.rep.Counts.Orphans++
		if o.Repaired {
			r.rep.Repaired.Orphans++
		}
		if len(r.rep.Orphans) < client.VerifyLimit {
			r.rep.Orphans = append(r.rep.Orphans, o)
		}
		r.mu.Unlock()
	})
	if err != nil {
		r.volumeFailed(vol.Name, "orphan walk", err)
	}
}

// scrub has vol read every version it holds and handles what is bad.
func (r *verifyRun) scrub(vol Member) {
	done, err := r.m.volumeStream(r.ctx, vol, fasthttp.MethodPost, "scrub", func(l streamLine) {
		if l.T != "bad" {
			return
		}
		if !l.Corrupt {
			r.fail("volume %s: reading %q v%s: %s (an I/O error, not proof of corruption; checked again next time)", vol.Name, l.Key, l.Version, l.Error)
			return
		}
		f := client.VerifyFinding{Key: l.Key, Version: l.Version, Volume: vol.Name, Error: l.Error}
		if r.repair {
			if ver, err := parseVersion([]byte(l.Version)); err == nil {
				f.Repaired = r.fixBad(vol, []byte(l.Key), ver, "verify --deep: "+l.Error)
			}
		}
		r.add(&r.rep.Corrupt, countCorrupt, f)
	})
	r.mu.Lock()
	v := r.rep.Volumes[vol.Name]
	v.ScrubbedFiles, v.ScrubbedBytes = done.Files, done.Bytes
	r.mu.Unlock()
	if err != nil {
		r.volumeFailed(vol.Name, "deep scrub", err)
	}
}
