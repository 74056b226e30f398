package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/store"
)

// The volume's side of bit-rot detection. A background loop re-reads every
// value on disk once per ScrubInterval, at ScrubRate, with store.Scrub. A
// copy found corrupt is quarantined at once (the volume never serves it
// again: it answers 404 for that version) and reported to the master with
// POST /_kvdb/lost/KEY?v=VERSION&vol=NAME, so that the master drops the
// copy from the key's replicas and makes a new one from a healthy replica.
// A report the master does not take (it is down) is kept in memory and
// retried; `kvdb verify` is the backstop for reports lost with a restart.
//
// The master's verify also uses four internal endpoints served here:
//
//	GET  /_kvdb/check/KEY?v=VER       this volume's index entry of one version
//	POST /_kvdb/quarantine/KEY?v=VER  take one version out of service
//	POST /_kvdb/scrub                 scrub every version now, unthrottled
//	GET  /_kvdb/orphans               store.Orphans: files and index disagreeing
//
// The last two answer with newline-delimited JSON (see streamLine) and a
// keepalive line every second, so that a pass longer than the idle timeout
// of the connection is not cut.

const (
	// scrubStateFile (in the data directory) keeps the position of an
	// interrupted pass and when the last one finished, so a restart neither
	// starts over nor scrubs again at once.
	scrubStateFile = "SCRUB"
	// lostRetry is how often reports the master has not taken are retried.
	lostRetry = 5 * time.Second
	// maxLostQueue bounds the reports kept for the master; beyond it they
	// are dropped (logged) and left to `kvdb verify`.
	maxLostQueue = 10000
	// scrubRetry is how long a pass that failed (not stopped) waits before
	// it resumes.
	scrubRetry = time.Minute
)

// scrubState is the volume's background scrub and its queue of reports.
type scrubState struct {
	kick     chan struct{} // starts a pass now
	lostKick chan struct{} // sends the queued reports now
	passes   atomic.Int64  // completed passes, for tests and logs

	mu   sync.Mutex
	lost []lostReport // oldest first
}

// lostReport is one quarantined copy the master has not been told about.
type lostReport struct {
	key     []byte
	version uint64
}

// scrubProgress is what scrubStateFile holds.
type scrubProgress struct {
	// Last is the hex position of an interrupted pass (store.ScrubStats
	// Last), empty when no pass is under way.
	Last string `json:"last,omitempty"`
	// Finished is when the last complete pass ended.
	Finished time.Time `json:"finished"`
}

// startScrub starts the scrub loop and the loop that sends reports, unless
// scrubbing is disabled. Called once, from NewVolume.
func (v *Volume) startScrub() {
	v.scrub.kick = make(chan struct{}, 1)
	v.scrub.lostKick = make(chan struct{}, 1)
	if v.cfg.ScrubInterval < 0 {
		return
	}
	v.wg.Add(2)
	go v.scrubLoop()
	go v.lostLoop()
}

// scrubNow starts a pass at once (or right after the running one).
func (v *Volume) scrubNow() {
	select {
	case v.scrub.kick <- struct{}{}:
	default:
	}
}

// stopContext returns a context that is cancelled when stop is closed.
func stopContext(stop <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// scrubLoop runs a scrub pass every ScrubInterval, resuming an interrupted
// one after a restart.
func (v *Volume) scrubLoop() {
	defer v.wg.Done()
	ctx, cancel := stopContext(v.stop)
	defer cancel()
	interval, rate := v.cfg.ScrubInterval, max(v.cfg.ScrubRate, 0)
	prog := v.loadScrubProgress()
	var next time.Time
	switch {
	case prog.Last != "":
		next = time.Now()
	case prog.Finished.IsZero():
		// The first pass of a new volume starts at a random point of its
		// first interval, so volumes started together do not all read
		// their disks at the same time.
		next = time.Now().Add(rand.N(interval))
	default:
		next = prog.Finished.Add(interval)
	}
	for {
		t := time.NewTimer(max(time.Until(next), 0))
		select {
		case <-v.stop:
			t.Stop()
			return
		case <-t.C:
		case <-v.scrub.kick:
			t.Stop()
		}
		start, err := hex.DecodeString(prog.Last)
		if err != nil || (store.ScrubConfig{Start: start}).Validate() != nil {
			start = nil
		}
		v.log.Info("scrub pass starting", "resume", len(start) > 0, "rate", rate)
		st, err := v.store.Scrub(ctx, store.ScrubConfig{Rate: rate, Start: start}, v.scrubFound)
		v.metrics.scrubbed(st.Files, st.Bytes, 0) // scrubFound counts the corrupt ones
		switch {
		case err == nil:
			prog = scrubProgress{Finished: time.Now()}
			next = prog.Finished.Add(interval)
			v.log.Info("scrub pass done", "files", st.Files, "bytes", st.Bytes, "bad", st.Bad, "duration", st.Duration.Round(time.Millisecond))
		case ctx.Err() != nil, errors.Is(err, store.ErrClosed):
			if st.Last != nil {
				prog.Last = hex.EncodeToString(st.Last)
			}
			v.saveScrubProgress(prog)
			return
		default:
			if st.Last != nil {
				prog.Last = hex.EncodeToString(st.Last)
			}
			next = time.Now().Add(min(scrubRetry, interval))
			v.log.Error("scrub pass failed; resuming later", "err", err, "files", st.Files)
		}
		v.saveScrubProgress(prog)
		if err == nil {
			v.scrub.passes.Add(1)
		}
	}
}

// scrubFound handles one version the background scrub found bad.
func (v *Volume) scrubFound(m store.Meta, err error) {
	if !errors.Is(err, store.ErrCorrupt) {
		// An I/O error proves nothing about the bytes; the next pass
		// looks again.
		v.log.Warn("scrub could not read a value; it is checked again next pass", "key", string(m.Key), "version", formatVersion(m.Version), "err", err)
		return
	}
	v.metrics.scrubbed(0, 0, 1)
	if qerr := v.store.Quarantine(m.Key, m.Version, "scrub: "+err.Error()); qerr != nil && !errors.Is(qerr, store.ErrNotFound) {
		v.log.Error("scrub found a corrupt value but could not quarantine it", "key", string(m.Key), "version", formatVersion(m.Version), "err", qerr)
		return
	}
	v.log.Warn("scrub found a corrupt value: quarantined, asking the master for a new copy", "key", string(m.Key), "version", formatVersion(m.Version), "err", err)
	v.scrub.mu.Lock()
	if len(v.scrub.lost) < maxLostQueue {
		v.scrub.lost = append(v.scrub.lost, lostReport{key: m.Key, version: m.Version})
	} else {
		v.log.Error("too many reports for the master queued; this one is left to kvdb verify", "key", string(m.Key), "version", formatVersion(m.Version))
	}
	v.scrub.mu.Unlock()
	select {
	case v.scrub.lostKick <- struct{}{}:
	default:
	}
}

// lostLoop sends queued reports as they come, and retries those the
// master did not take.
func (v *Volume) lostLoop() {
	defer v.wg.Done()
	runEvery(v.stop, lostRetry, v.scrub.lostKick, v.sendLost)
}

// sendLost tells the master about queued reports, oldest first, and stops
// at the first the master does not take (it is retried later).
func (v *Volume) sendLost() {
	for {
		select {
		case <-v.stop:
			return
		default:
		}
		v.scrub.mu.Lock()
		if len(v.scrub.lost) == 0 {
			v.scrub.mu.Unlock()
			return
		}
		r := v.scrub.lost[0]
		v.scrub.mu.Unlock()
		switch err := v.tellLost(r); {
		case err == nil:
		case refused(err):
			// The master refuses the report itself: sending it again
			// cannot help. `kvdb verify` finds the copy missing.
			v.log.Warn("master refused a lost-copy report", "key", string(r.key), "err", err)
		default:
			v.log.Debug("master did not take a lost-copy report; retrying later", "key", string(r.key), "err", err)
			return
		}
		v.scrub.mu.Lock()
		v.scrub.lost = v.scrub.lost[1:] // only this goroutine removes
		v.scrub.mu.Unlock()
	}
}

// refused reports whether err is the master's final no to a report (a 4xx
// status other than 429), rather than a failure worth retrying.
func refused(err error) bool {
	var es *errStatus
	return errors.As(err, &es) && es.status >= 400 && es.status < 500 && es.status != fasthttp.StatusTooManyRequests
}

// tellLost sends one report to the master found by gossip.
func (v *Volume) tellLost(r lostReport) error {
	var master string
	for _, mem := range v.gossip.snapshot() {
		if mem.Role == RoleMaster {
			master = mem.HTTP
			break
		}
	}
	if master == "" {
		return errors.New("no master in sight")
	}
	b := make([]byte, 0, 64+len(r.key)*3)
	b = append(b, "http://"...)
	b = append(b, master...)
	b = append(b, "/"+ReservedPrefix+"lost/"...)
	b = AppendEscapedKey(b, r.key)
	b = append(b, "?v="...)
	b = appendVersion(b, r.version)
	b = append(b, "&vol="...)
	b = append(b, v.name...)
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURIBytes(b)
	req.URI().DisablePathNormalizing = true
	if err := v.client.DoTimeout(req, resp, 30*time.Second); err != nil {
		return err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return withStatus(resp.StatusCode(), fmt.Errorf("master answered %d: %s", resp.StatusCode(), trimBody(resp.Body())))
	}
	return nil
}

// trimBody shortens a peer's error body for a message.
func trimBody(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(bytes.TrimSpace(b))
}

func (v *Volume) loadScrubProgress() scrubProgress {
	var p scrubProgress
	b, err := os.ReadFile(filepath.Join(v.cfg.Dir, scrubStateFile))
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		v.log.Warn("scrub state unreadable; starting afresh", "err", err)
		p = scrubProgress{}
	}
	return p
}

// saveScrubProgress writes the state file (temp file, then rename). It is
// not synced: losing it only repeats part of a pass.
func (v *Volume) saveScrubProgress(p scrubProgress) {
	b, _ := json.Marshal(p)
	path := filepath.Join(v.cfg.Dir, scrubStateFile)
	err := os.WriteFile(path+".tmp", append(b, '\n'), 0o644)
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		v.log.Warn("save scrub state", "err", err)
	}
}

// handleVerifyInternal serves the internal endpoints of the master's
// verify (see the top of this file); false when rest names none of them.
// The caller has checked the request's signature.
func (v *Volume) handleVerifyInternal(ctx *fasthttp.RequestCtx, rest []byte) bool {
	switch {
	case bytes.HasPrefix(rest, []byte("check/")):
		key, ver, ok := keyVersionArgs(ctx, rest[len("check"):])
		if !ok {
			return true
		}
		v.checkVersion(ctx, key, ver)
	case bytes.HasPrefix(rest, []byte("quarantine/")):
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
			return true
		}
		key, ver, ok := keyVersionArgs(ctx, rest[len("quarantine"):])
		if !ok {
			return true
		}
		v.quarantineVersion(ctx, key, ver)
	case string(rest) == "scrub":
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
			return true
		}
		v.streamScrub(ctx)
	case string(rest) == "orphans":
		v.streamOrphans(ctx)
	default:
		return false
	}
	return true
}

// keyVersionArgs parses "/KEY" and v=; it answers the error itself.
func keyVersionArgs(ctx *fasthttp.RequestCtx, rawKey []byte) ([]byte, uint64, bool) {
	key, err := parseStoredKey(nil, rawKey)
	if err != nil {
		replyError(ctx, err)
		return nil, 0, false
	}
	ver, err := requiredVersion(ctx)
	if err != nil {
		replyError(ctx, err)
		return nil, 0, false
	}
	return key, ver, true
}

// checkReply answers /_kvdb/check: whether the volume's index holds the
// version, and its entry if so. It is always 200 when the volume could
// tell, so that a 404 from a volume without the endpoint is never taken
// for "not held".
type checkReply struct {
	Held bool `json:"held"`
	indexEntry
}

func (v *Volume) checkVersion(ctx *fasthttp.RequestCtx, key []byte, ver uint64) {
	m, err := v.store.Get(key, ver)
	var r checkReply
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		replyStoreError(ctx, key, err)
		return
	default:
		r = checkReply{Held: true, indexEntry: indexEntry{
			Key: string(m.Key), Version: formatVersion(m.Version), Size: m.Size,
			Checksum: strconv.FormatUint(m.Checksum, 16), ModTime: m.ModTime.UnixNano(),
		}}
	}
	b, _ := json.Marshal(r)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

func (v *Volume) quarantineVersion(ctx *fasthttp.RequestCtx, key []byte, ver uint64) {
	reason := string(ctx.QueryArgs().Peek("reason"))
	if reason == "" {
		reason = "requested by the master"
	}
	err := v.store.Quarantine(key, ver, reason)
	switch {
	case errors.Is(err, store.ErrNotFound):
		replyJSON(ctx, fasthttp.StatusOK, []byte(`{"quarantined":false}`))
	case err != nil:
		replyStoreError(ctx, key, err)
	default:
		v.log.Warn("quarantined at the master's request", "key", string(key), "version", formatVersion(ver), "reason", reason)
		replyJSON(ctx, fasthttp.StatusOK, []byte(`{"quarantined":true}`))
	}
}

// streamLine is one line of the NDJSON answers of /_kvdb/scrub and
// /_kvdb/orphans. T says what it is: "bad" (a version Scrub reported),
// "orphan", "tick" (a keepalive, nothing else set) or "done" (the last
// line; Error set if the pass failed). /_kvdb/pull answers the same way.
type streamLine struct {
	T       string `json:"t"`
	Key     string `json:"key,omitempty"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
	Corrupt bool   `json:"corrupt,omitempty"` // bad: err wraps store.ErrCorrupt
	Path    string `json:"path,omitempty"`    // orphan
	Kind    string `json:"kind,omitempty"`    // orphan: "unindexed file" or "missing file"
	Files   int64  `json:"files,omitempty"`   // done (scrub): versions checked
	Bytes   int64  `json:"bytes,omitempty"`   // done (scrub): bytes read
	// done (pull): the stored copy's size and checksum (hex), or with
	// Error the HTTP status that explains it.
	Size     int64  `json:"size,omitempty"`
	Checksum string `json:"checksum,omitempty"`
	Status   int    `json:"status,omitempty"`
}

// streamLines answers with the lines run emits, then the line it returns,
// plus a tick every second. run stops when its context is done: the
// volume stops, or the master went away.
func (v *Volume) streamLines(ctx *fasthttp.RequestCtx, run func(c context.Context, emit func(streamLine)) streamLine) {
	ctx.SetContentType("application/x-ndjson")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		c, cancel := stopContext(v.stop)
		defer cancel()
		lines := make(chan streamLine, 64)
		go func() {
			defer close(lines)
			send := func(l streamLine) {
				select {
				case lines <- l:
				case <-c.Done():
				}
			}
			send(run(c, send))
		}()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		enc := json.NewEncoder(w)
		failed := false
		for {
			var err error
			select {
			case l, ok := <-lines:
				if !ok {
					if !failed {
						_ = w.Flush()
					}
					return
				}
				if failed {
					continue // drain until run has stopped
				}
				if err = enc.Encode(l); err == nil && len(lines) == 0 {
					err = w.Flush()
				}
			case <-tick.C:
				if failed {
					continue
				}
				if err = enc.Encode(streamLine{T: "tick"}); err == nil {
					err = w.Flush()
				}
			}
			if err != nil && !failed {
				failed = true
				cancel()
			}
		}
	})
}

// streamScrub checks every version now, unthrottled, and reports the bad
// ones without quarantining them: the master decides.
func (v *Volume) streamScrub(ctx *fasthttp.RequestCtx) {
	v.streamLines(ctx, func(c context.Context, emit func(streamLine)) streamLine {
		var corrupt int64
		st, err := v.store.Scrub(c, store.ScrubConfig{}, func(m store.Meta, err error) {
			l := streamLine{T: "bad", Key: string(m.Key), Version: formatVersion(m.Version), Error: err.Error(), Corrupt: errors.Is(err, store.ErrCorrupt)}
			if l.Corrupt {
				corrupt++
			}
			emit(l)
		})
		v.metrics.scrubbed(st.Files, st.Bytes, corrupt)
		done := streamLine{T: "done", Files: st.Files, Bytes: st.Bytes}
		if err != nil {
			done.Error = err.Error()
		}
		return done
	})
}

// streamOrphans reports every disagreement between the blob files and the
// index (store.Orphans).
func (v *Volume) streamOrphans(ctx *fasthttp.RequestCtx) {
	v.streamLines(ctx, func(c context.Context, emit func(streamLine)) streamLine {
		err := v.store.Orphans(c, func(o store.Orphan) bool {
			l := streamLine{T: "orphan", Path: o.Path, Kind: o.Kind.String()}
			if o.Meta.Key != nil {
				l.Key, l.Version = string(o.Meta.Key), formatVersion(o.Meta.Version)
			}
			if o.Err != nil {
				l.Error = o.Err.Error()
			}
			emit(l)
			return c.Err() == nil
		})
		done := streamLine{T: "done"}
		if err != nil {
			done.Error = err.Error()
		}
		return done
	})
}
