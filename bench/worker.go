package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// Buffer sizes of a worker: one chunk of generated value for PUT bodies and
// files, one of received body, one of expected bytes for verify.
const chunkSize = 256 << 10

// worker issues one request at a time on its own keys, with its own
// buffers; a worker's memory does not grow with the value size.
type worker struct {
	cfg    *Config
	client *fasthttp.Client
	std    *http.Client // PUTs with Expect (see Config.Expect)
	prog   *progress
	ctx    context.Context
	id     int
	// masters are the servers of Config.URL, shared by the workers; nil
	// for the baseline, which uses base.
	masters *masterSet
	// mi is the index in masters of the master of the current attempt.
	mi int
	// base is the URL (or, for the baseline's files, the directory) keys
	// are appended to when masters is nil, without a trailing '/'.
	base string
	// prefix starts every key; the key is prefix + id + "-" + number.
	prefix string

	req  *fasthttp.Request
	resp *fasthttp.Response
	body valueReader
	gbuf []byte // generated chunks (PUT bodies, files)
	rbuf []byte // received chunks (GET bodies)
	ebuf []byte // expected chunks (verify)
	ubuf []byte // URL being built
	rng  *rand.Rand
	s3   *s3Signer // with Config.S3

	next int64  // number of the next new key
	live keySet // keys written and not deleted
	rows rows   // this phase's figures
}

func newWorker(ctx context.Context, cfg *Config, client *fasthttp.Client, prog *progress, id int, masters *masterSet, base, prefix string) *worker {
	return &worker{
		cfg: cfg, client: client, prog: prog, ctx: ctx, id: id,
		masters: masters, base: strings.TrimSuffix(base, "/"), prefix: prefix,
		req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse(),
		gbuf: make([]byte, chunkSize), rbuf: make([]byte, chunkSize), ebuf: make([]byte, chunkSize),
		rng: rand.New(rand.NewPCG(cfg.Seed, uint64(id)+1)),
		s3:  s3SignerFor(cfg),
	}
}

// s3SignerFor is a worker's signer for an S3 run (nil otherwise).
func s3SignerFor(cfg *Config) *s3Signer {
	if cfg.S3 == nil {
		return nil
	}
	return newS3Signer(*cfg.S3)
}

func (w *worker) release() {
	w.resp.CloseBodyStream()
	fasthttp.ReleaseRequest(w.req)
	fasthttp.ReleaseResponse(w.resp)
	w.req, w.resp = nil, nil
}

func (w *worker) key(n int64) string {
	return w.prefix + strconv.Itoa(w.id) + "-" + strconv.FormatInt(n, 10)
}

func (w *worker) newKey() int64 {
	n := w.next
	w.next++
	return n
}

// do runs op on key number n, records it under row, and returns its error.
// An operation that fails in a way worth trying again is retried as
// Config.Retries says; its latency spans every attempt and wait, as a
// client would see it. An operation cut short by the context is not
// recorded.
func (w *worker) do(row string, op Op, n int64) error {
	key := w.key(n)
	v := newValue(w.cfg.Seed, key, w.cfg.Size)
	start := time.Now()
	var moved int64
	var err error
	var retries int
	var retryErr error // the first error that led to a retry
	var retryAt time.Time
	for {
		at := time.Now()
		moved, err = w.attempt(op, key, v)
		var me masterErr
		if w.masters != nil && errors.As(err, &me) {
			w.masters.failed(w.mi)
		}
		if err == nil || retries >= w.retryBudget(op) || w.ctx.Err() != nil || !w.retryable(op, err, n) {
			break
		}
		if retryErr == nil {
			retryErr, retryAt = err, at
		}
		if !w.wait(retryWait(retries)) {
			break
		}
		retries++
	}
	d := time.Since(start)
	if err != nil && w.ctx.Err() != nil {
		return err
	}
	var se *statusErr
	if op == OpDelete && retries > 0 && errors.As(err, &se) && se.code == fasthttp.StatusNotFound {
		// The worker's own key, gone after an attempt that may have
		// deleted it: that attempt did (see Config.Retries).
		err = nil
	}
	if err != nil {
		switch retries {
		case 0:
			err = fmt.Errorf("%s %s: %w", opVerb(op), key, err)
		case 1:
			err = fmt.Errorf("%s %s after 1 retry: %w", opVerb(op), key, err)
		default:
			err = fmt.Errorf("%s %s after %d retries: %w", opVerb(op), key, retries, err)
		}
	}
	a := w.rows.get(row)
	if retryErr != nil {
		a.retryFailed(retryAt, fmt.Sprintf("%s %s: %v", opVerb(op), key, retryErr))
	}
	a.record(start, d, moved, err, retries > 0)
	w.prog.add(moved, err != nil, err == nil && retries > 0)
	return err
}

// attempt runs op once.
func (w *worker) attempt(op Op, key string, v value) (int64, error) {
	switch op {
	case OpPut:
		return w.put(key, v)
	case OpGet:
		return w.get(key, v)
	case OpHead:
		return 0, w.head(key, v)
	case OpDelete:
		return 0, w.delete(key)
	case opWriteFile:
		return w.writeFile(key, v)
	}
	return 0, fmt.Errorf("unknown op %q", op)
}

// retryBudget is how many retries op may have: Config.Retries for the
// operations on a server, none for the baseline's.
func (w *worker) retryBudget(op Op) int {
	if op == opWriteFile {
		return 0
	}
	return w.cfg.Retries
}

// retryable reports whether op, failed with err, may succeed when tried
// again, and may be (see Config.Retries): a transport error; for a read,
// a 5xx or a 404 for key number n while the worker holds it written (a
// redirect to a replica that is still being filled can give one); for a
// write, a 503. Other statuses and verify mismatches are final.
func (w *worker) retryable(op Op, err error, n int64) bool {
	var se *statusErr
	if errors.As(err, &se) {
		if op == OpPut || op == OpDelete {
			return se.code == fasthttp.StatusServiceUnavailable
		}
		return se.code >= 500 || se.code == fasthttp.StatusNotFound && w.live.has(n)
	}
	var te transportErr
	return errors.As(err, &te)
}

// wait sleeps for d and reports false if the context ended first.
func (w *worker) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// opWriteFile is the baseline's write: a file in base, fsynced.
const opWriteFile Op = "write+fsync"

func opVerb(op Op) string {
	if op == opWriteFile {
		return "write"
	}
	return strings.ToUpper(string(op))
}

// url returns the URL of key on the master of this attempt (or on base),
// and the base URL it starts with.
func (w *worker) url(key string) (string, string) {
	base := w.base
	if w.masters != nil {
		w.mi, base = w.masters.current()
	}
	w.ubuf = append(append(w.ubuf[:0], base...), '/')
	w.ubuf = appendEscaped(w.ubuf, key)
	return string(w.ubuf), base
}

// answered notes that master answered: the workers keep sending there.
func (w *worker) answered(master string) {
	if w.masters != nil {
		w.masters.answered(master)
	}
}

// maxHops bounds the redirects a request follows: a follower's to the
// leader, the leader's to a volume, and slack.
const maxHops = 4

// send does w.req into w.resp. fasthttp keeps a Response's SkipBody from
// one request to the next, and sets it for a HEAD: reset it, or the GET
// after a HEAD would not read its body.
func (w *worker) send() error {
	w.resp.SkipBody = w.req.Header.IsHead()
	if w.s3 != nil {
		payload := emptySHA256
		if w.req.Header.IsPut() {
			payload = unsignedPayload
		}
		w.s3.sign(w.req, payload)
	}
	if err := w.client.Do(w.req, w.resp); err != nil {
		return transportErr{err}
	}
	return nil
}

func (w *worker) put(key string, v value) (int64, error) {
	if w.std != nil && w.cfg.Expect >= 0 && v.size >= w.cfg.Expect {
		return w.putExpect(key, v)
	}
	req, resp := w.req, w.resp
	target, master := w.url(key)
	suffix := target[len(master):]
	for hop := 0; ; hop++ {
		req.Reset()
		req.Header.SetMethod(fasthttp.MethodPut)
		req.SetRequestURI(target)
		req.Header.SetContentType("application/octet-stream")
		w.body.reset(w.ctx, v, w.gbuf)
		req.SetBodyStream(&w.body, int(v.size))
		if err := w.send(); err != nil {
			return 0, masterErr{err}
		}
		if leader, ok := w.leaderRedirect(target, suffix, hop); ok {
			master, target = leader, leader+suffix
			continue
		}
		defer resp.CloseBodyStream()
		if st := resp.StatusCode(); st/100 != 2 {
			if st == fasthttp.StatusServiceUnavailable {
				return 0, masterErr{statusError(resp)}
			}
			return 0, statusError(resp)
		}
		w.answered(master)
		w.drain()
		return v.size, nil
	}
}

// leaderRedirect reports whether w.resp, the answer of target (a master's
// base URL followed by suffix), is a follower's redirect to the leader
// that hop may follow; the response is then done with, and the leader's
// base URL returned.
func (w *worker) leaderRedirect(target, suffix string, hop int) (string, bool) {
	resp := w.resp
	if !isRedirect(resp.StatusCode()) || hop >= maxHops {
		return "", false
	}
	loc := resp.Header.Peek(fasthttp.HeaderLocation)
	if len(loc) == 0 {
		return "", false
	}
	leader, ok := leaderOf(target, suffix, resolveLocation(target, string(loc)))
	if ok {
		w.drain()
		resp.CloseBodyStream()
	}
	return leader, ok
}

// putExpect sends a PUT with Expect: 100-continue and, when the server
// answers 307 before the body, sends the body to the Location instead: a
// volume's, or a follower's leader's, which is asked the same way.
func (w *worker) putExpect(key string, v value) (int64, error) {
	target, master := w.url(key)
	suffix := target[len(master):]
	toMaster := true
	w.body.reset(w.ctx, v, w.gbuf)
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(w.ctx, http.MethodPut, target, io.NopCloser(&w.body))
		if err != nil {
			return 0, err
		}
		req.ContentLength = v.size
		req.Header.Set("Expect", "100-continue")
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := w.std.Do(req)
		if err != nil {
			if toMaster {
				return 0, masterErr{transportErr{err}}
			}
			return 0, transportErr{err}
		}
		loc := resp.Header.Get("Location")
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode == http.StatusTemporaryRedirect && loc != "" && hop < maxHops {
			next := resolveLocation(target, loc)
			if leader, ok := leaderOf(target, suffix, next); ok && toMaster {
				master = leader
			} else {
				if toMaster {
					w.answered(master)
				}
				toMaster = false
			}
			target = next
			// Sent again from its first byte, should the body have gone
			// with the request that was redirected.
			w.body.reset(w.ctx, v, w.gbuf)
			continue
		}
		if resp.StatusCode/100 != 2 {
			line := msg
			if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
				line = line[:i]
			}
			err := &statusErr{code: resp.StatusCode, line: string(bytes.TrimSpace(line))}
			if toMaster && resp.StatusCode == http.StatusServiceUnavailable {
				return 0, masterErr{err}
			}
			return 0, err
		}
		if toMaster {
			w.answered(master)
		}
		return v.size, nil
	}
}

func (w *worker) delete(key string) error {
	req, resp := w.req, w.resp
	target, master := w.url(key)
	suffix := target[len(master):]
	for hop := 0; ; hop++ {
		req.Reset()
		req.Header.SetMethod(fasthttp.MethodDelete)
		req.SetRequestURI(target)
		if err := w.send(); err != nil {
			return masterErr{err}
		}
		if leader, ok := w.leaderRedirect(target, suffix, hop); ok {
			master, target = leader, leader+suffix
			continue
		}
		defer resp.CloseBodyStream()
		if st := resp.StatusCode(); st/100 != 2 {
			if st == fasthttp.StatusServiceUnavailable {
				return masterErr{statusError(resp)}
			}
			return statusError(resp)
		}
		w.answered(master)
		w.drain()
		return nil
	}
}

// fetch sends a GET or HEAD, follows a follower's redirect to the leader,
// and then one redirect, to a volume. On success the caller reads and
// closes the response body stream.
func (w *worker) fetch(method, key string) error {
	req, resp := w.req, w.resp
	target, master := w.url(key)
	suffix := target[len(master):]
	for hop := 0; ; hop++ {
		req.Reset()
		req.Header.SetMethod(method)
		req.SetRequestURI(target)
		if err := w.send(); err != nil {
			return masterErr{err}
		}
		if leader, ok := w.leaderRedirect(target, suffix, hop); ok {
			master, target = leader, leader+suffix
			continue
		}
		break
	}
	st := resp.StatusCode()
	if st == fasthttp.StatusServiceUnavailable {
		err := statusError(resp)
		resp.CloseBodyStream()
		return masterErr{err}
	}
	w.answered(master)
	if isRedirect(st) {
		loc := resp.Header.Peek(fasthttp.HeaderLocation)
		if len(loc) == 0 {
			resp.CloseBodyStream()
			return errNoLocation
		}
		target := resolveLocation(target, string(loc))
		w.drain()
		resp.CloseBodyStream()
		req.Reset()
		req.Header.SetMethod(method)
		req.SetRequestURI(target)
		if err := w.send(); err != nil {
			return fmt.Errorf("redirected to %s: %w", target, err)
		}
		if st := resp.StatusCode(); st/100 != 2 {
			err := statusError(resp)
			resp.CloseBodyStream()
			return fmt.Errorf("redirected to %s: %w", target, err)
		}
		return nil
	}
	if st/100 != 2 {
		err := statusError(resp)
		resp.CloseBodyStream()
		return err
	}
	return nil
}

func (w *worker) get(key string, v value) (int64, error) {
	if err := w.fetch(fasthttp.MethodGet, key); err != nil {
		return 0, err
	}
	resp := w.resp
	defer resp.CloseBodyStream()
	if st := resp.StatusCode(); st != fasthttp.StatusOK {
		return 0, fmt.Errorf("status %d, want 200", st)
	}
	body := resp.BodyStream()
	if body == nil {
		// Not streamed (fasthttp buffered it): read the buffer.
		body = &byteReader{b: resp.Body()}
	}
	chk := checker{v: v, exp: w.ebuf}
	var n int64
	for {
		m, err := body.Read(w.rbuf)
		if m > 0 {
			if w.cfg.Verify {
				if err := chk.check(w.rbuf[:m]); err != nil {
					return n, err
				}
			}
			n += int64(m)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, fmt.Errorf("after %d bytes: %w", n, transportErr{err})
		}
		if err := w.ctx.Err(); err != nil {
			return n, err
		}
	}
	if w.cfg.Verify {
		if err := chk.done(); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (w *worker) head(key string, v value) error {
	if err := w.fetch(fasthttp.MethodHead, key); err != nil {
		return err
	}
	defer w.resp.CloseBodyStream()
	if cl := w.resp.Header.ContentLength(); w.cfg.Verify && int64(cl) != v.size {
		return fmt.Errorf("verify: Content-Length %d, %d bytes were put", cl, v.size)
	}
	return nil
}

// drain reads a small response body so the connection can be reused; a
// large one is left for CloseBodyStream, which closes the connection.
func (w *worker) drain() {
	if s := w.resp.BodyStream(); s != nil && w.resp.Header.ContentLength() >= 0 && w.resp.Header.ContentLength() <= 64<<10 {
		_, _ = io.CopyBuffer(io.Discard, s, w.rbuf)
	}
}

// writeFile is the baseline's PUT: the value to a temporary file in
// w.base, fsync, close, rename, as a store would do it.
func (w *worker) writeFile(name string, v value) (int64, error) {
	f, err := os.CreateTemp(w.base, ".tmp-*")
	if err != nil {
		return 0, err
	}
	w.body.reset(w.ctx, v, w.gbuf)
	_, err = w.body.WriteTo(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(w.base, name))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return 0, err
	}
	return v.size, nil
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// keySet holds key numbers, with removal and random choice in O(1).
type keySet struct {
	nums []int64
	at   map[int64]int
}

func (s *keySet) add(n int64) {
	if s.at == nil {
		s.at = map[int64]int{}
	}
	s.at[n] = len(s.nums)
	s.nums = append(s.nums, n)
}

func (s *keySet) remove(n int64) {
	i, ok := s.at[n]
	if !ok {
		return
	}
	last := s.nums[len(s.nums)-1]
	s.nums[i] = last
	s.at[last] = i
	s.nums = s.nums[:len(s.nums)-1]
	delete(s.at, n)
}

func (s *keySet) len() int { return len(s.nums) }

func (s *keySet) has(n int64) bool {
	_, ok := s.at[n]
	return ok
}

func (s *keySet) random(r *rand.Rand) int64 { return s.nums[r.IntN(len(s.nums))] }
