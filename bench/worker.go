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
	// base is the URL keys are appended to, without a trailing '/'.
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

	next int64  // number of the next new key
	live keySet // keys written and not deleted
	rows rows   // this phase's figures
}

func newWorker(ctx context.Context, cfg *Config, client *fasthttp.Client, prog *progress, id int, base, prefix string) *worker {
	return &worker{
		cfg: cfg, client: client, prog: prog, ctx: ctx, id: id,
		base: strings.TrimSuffix(base, "/"), prefix: prefix,
		req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse(),
		gbuf: make([]byte, chunkSize), rbuf: make([]byte, chunkSize), ebuf: make([]byte, chunkSize),
		rng: rand.New(rand.NewPCG(cfg.Seed, uint64(id)+1)),
	}
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
// A GET or HEAD that fails in a way worth trying again is retried as
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
		if err == nil || retries >= w.retryBudget(op) || w.ctx.Err() != nil || !w.retryable(err, n) {
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
// reads, none for the writes (see Config.Retries for why).
func (w *worker) retryBudget(op Op) int {
	if op == OpGet || op == OpHead {
		return w.cfg.Retries
	}
	return 0
}

// retryable reports whether a read that failed with err may succeed when
// tried again: a transport error, a 5xx, or a 404 for key number n while
// the worker holds it written (a redirect to a replica that is still
// being filled can give one). Other statuses and verify mismatches are
// final.
func (w *worker) retryable(err error, n int64) bool {
	var se *statusErr
	if errors.As(err, &se) {
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

func (w *worker) url(key string) []byte {
	w.ubuf = append(append(w.ubuf[:0], w.base...), '/')
	w.ubuf = appendEscaped(w.ubuf, key)
	return w.ubuf
}

// send does w.req into w.resp. fasthttp keeps a Response's SkipBody from
// one request to the next, and sets it for a HEAD: reset it, or the GET
// after a HEAD would not read its body.
func (w *worker) send() error {
	w.resp.SkipBody = w.req.Header.IsHead()
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
	req.Reset()
	req.Header.SetMethod(fasthttp.MethodPut)
	req.SetRequestURIBytes(w.url(key))
	req.Header.SetContentType("application/octet-stream")
	w.body.reset(w.ctx, v, w.gbuf)
	req.SetBodyStream(&w.body, int(v.size))
	if err := w.send(); err != nil {
		return 0, err
	}
	defer resp.CloseBodyStream()
	if resp.StatusCode()/100 != 2 {
		return 0, statusError(resp)
	}
	w.drain()
	return v.size, nil
}

// putExpect sends a PUT with Expect: 100-continue and, when the server
// answers 307 before the body, sends the body to the Location instead.
func (w *worker) putExpect(key string, v value) (int64, error) {
	target := string(w.url(key))
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
			return 0, transportErr{err}
		}
		loc := resp.Header.Get("Location")
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode == http.StatusTemporaryRedirect && loc != "" && hop < 3 {
			target = resolveLocation(target, loc)
			continue
		}
		if resp.StatusCode/100 != 2 {
			line := msg
			if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
				line = line[:i]
			}
			return 0, &statusErr{code: resp.StatusCode, line: string(bytes.TrimSpace(line))}
		}
		return v.size, nil
	}
}

func (w *worker) delete(key string) error {
	req, resp := w.req, w.resp
	req.Reset()
	req.Header.SetMethod(fasthttp.MethodDelete)
	req.SetRequestURIBytes(w.url(key))
	if err := w.send(); err != nil {
		return err
	}
	defer resp.CloseBodyStream()
	if resp.StatusCode()/100 != 2 {
		return statusError(resp)
	}
	w.drain()
	return nil
}

// fetch sends a GET or HEAD and follows one redirect. On success the
// caller reads and closes the response body stream.
func (w *worker) fetch(method, key string) error {
	req, resp := w.req, w.resp
	req.Reset()
	req.Header.SetMethod(method)
	req.SetRequestURIBytes(w.url(key))
	if err := w.send(); err != nil {
		return err
	}
	if isRedirect(resp.StatusCode()) {
		loc := resp.Header.Peek(fasthttp.HeaderLocation)
		if len(loc) == 0 {
			resp.CloseBodyStream()
			return errNoLocation
		}
		target := resolveLocation(string(w.ubuf), string(loc))
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
	if resp.StatusCode()/100 != 2 {
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
