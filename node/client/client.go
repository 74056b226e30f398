package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
)

// DefaultURL is the master a Client talks to when ClientConfig.URL is empty.
const DefaultURL = "http://localhost:3000"

// Errors a Client returns, to be checked with errors.Is.
var (
	// ErrNotFound: the key holds no value (the server answered 404).
	ErrNotFound = errors.New("key not found")
	// ErrExists: a create-only write found the key already holding a value
	// (409 or 412).
	ErrExists = errors.New("key already exists")
	// ErrChecksum: the bytes received, or the bytes the server stored, do
	// not match the checksum the server reported in the ETag.
	ErrChecksum = errors.New("value checksum mismatch")
	// ErrUncertain: a write failed in a way that leaves its outcome
	// unknown (its answer was lost, or a master answered 503 once it had
	// the request), and the client could not safely send it again. The
	// write may or may not have taken effect: read the key to know.
	ErrUncertain = errors.New("may or may not have taken effect")
)

// ClientConfig configures a Client. The zero value talks to DefaultURL.
type ClientConfig struct {
	// URL is the master's base URL, such as http://localhost:3000, or
	// several masters' separated by commas
	// (http://a:3000,http://b:3000,http://c:3000): the client then fails
	// over between them (see the package doc). A URL without a scheme is
	// taken as http://. A path is kept as a prefix of every request (for a
	// master behind a reverse proxy).
	URL string
	// FailoverTimeout bounds how long one operation keeps trying masters
	// after the first failed: a master that cannot be reached or answers
	// 503 is followed by the next, with a backoff of 50 ms doubling to at
	// most 1 s after each round over all of them. It applies only when
	// there is more than one master to try (several in URL, or a leader
	// learned from a redirect): a client of one master tries once, as a
	// failover could not help. The operation's ctx also ends it. Default
	// 15 s, room for an election.
	FailoverTimeout time.Duration
	// DialTimeout bounds connecting to a node. Default 5 s.
	DialTimeout time.Duration
	// IdleTimeout fails a request when no byte moves for this long, in
	// either direction. It is not a bound on the whole request: a 1 GiB
	// value that keeps moving is never cut. It also bounds the wait for the
	// answer to a write, which comes only once every replica has the value
	// on disk, so keep it well above a large value's fsync time. Default 60 s.
	IdleTimeout time.Duration
	// MaxRedirects is how many redirects a GET follows (the master sends
	// one, to a volume). Default 5.
	MaxRedirects int
	// UserAgent is sent with every request. Default "kvdb-client".
	UserAgent string
	// ExpectThreshold is the body size from which Put sends Expect:
	// 100-continue: the master then answers before the body is sent,
	// refusing the write or redirecting it to a volume (307), so the value
	// goes straight to the volumes. Bodies of unknown size always do.
	// Default 1 MiB; -1: never.
	ExpectThreshold int64
	// Token is the API key sent to the master as "Authorization: Bearer
	// TOKEN", when the master requires one. It is not sent on to the
	// volume a read is redirected to (the master signs the redirect).
	Token string
}

func (c ClientConfig) withDefaults() ClientConfig {
	if strings.TrimSpace(c.URL) == "" {
		c.URL = DefaultURL
	}
	if c.FailoverTimeout <= 0 {
		c.FailoverTimeout = 15 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxRedirects <= 0 {
		c.MaxRedirects = 5
	}
	if c.UserAgent == "" {
		c.UserAgent = "kvdb-client"
	}
	if c.ExpectThreshold == 0 {
		c.ExpectThreshold = 1 << 20
	}
	return c
}

// Validate reports whether the configuration can be used.
func (c ClientConfig) Validate() error {
	if strings.TrimSpace(c.URL) != "" {
		for part := range strings.SplitSeq(c.URL, ",") {
			if strings.TrimSpace(part) == "" {
				return fmt.Errorf("client: URL %q: an empty master between commas", c.URL)
			}
		}
	}
	for _, m := range parseURLs(c.withDefaults().URL) {
		if err := validateURL(m); err != nil {
			return err
		}
	}
	return nil
}

// validateURL checks one master's base URL.
func validateURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("client: URL %q: %w", s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("client: URL %q: scheme must be http or https", s)
	case u.Host == "":
		return fmt.Errorf("client: URL %q: no host", s)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("client: URL %q: want only scheme, host and path", s)
	}
	return nil
}

// Client speaks the client HTTP API of a kvdb master: it writes values
// (streamed, never held in memory), reads them by following the master's
// redirect to a volume, and lists, inspects and deletes keys. Values are
// checked against the checksum the server reports, both ways. Given
// several masters, it fails over between them (see the package doc).
//
// A Client is safe for concurrent use. Close releases its idle connections.
type Client struct {
	cfg ClientConfig
	// masters are the configured masters' base URLs, no trailing '/'.
	masters []string
	// leader is the base URL of the master that answered last, which
	// operations try first; nil until one answered.
	leader atomic.Pointer[string]
	hc     *fasthttp.Client
	// std sends the writes that carry Expect: 100-continue (fasthttp's
	// client does not wait for the interim answer; net/http does).
	std *http.Client
}

// NewClient returns a client for the master (or masters) at cfg.URL. It
// does not connect: the first request does.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	dial := dialer(cfg.DialTimeout, cfg.IdleTimeout)
	std := &http.Client{
		Transport: &http.Transport{
			DialContext:           dial,
			ExpectContinueTimeout: cfg.IdleTimeout,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       10 * time.Second,
			DisableCompression:    true,
			WriteBufferSize:       64 << 10,
		},
		// A 307 is followed by hand: the body is sent once, to the volume.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Client{
		cfg:     cfg,
		masters: parseURLs(cfg.URL),
		std:     std,
		hc: &fasthttp.Client{
			Name:                cfg.UserAgent,
			Dial:                func(addr string) (net.Conn, error) { return dial(context.Background(), "tcp", addr) },
			ReadBufferSize:      16 << 10,
			WriteBufferSize:     64 << 10,
			MaxIdleConnDuration: 10 * time.Second,
			// Bodies are streamed both ways; a GET's body stream must be
			// closed (ValueReader.Close does).
			StreamResponseBody: true,
			// Keys are escaped here and must reach the server byte for byte.
			DisablePathNormalizing: true,
		},
	}, nil
}

// Close releases idle connections. It is safe to call more than once; the
// Client must not be used afterwards.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	c.std.CloseIdleConnections()
	return nil
}

// URL returns the base URL of the master the next operation tries first:
// the one that answered last (the leader, when there are several), at
// first the first one configured.
func (c *Client) URL() string { return c.candidates()[0] }

// Masters returns the configured masters' base URLs, in order.
func (c *Client) Masters() []string { return append([]string(nil), c.masters...) }

// StatusError is an answer with an unexpected HTTP status.
type StatusError struct {
	Op     string // "put", "get", "stat", "delete", "list", "cluster"
	Key    string // the key, or the prefix for "list"; empty for "cluster"
	Status int
	// Reason is the first line of the server's answer, when it gave one.
	Reason string
}

func (e *StatusError) Error() string {
	reason := e.Reason
	switch {
	case reason == "" && e.Is(ErrNotFound):
		reason = ErrNotFound.Error()
	case reason == "":
		reason = strings.ToLower(http.StatusText(e.Status))
	}
	if e.Op == "cluster" {
		return fmt.Sprintf("%s: %s (%d)", e.Op, reason, e.Status)
	}
	return fmt.Sprintf("%s %q: %s (%d)", e.Op, e.Key, reason, e.Status)
}

// Is makes a 404 for a key match ErrNotFound, and a 409 or 412 for a write
// match ErrExists.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == fasthttp.StatusNotFound && e.Op != "list" && e.Op != "cluster"
	case ErrExists:
		return e.Op == "put" && (e.Status == fasthttp.StatusConflict || e.Status == fasthttp.StatusPreconditionFailed)
	}
	return false
}

// Info describes a stored value.
type Info struct {
	// Size in bytes.
	Size int64
	// ETag is the value's entity tag, quoted, as the server sent it.
	ETag string
	// LastModified is when the value was written; zero when not reported.
	LastModified time.Time
}

// PutOptions adjusts a write.
type PutOptions struct {
	// CreateOnly fails the write with ErrExists when the key already holds
	// a value (If-None-Match: *), instead of replacing it.
	CreateOnly bool
}

// PutResult is the outcome of a write.
type PutResult struct {
	// ETag of the stored value, as the server sent it.
	ETag string
	// Created is true when the key held no value before, false when the
	// write replaced one.
	Created bool
	// Size is how many bytes were sent and stored.
	Size int64
}

// Put stores the bytes of r under key and returns once every replica has
// them on disk. size is r's length, sent as Content-Length; -1 sends the
// body chunked (for a pipe or stdin). A reader that ends before size bytes
// fails the write, and nothing is stored. r is streamed, never held whole.
//
// ctx cancels the upload while the body is sent; after that, the wait for
// the answer is bounded by IdleTimeout.
//
// With opts.CreateOnly an existing key fails with ErrExists. The key is
// looked up first, so that the usual conflict is reported before the body
// is sent: a server that refuses a write before reading a large body closes
// the connection, and the client would see a reset instead of the reason.
//
// With several masters the write may be sent more than once (see the
// package doc): to send it again r must be an io.Seeker (an *os.File, a
// bytes.Reader), rewound to where it was when Put was called. A write
// that may have taken effect and cannot be sent again fails with
// ErrUncertain. After a retry, Created reports the last attempt's answer.
func (c *Client) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (PutResult, error) {
	if err := c.checkKey("put", key); err != nil {
		return PutResult{}, err
	}
	if opts.CreateOnly {
		_, err := c.Stat(ctx, key)
		switch {
		case err == nil:
			return PutResult{}, fmt.Errorf("put %q: %w", key, ErrExists)
		case !errors.Is(err, ErrNotFound):
			return PutResult{}, fmt.Errorf("put %q: check for an existing value: %w", key, err)
		}
	}
	if size < 0 {
		size = -1
	}
	body := newPutBody(ctx, r, size)
	expect := c.cfg.ExpectThreshold >= 0 && (size < 0 || size >= c.cfg.ExpectThreshold)
	if c.cfg.ExpectThreshold >= 0 && body.seeker == nil && len(c.candidates()) > 1 {
		// A follower's redirect then comes before the body is sent, which
		// could not be sent to the leader a second time.
		expect = true
	}
	var res PutResult
	err := c.failover(ctx, func(err error) error {
		switch {
		case opts.CreateOnly:
			// A second attempt could find the value the first one stored,
			// and report ErrExists for a write that succeeded.
			return fmt.Errorf("%w; a create-only write is not sent again, so it %w", err, ErrUncertain)
		case !body.canResend():
			return fmt.Errorf("%w; it is not sent again, as the body was read and cannot be rewound (not an io.Seeker), so it %w", err, ErrUncertain)
		}
		return nil
	}, func(master string) error {
		var err error
		if expect {
			res, err = c.putExpect(ctx, master, key, body, opts)
		} else {
			res, err = c.putOnce(master, key, body, opts)
		}
		return err
	})
	return res, err
}

// putOnce sends a write, body and all, to master, and follows a follower's
// redirect to the leader (the body then goes again, rewound).
func (c *Client) putOnce(master, key string, body *putBody, opts PutOptions) (PutResult, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	suffix := keyPath(key)
	target := master + suffix
	for hop := 0; ; hop++ {
		if err := body.rewind(); err != nil {
			return PutResult{}, fmt.Errorf("put %q: redirected to %s: %w", key, target, err)
		}
		req.Reset()
		req.Header.SetMethod(fasthttp.MethodPut)
		req.SetRequestURI(target)
		c.authorize(req)
		req.Header.SetContentType("application/octet-stream")
		if opts.CreateOnly {
			req.Header.Set("If-None-Match", "*")
		}
		req.SetBodyStream(body, int(body.size))
		resp.Reset()
		err := c.hc.Do(req, resp)
		if err != nil {
			resp.CloseBodyStream()
			if body.err != nil {
				return PutResult{}, fmt.Errorf("put %q: %w", key, body.err)
			}
			// A master that refuses a write before reading the body (not
			// enough volumes, say) closes the connection under a large
			// body, and fasthttp reports the cut rather than the answer.
			// Its readiness tells the usual reason.
			if !isDial(err) {
				if why := c.notReady(master); why != "" {
					err = fmt.Errorf("%w (the master is not ready: %s)", err, why)
				}
			}
			return PutResult{}, &masterErr{err: fmt.Errorf("put %q: %w", key, err), maybe: body.sent(err)}
		}
		st := resp.StatusCode()
		if isRedirect(st) && hop < c.cfg.MaxRedirects {
			if leader, ok := c.leaderRedirect(target, suffix, resp); ok {
				drain(resp)
				resp.CloseBodyStream()
				master, target = leader, leader+suffix
				continue
			}
		}
		defer resp.CloseBodyStream()
		if st == fasthttp.StatusServiceUnavailable {
			return PutResult{}, &masterErr{err: statusError(resp, "put", key), maybe: body.sent(nil)}
		}
		c.answered(master)
		if st != fasthttp.StatusOK && st != fasthttp.StatusCreated {
			return PutResult{}, statusError(resp, "put", key)
		}
		drain(resp)
		res := PutResult{ETag: string(resp.Header.Peek(fasthttp.HeaderETag)), Created: st == fasthttp.StatusCreated, Size: body.n}
		return res, body.check(key, res.ETag)
	}
}

// putExpect sends a write with Expect: 100-continue. A master answers
// before the body is sent: with its refusal, with 100 Continue (the body
// then goes to the master), with 307 to the volume that takes the body and
// coordinates the write (the body then goes there), or, a follower, with
// 307 to the leader (asked the same way).
func (c *Client) putExpect(ctx context.Context, master, key string, body *putBody, opts PutOptions) (PutResult, error) {
	suffix := keyPath(key)
	target := master + suffix
	toMaster := true
	for hop := 0; ; hop++ {
		if err := body.rewind(); err != nil {
			return PutResult{}, fmt.Errorf("put %q: redirected to %s: %w", key, target, err)
		}
		sent := &sentBody{b: body, closed: make(chan struct{})}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, target, sent)
		if err != nil {
			return PutResult{}, fmt.Errorf("put %q: %w", key, err)
		}
		req.ContentLength = body.size
		if body.size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Expect", "100-continue")
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("User-Agent", c.cfg.UserAgent)
		if toMaster {
			if c.cfg.Token != "" {
				req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
			}
			if opts.CreateOnly {
				req.Header.Set("If-None-Match", "*")
			}
		}
		resp, err := c.std.Do(req)
		if err != nil {
			sent.wait(c.cfg.IdleTimeout)
			if body.err != nil {
				return PutResult{}, fmt.Errorf("put %q: %w", key, body.err)
			}
			err = fmt.Errorf("put %q: %w", key, err)
			if toMaster {
				return PutResult{}, &masterErr{err: err, maybe: body.sent(err)}
			}
			return PutResult{}, err
		}
		loc := resp.Header.Get("Location")
		if (resp.StatusCode == http.StatusTemporaryRedirect || resp.StatusCode == http.StatusPermanentRedirect) && loc != "" && hop < c.cfg.MaxRedirects {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			next, err := resolveURL(target, loc)
			if err != nil {
				return PutResult{}, fmt.Errorf("put %q: redirect: %w", key, err)
			}
			if leader, ok := leaderOf(target, suffix, next); ok && toMaster {
				master = leader
			} else {
				if toMaster {
					c.answered(master)
				}
				toMaster = false
			}
			target = next
			sent.wait(c.cfg.IdleTimeout)
			continue
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode == http.StatusServiceUnavailable {
			// From the master, or from the volume coordinating the write
			// when it could not commit it (leadership changed, say).
			sent.wait(c.cfg.IdleTimeout)
			return PutResult{}, &masterErr{err: statusErrorOf(resp.StatusCode, msg, "put", key), maybe: body.sent(nil)}
		}
		if toMaster {
			c.answered(master)
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			return PutResult{}, statusErrorOf(resp.StatusCode, msg, "put", key)
		}
		sent.wait(c.cfg.IdleTimeout)
		res := PutResult{ETag: resp.Header.Get("ETag"), Created: resp.StatusCode == http.StatusCreated, Size: body.n}
		return res, body.check(key, res.ETag)
	}
}

// sentBody is a write's body as one net/http request sends it: closed
// tells when the transport is done with it, so that it can be rewound
// for the next request without a race.
type sentBody struct {
	b      *putBody
	once   sync.Once
	closed chan struct{}
}

func (s *sentBody) Read(p []byte) (int, error) { return s.b.Read(p) }

func (s *sentBody) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// wait waits, at most d, for the transport to be done with the body, as
// it must be before the body's state is read or the body rewound. A
// request without a body (http.NoBody) leaves nothing to wait for.
func (s *sentBody) wait(d time.Duration) {
	if s.b.size == 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.closed:
	case <-t.C:
	}
}

// putBody is a write's body: it stops at size, fails on a short reader or
// a cancelled ctx, and hashes what it passes on. When its reader can seek,
// it can be rewound for another attempt.
type putBody struct {
	ctx  context.Context
	r    io.Reader
	size int64 // -1: unknown
	n    int64
	h    *xxhash.Digest
	err  error // why the body failed, as fasthttp may report it otherwise
	// reads counts Read calls since the last rewind: none, and the body
	// was not sent.
	reads int
	// seeker is r when it can seek (nil otherwise), and start the offset
	// it had when the write began.
	seeker io.Seeker
	start  int64
}

func newPutBody(ctx context.Context, r io.Reader, size int64) *putBody {
	b := &putBody{ctx: ctx, r: r, size: size, h: xxhash.New()}
	if s, ok := r.(io.Seeker); ok {
		// An *os.File on a pipe is a Seeker whose Seek fails.
		if off, err := s.Seek(0, io.SeekCurrent); err == nil {
			b.seeker, b.start = s, off
		}
	}
	return b
}

// errNoRewind is a body that must be sent again and cannot be.
var errNoRewind = errors.New("the body was already sent, and its reader cannot be rewound to send it again (it is not an io.Seeker)")

// canResend reports whether the body can be sent (again).
func (b *putBody) canResend() bool { return b.reads == 0 || b.size == 0 || b.seeker != nil }

// rewind makes the body new again after an attempt read some of it.
func (b *putBody) rewind() error {
	switch {
	case b.reads == 0:
		return nil
	case b.size == 0:
		// Nothing to send again.
	case b.seeker == nil:
		return errNoRewind
	default:
		if _, err := b.seeker.Seek(b.start, io.SeekStart); err != nil {
			return fmt.Errorf("rewind the body: %w", err)
		}
	}
	b.n, b.err, b.reads = 0, nil, 0
	b.h.Reset()
	return nil
}

// sent reports whether the request may have reached the server whole,
// when the attempt ended with err (nil: the server answered): a body was
// read from, or there is none to send and the connection was made.
func (b *putBody) sent(err error) bool {
	if err != nil && isDial(err) {
		return false
	}
	return b.reads > 0 || b.size == 0
}

// check compares the stored value's ETag with what was sent.
func (b *putBody) check(key, etag string) error {
	if sum, ok := parseETag(etag); ok && sum != b.h.Sum64() {
		return fmt.Errorf("put %q: %w: sent %d bytes with checksum %016x, the server stored ETag %s",
			key, ErrChecksum, b.n, b.h.Sum64(), etag)
	}
	return nil
}

func (b *putBody) Read(p []byte) (int, error) {
	b.reads++
	if err := b.ctx.Err(); err != nil {
		b.err = err
		return 0, err
	}
	if b.size >= 0 {
		if b.n >= b.size {
			return 0, io.EOF
		}
		if rest := b.size - b.n; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	_, _ = b.h.Write(p[:n])
	if err == io.EOF && b.size >= 0 && b.n < b.size {
		err = fmt.Errorf("body ended after %d of %d bytes: %w", b.n, b.size, io.ErrUnexpectedEOF)
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// WriteTo lets fasthttp hand the connection large pieces at a time instead
// of its small copy buffer.
func (b *putBody) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, err := b.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// ValueReader streams a value from the volume that serves it. Read
// returns io.EOF only once the whole value arrived and matched its
// checksum: a cut connection is io.ErrUnexpectedEOF, corrupt bytes
// ErrChecksum. Close must be called.
type ValueReader struct {
	Info
	key    string
	ctx    context.Context
	resp   *fasthttp.Response
	body   io.Reader
	stop   func() bool // stops the ctx watch
	n      int64
	h      *xxhash.Digest
	sum    uint64
	hasSum bool
	err    error
}

// Get starts reading key's value: it asks the master, follows its redirect
// to a volume and returns once the volume answered with the value's
// headers. Errors: ErrNotFound, a *StatusError, or a network error.
//
// Cancelling ctx interrupts the transfer: a Read in progress fails.
func (c *Client) Get(ctx context.Context, key string) (*ValueReader, error) {
	if err := c.checkKey("get", key); err != nil {
		return nil, err
	}
	var v *ValueReader
	err := c.failover(ctx, nil, func(master string) error {
		var err error
		v, err = c.getOnce(ctx, master, key)
		return err
	})
	return v, err
}

// getOnce asks master for key and follows the redirects: a follower's to
// the leader, the master's to a volume.
func (c *Client) getOnce(ctx context.Context, master, key string) (*ValueReader, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	suffix := keyPath(key)
	target := master + suffix
	atMaster := true
	// indexTag is the ETag of the master's redirect: the checksum its index
	// holds, which the bytes must match (a replica's own ETag only says
	// what that replica has).
	var indexTag string
	retries := 0
	for hop := 0; ; hop++ {
		if err := ctx.Err(); err != nil {
			fasthttp.ReleaseResponse(resp)
			return nil, fmt.Errorf("get %q: %w", key, err)
		}
		req.Reset()
		req.Header.SetMethod(fasthttp.MethodGet)
		req.SetRequestURI(target)
		if atMaster {
			c.authorize(req)
		}
		resp.Reset()
		if err := c.hc.Do(req, resp); err != nil {
			resp.CloseBodyStream()
			if !atMaster && retries < maxReplicaRetries {
				// The replica did not answer: ask the master again, which
				// stops sending readers to a volume that does not answer.
				retries++
				target, atMaster = master+suffix, true
				continue
			}
			fasthttp.ReleaseResponse(resp)
			if hop > 0 {
				err = fmt.Errorf("get %q: redirected to %s: %w", key, target, err)
			} else {
				err = fmt.Errorf("get %q: %w", key, err)
			}
			if atMaster {
				return nil, &masterErr{err: err}
			}
			return nil, err
		}
		st := resp.StatusCode()
		if atMaster && isRedirect(st) && hop < c.cfg.MaxRedirects {
			if leader, ok := c.leaderRedirect(target, suffix, resp); ok {
				drain(resp)
				resp.CloseBodyStream()
				master, target = leader, leader+suffix
				continue
			}
		}
		if atMaster && st == fasthttp.StatusServiceUnavailable {
			err := statusError(resp, "get", key)
			resp.CloseBodyStream()
			fasthttp.ReleaseResponse(resp)
			return nil, &masterErr{err: err}
		}
		if atMaster {
			c.answered(master)
		}
		if atMaster && isRedirect(st) {
			indexTag = string(resp.Header.Peek(fasthttp.HeaderETag))
		}
		if st == fasthttp.StatusOK {
			break
		}
		if !atMaster && (st == fasthttp.StatusNotFound || st >= 500) && retries < maxReplicaRetries {
			// A replica without the copy (or failing): the master knows
			// the others.
			retries++
			drain(resp)
			resp.CloseBodyStream()
			target, atMaster = master+suffix, true
			continue
		}
		var err error
		switch loc := resp.Header.Peek(fasthttp.HeaderLocation); {
		case !isRedirect(st):
			err = statusError(resp, "get", key)
		case len(loc) == 0:
			err = fmt.Errorf("get %q: %d redirect without a Location", key, st)
		case hop >= c.cfg.MaxRedirects:
			err = fmt.Errorf("get %q: more than %d redirects", key, c.cfg.MaxRedirects)
		default:
			target, err = resolveURL(target, string(loc))
			if err != nil {
				err = fmt.Errorf("get %q: redirect: %w", key, err)
			}
			atMaster = false
			drain(resp)
		}
		resp.CloseBodyStream()
		if err != nil {
			fasthttp.ReleaseResponse(resp)
			return nil, err
		}
	}
	v := &ValueReader{key: key, ctx: ctx, resp: resp, body: resp.BodyStream(), h: xxhash.New()}
	v.Info = infoOf(&resp.Header)
	if v.body == nil {
		v.body = bytes.NewReader(resp.Body())
	}
	if indexTag != "" && indexTag != v.ETag {
		resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		return nil, fmt.Errorf("get %q: %w: the replica's copy has ETag %s, the master's index %s", key, ErrChecksum, v.ETag, indexTag)
	}
	v.sum, v.hasSum = parseETag(v.ETag) // the index's, when the master sent one
	if s, ok := v.body.(fasthttp.ReadCloserWithError); ok {
		v.stop = context.AfterFunc(ctx, func() { _ = s.CloseWithError(ctx.Err()) })
	}
	return v, nil
}

// maxReplicaRetries is how often Get goes back to the master after a
// replica failed it.
const maxReplicaRetries = 2

// Read reads the value's next bytes.
func (v *ValueReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if err := v.ctx.Err(); err != nil {
		v.err = fmt.Errorf("get %q: after %d bytes: %w", v.key, v.n, err)
		return 0, v.err
	}
	n, err := v.body.Read(p)
	v.n += int64(n)
	_, _ = v.h.Write(p[:n])
	switch {
	case v.Size >= 0 && v.n > v.Size:
		err = fmt.Errorf("get %q: received more than the %d bytes announced", v.key, v.Size)
	case err == io.EOF, err == nil && v.n == v.Size:
		err = v.finish()
	case err != nil:
		if cerr := v.ctx.Err(); cerr != nil {
			err = cerr
		}
		err = fmt.Errorf("get %q: after %d bytes: %w", v.key, v.n, err)
	}
	v.err = err
	return n, err
}

// finish checks a value that ended: io.EOF when it is whole and intact.
func (v *ValueReader) finish() error {
	switch {
	case v.Size >= 0 && v.n < v.Size:
		// fasthttp reports a body cut short as a plain EOF.
		return fmt.Errorf("get %q: connection closed after %d of %d bytes: %w", v.key, v.n, v.Size, io.ErrUnexpectedEOF)
	case v.hasSum && v.h.Sum64() != v.sum:
		return fmt.Errorf("get %q: %w: received %d bytes with checksum %016x, ETag %s", v.key, ErrChecksum, v.n, v.h.Sum64(), v.ETag)
	}
	return io.EOF
}

// Close ends the transfer and releases the connection. It is safe to call
// more than once.
func (v *ValueReader) Close() error {
	if v.resp == nil {
		return nil
	}
	if v.stop != nil {
		v.stop()
	}
	err := v.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(v.resp)
	v.resp, v.body = nil, nil
	if v.err == nil {
		v.err = errors.New("client: read of a closed ValueReader")
	}
	return err
}

// Stat returns the size, ETag and modification time of key's value, from
// the master's index (HEAD). A missing key is ErrNotFound.
func (c *Client) Stat(ctx context.Context, key string) (Info, error) {
	if err := c.checkKey("stat", key); err != nil {
		return Info{}, err
	}
	var info Info
	err := c.failover(ctx, nil, func(master string) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stat %q: %w", key, err)
		}
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		if err := c.ask(master, fasthttp.MethodHead, keyPath(key), resp, "stat", key, false); err != nil {
			return err
		}
		defer resp.CloseBodyStream()
		if resp.StatusCode() != fasthttp.StatusOK {
			// A HEAD answer has no body, so no reason: the status says it.
			return &StatusError{Op: "stat", Key: key, Status: resp.StatusCode()}
		}
		info = infoOf(&resp.Header)
		return nil
	})
	return info, err
}

// Delete removes key's value from every replica and the index. A missing
// key is ErrNotFound.
//
// With several masters a delete whose outcome is unknown (its answer was
// lost, or a master answered 503) is sent again: if that finds the key
// gone, the error is ErrUncertain, not ErrNotFound, as the first attempt
// may have deleted it.
func (c *Client) Delete(ctx context.Context, key string) error {
	if err := c.checkKey("delete", key); err != nil {
		return err
	}
	var uncertain error // the first failure that may have deleted the key
	return c.failover(ctx, func(err error) error {
		if uncertain == nil {
			uncertain = err
		}
		return nil
	}, func(master string) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("delete %q: %w", key, err)
		}
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		if err := c.ask(master, fasthttp.MethodDelete, keyPath(key), resp, "delete", key, true); err != nil {
			return err
		}
		defer resp.CloseBodyStream()
		st := resp.StatusCode()
		if st == fasthttp.StatusNotFound && uncertain != nil {
			return fmt.Errorf("delete %q: not found when sent again, after an attempt that %w (%v)", key, ErrUncertain, uncertain)
		}
		if st != fasthttp.StatusOK {
			return statusError(resp, "delete", key)
		}
		drain(resp)
		return nil
	})
}

// MaxListLimit is the largest page the master serves, in keys.
const MaxListLimit = 10000

// List returns up to limit keys that start with prefix, from start on (in
// byte order, start included; empty for the beginning). limit 0 takes the
// server's default (1000); the server allows at most 10000.
func (c *Client) List(ctx context.Context, prefix, start string, limit int) (ListPage, error) {
	if err := ValidatePrefix([]byte(prefix)); err != nil {
		return ListPage{}, fmt.Errorf("list %q: %w", prefix, err)
	}
	if limit < 0 || limit > MaxListLimit {
		return ListPage{}, fmt.Errorf("list %q: limit %d: want 0 to %d", prefix, limit, MaxListLimit)
	}
	u := make([]byte, 0, 16+3*(len(prefix)+len(start)))
	u = AppendEscapedKey(append(u, '/'), []byte(prefix))
	u = append(u, "?list"...)
	if limit > 0 {
		u = strconv.AppendInt(append(u, "&limit="...), int64(limit), 10)
	}
	if start != "" {
		// Escaped like a key, '+' included: in a query '+' means a space.
		u = AppendEscapedKey(append(u, "&start="...), []byte(start))
	}
	var page ListPage
	err := c.failover(ctx, nil, func(master string) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %q: %w", prefix, err)
		}
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		if err := c.ask(master, fasthttp.MethodGet, string(u), resp, "list", prefix, false); err != nil {
			return err
		}
		defer resp.CloseBodyStream()
		if resp.StatusCode() != fasthttp.StatusOK {
			return statusError(resp, "list", prefix)
		}
		page = ListPage{}
		if err := json.NewDecoder(bodyOf(resp)).Decode(&page); err != nil {
			return fmt.Errorf("list %q: decode the answer: %w", prefix, err)
		}
		if page.Next != "" && page.Next <= start {
			return fmt.Errorf("list %q: the server's next %q does not advance past %q", prefix, page.Next, start)
		}
		drain(resp)
		return nil
	})
	if err != nil {
		return ListPage{}, err
	}
	return page, nil
}

// Keys yields every key that starts with prefix, in byte order, fetching
// pages of pageSize keys (0: the server's default) as it goes. It stops at
// the first error, which it yields with an empty key.
func (c *Client) Keys(ctx context.Context, prefix string, pageSize int) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		start := ""
		for {
			page, err := c.List(ctx, prefix, start, pageSize)
			if err != nil {
				yield("", err)
				return
			}
			for _, k := range page.Keys {
				if !yield(k, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			start = page.Next
		}
	}
}

// maxClusterJSON bounds the cluster document read into memory.
const maxClusterJSON = 16 << 20

// Cluster returns the master's view of the cluster. A field whose type
// the server changed is left zero rather than failing the whole answer.
// Every master answers it itself, a follower too.
func (c *Client) Cluster(ctx context.Context) (*ClusterInfo, error) {
	var info *ClusterInfo
	err := c.failover(ctx, nil, func(master string) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		if err := c.ask(master, fasthttp.MethodGet, "/"+ReservedPrefix+"cluster", resp, "cluster", "", false); err != nil {
			return err
		}
		defer resp.CloseBodyStream()
		if resp.StatusCode() != fasthttp.StatusOK {
			return statusError(resp, "cluster", "")
		}
		// An admin document, not a value: small enough to hold, and bounded.
		raw, err := io.ReadAll(io.LimitReader(bodyOf(resp), maxClusterJSON+1))
		if err != nil {
			return fmt.Errorf("cluster: read the answer: %w", err)
		}
		if len(raw) > maxClusterJSON {
			return fmt.Errorf("cluster: answer over %d bytes", maxClusterJSON)
		}
		info = &ClusterInfo{Raw: raw}
		var typeErr *json.UnmarshalTypeError
		if err := json.Unmarshal(raw, info); err != nil && !errors.As(err, &typeErr) {
			return fmt.Errorf("cluster: decode the answer: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return info, nil
}

// ask sends a request without a body to master+suffix and follows a
// follower's redirects to the leader. On success resp holds the answer of
// the master that gave it, whose body stream the caller closes. A failed
// connection or a 503 is a *masterErr; write says whether the request may
// have taken effect once it reached a master.
func (c *Client) ask(master, method, suffix string, resp *fasthttp.Response, op, key string, write bool) error {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	target := master + suffix
	for hop := 0; ; hop++ {
		req.Reset()
		req.Header.SetMethod(method)
		req.SetRequestURI(target)
		c.authorize(req)
		resp.Reset()
		// fasthttp keeps a pooled Response's SkipBody; a HEAD needs it set.
		resp.SkipBody = method == fasthttp.MethodHead
		if err := c.hc.Do(req, resp); err != nil {
			resp.CloseBodyStream()
			if op == "cluster" {
				err = fmt.Errorf("cluster: %w", err)
			} else {
				err = fmt.Errorf("%s %q: %w", op, key, err)
			}
			return &masterErr{err: err, maybe: write && !isDial(err)}
		}
		st := resp.StatusCode()
		if isRedirect(st) && hop < c.cfg.MaxRedirects {
			if leader, ok := c.leaderRedirect(target, suffix, resp); ok {
				drain(resp)
				resp.CloseBodyStream()
				target = leader + suffix
				master = leader
				continue
			}
		}
		if st == fasthttp.StatusServiceUnavailable {
			var err error
			if method == fasthttp.MethodHead {
				err = &StatusError{Op: op, Key: key, Status: st}
			} else {
				err = statusError(resp, op, key)
			}
			resp.CloseBodyStream()
			return &masterErr{err: err, maybe: write}
		}
		c.answered(master)
		return nil
	}
}

// leaderRedirect returns the leader's base URL when resp, the answer of
// target (a master's base followed by suffix), is a follower's redirect to
// the leader.
func (c *Client) leaderRedirect(target, suffix string, resp *fasthttp.Response) (string, bool) {
	loc := resp.Header.Peek(fasthttp.HeaderLocation)
	if len(loc) == 0 {
		return "", false
	}
	abs, err := resolveURL(target, string(loc))
	if err != nil {
		return "", false
	}
	return leaderOf(target, suffix, abs)
}

// notReady returns master's reason for not being ready, or "" when it is
// ready or cannot say.
func (c *Client) notReady(master string) string {
	req := c.newRequest(fasthttp.MethodGet, master+"/"+ReservedPrefix+"ready")
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	err := c.hc.Do(req, resp)
	defer resp.CloseBodyStream()
	if err != nil || resp.StatusCode() != fasthttp.StatusServiceUnavailable {
		return ""
	}
	return statusError(resp, "ready", "").Reason
}

// newRequest returns a pooled request for the master, with the token.
func (c *Client) newRequest(method, uri string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	c.authorize(req)
	return req
}

func (c *Client) authorize(req *fasthttp.Request) {
	if c.cfg.Token != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+c.cfg.Token)
	}
}

// checkKey refuses a key the server would refuse, before any byte is sent:
// a server that refuses a write before reading its body closes the
// connection, and the reason would be lost.
func (c *Client) checkKey(op, key string) error {
	if err := ValidateKey([]byte(key)); err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	return nil
}

// keyPath is key's path on a master: '/' and the key, escaped byte for
// byte, to follow the master's base URL.
func keyPath(key string) string {
	b := make([]byte, 0, 1+3*len(key))
	return string(AppendEscapedKey(append(b, '/'), []byte(key)))
}

// statusError builds the error for an unexpected answer, with the first
// line of its body as the reason.
func statusError(resp *fasthttp.Response, op, key string) *StatusError {
	var buf [512]byte
	n, _ := io.ReadFull(bodyOf(resp), buf[:])
	return statusErrorOf(resp.StatusCode(), buf[:n], op, key)
}

// statusErrorOf is the error for an answer with status and body.
func statusErrorOf(status int, body []byte, op, key string) *StatusError {
	line := body
	if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	return &StatusError{Op: op, Key: key, Status: status, Reason: string(bytes.TrimSpace(line))}
}

// bodyOf returns resp's body as a reader, streamed or not.
func bodyOf(resp *fasthttp.Response) io.Reader {
	if s := resp.BodyStream(); s != nil {
		return s
	}
	return bytes.NewReader(resp.Body())
}

// drain reads the rest of a small body so that its connection can be
// reused; a large one is left to CloseBodyStream, which closes it.
func drain(resp *fasthttp.Response) {
	s := resp.BodyStream()
	if s == nil {
		return
	}
	if cl := resp.Header.ContentLength(); cl >= 0 && cl <= 64<<10 {
		_, _ = io.Copy(io.Discard, s)
	}
}

func infoOf(h *fasthttp.ResponseHeader) Info {
	info := Info{Size: int64(h.ContentLength()), ETag: string(h.Peek(fasthttp.HeaderETag))}
	if info.Size < 0 {
		info.Size = -1
	}
	if lm := h.Peek(fasthttp.HeaderLastModified); len(lm) > 0 {
		if t, err := fasthttp.ParseHTTPDate(lm); err == nil {
			info.LastModified = t
		}
	}
	return info
}

// parseETag reads the checksum out of a kvdb ETag: 16 hex digits, quoted.
// Anything else (a weak tag, another server) is not checked.
func parseETag(tag string) (uint64, bool) {
	if len(tag) != 18 || tag[0] != '"' || tag[17] != '"' {
		return 0, false
	}
	sum, err := strconv.ParseUint(tag[1:17], 16, 64)
	return sum, err == nil
}

func isRedirect(status int) bool {
	switch status {
	case 301, 302, 303, 307, 308:
		return true
	}
	return false
}

// resolveURL resolves a Location against the URL that answered. An
// absolute Location is used as sent, so its path escaping is kept exactly.
func resolveURL(from, loc string) (string, error) {
	if strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		return loc, nil
	}
	base, err := url.Parse(from)
	if err != nil {
		return "", err
	}
	ref, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("Location %q: %w", loc, err)
	}
	return base.ResolveReference(ref).String(), nil
}
