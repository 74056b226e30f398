package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/pprofhandler"
)

// minTransferRate is the slowest a peer may drain a sendfile response before
// the connection is cut: 1 GiB takes at most about 17 minutes.
const minTransferRate = 1 << 20

// deadlineConn pushes the read (write) deadline forward before every read
// (write), so a peer that stops sending or receiving for longer than idle is
// cut off, while a long transfer that keeps moving is never timed out. Fasthttp
// timeouts cover a whole body, which no single value can size for 1 KB and
// 1 GB alike.
type deadlineConn struct {
	net.Conn
	idle time.Duration
	ln   *trackingListener
	// dialed and addr: a connection this node dialed, tracked so that all
	// of those to one peer can be cut at once (see dialTracker).
	dialed *dialTracker
	addr   string
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps sendfile: fasthttp hands a file to the connection's
// ReadFrom, and *net.TCPConn turns that into sendfile(2).
func (c *deadlineConn) ReadFrom(r io.Reader) (int64, error) {
	d := c.idle
	if lr, ok := r.(*io.LimitedReader); ok && lr.N > 0 {
		d += time.Duration(lr.N/minTransferRate) * time.Second
	}
	if err := c.Conn.SetWriteDeadline(time.Now().Add(d)); err != nil {
		return 0, err
	}
	if c.ln != nil {
		// A value going out: it counts in the node's load until sent.
		c.ln.busy.Add(1)
		defer c.ln.busy.Add(-1)
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// lingerTime and lingerBytes bound what Close still reads after a server
// closes a connection.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 16 << 20
)

// Close closes a connection the server accepted the way nginx's lingering
// close does (a connection the client side dialed just closes). The server
// closes a connection while the request body is still arriving when it
// answers before reading it (507, 409, 413... to a client that did not
// send Expect: 100-continue). Closing a socket with bytes still coming in
// resets the connection, and the reset makes the client's kernel drop the
// answer the client has not read yet: it sees "connection reset", not the
// reason. So Close ends the sending side at once and keeps reading, and
// dropping, what comes until the client closes too, or for a bounded time.
// The connection stays tracked until then, so a kill still cuts it.
func (c *deadlineConn) Close() error {
	if c.dialed != nil {
		c.dialed.forget(c)
	}
	tc, ok := c.Conn.(*net.TCPConn)
	if c.ln == nil || !ok || tc.CloseWrite() != nil {
		if c.ln != nil {
			c.ln.forget(c)
		}
		return c.Conn.Close()
	}
	go func() {
		_ = tc.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.CopyN(io.Discard, tc, lingerBytes)
		_ = tc.Close()
		c.ln.forget(c)
	}()
	return nil
}

// trackingListener wraps accepted connections in deadlineConn and remembers
// them, so a node can be stopped hard (every connection cut, as in a crash).
type trackingListener struct {
	net.Listener
	log   *slog.Logger
	idle  time.Duration
	mu    sync.Mutex
	conns map[*deadlineConn]struct{}
	// busy counts requests being handled plus response bodies being sent
	// (a sendfile outlives its handler): the node's load.
	busy atomic.Int64
}

func newTrackingListener(ln net.Listener, idle time.Duration) *trackingListener {
	return &trackingListener{Listener: ln, idle: idle, conns: make(map[*deadlineConn]struct{}), log: slog.New(slog.DiscardHandler)}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	var delay time.Duration
	var c net.Conn
	for {
		var err error
		c, err = l.Listener.Accept()
		if err == nil {
			break
		}
		if !resourceExhausted(err) {
			return nil, err
		}
		// Out of file descriptors (or kernel memory): fasthttp would end
		// its accept loop for good and leave a live process that answers
		// nothing. Back off and keep accepting; connections that close
		// free descriptors.
		if delay == 0 {
			delay = 5 * time.Millisecond
			l.log.Error("cannot accept connections; retrying", "err", err)
		} else {
			delay = min(2*delay, time.Second)
		}
		time.Sleep(delay)
	}
	if delay > 0 {
		l.log.Info("accepting connections again")
	}
	dc := &deadlineConn{Conn: c, idle: l.idle, ln: l}
	l.mu.Lock()
	l.conns[dc] = struct{}{}
	l.mu.Unlock()
	return dc, nil
}

// resourceExhausted reports whether err is accept(2) running out of file
// descriptors or kernel memory: conditions that pass.
func resourceExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func (l *trackingListener) forget(c *deadlineConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// closeAll cuts every open connection.
func (l *trackingListener) closeAll() {
	l.mu.Lock()
	conns := make([]*deadlineConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
}

// httpServer runs one fasthttp server on a tracked listener.
type httpServer struct {
	srv     *fasthttp.Server
	ln      *trackingListener
	log     *slog.Logger
	serving atomic.Bool
	done    chan struct{}
}

// httpLimits caps a server's connections (0: no cap of kvdb's own).
type httpLimits struct {
	// MaxConns bounds the open client connections; more wait in the
	// kernel's backlog or are refused.
	MaxConns int
	// MaxConnsPerIP bounds the open connections from one client address.
	MaxConnsPerIP int
}

// listenHTTP listens on addr and prepares to serve h; serve starts it, once
// everything the handlers use exists (a request must never find the node
// half built). Request bodies are streamed (never buffered whole); with
// streaming on, fasthttp's MaxRequestBodySize is only the prefetch size, so
// handlers enforce value limits themselves. expect, if not nil, answers
// requests with Expect: 100-continue before their body.
func listenHTTP(addr string, h fasthttp.RequestHandler, expect func(*fasthttp.RequestCtx) int, idle time.Duration, lim httpLimits, logger *slog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	tl := newTrackingListener(ln, idle)
	tl.log = logger
	s := &httpServer{
		srv: &fasthttp.Server{
			Handler: func(ctx *fasthttp.RequestCtx) {
				tl.busy.Add(1)
				defer tl.busy.Add(-1)
				if !logger.Enabled(context.Background(), slog.LevelDebug) {
					h(ctx)
					return
				}
				start := time.Now()
				h(ctx)
				logger.Debug("request", "method", string(ctx.Method()), "path", string(ctx.URI().PathOriginal()),
					"status", ctx.Response.StatusCode(), "ms", float64(time.Since(start).Microseconds())/1000,
					"remote", ctx.RemoteAddr().String())
			},
			ExpectHandler:                 expect,
			Name:                          "kvdb",
			StreamRequestBody:             true,
			MaxRequestBodySize:            64 << 10,
			ReadBufferSize:                16 << 10,
			WriteBufferSize:               64 << 10,
			IdleTimeout:                   idle,
			DisablePreParseMultipartForm:  true,
			DisableHeaderNamesNormalizing: false,
			NoDefaultContentType:          true,
			CloseOnShutdown:               true,
			Concurrency:                   lim.MaxConns,
			MaxConnsPerIP:                 lim.MaxConnsPerIP,
			Logger:                        fasthttpLogger{logger},
		},
		ln:   tl,
		log:  logger,
		done: make(chan struct{}),
	}
	return s, nil
}

// serve starts answering requests.
func (s *httpServer) serve() {
	s.serving.Store(true)
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); err != nil {
			s.log.Error("http server stopped", "err", err)
		}
	}()
}

// startHTTP is listenHTTP then serve, for servers with nothing to build in
// between.
func startHTTP(addr string, h fasthttp.RequestHandler, expect func(*fasthttp.RequestCtx) int, idle time.Duration, logger *slog.Logger) (*httpServer, error) {
	s, err := listenHTTP(addr, h, expect, idle, httpLimits{}, logger)
	if err != nil {
		return nil, err
	}
	s.serve()
	return s, nil
}

func (s *httpServer) addr() string { return s.ln.Addr().String() }

// load is the number of requests being handled and response bodies being
// sent right now.
func (s *httpServer) load() int64 { return s.ln.busy.Load() }

// shutdown stops accepting, lets running requests finish for up to grace,
// then cuts what is left.
func (s *httpServer) shutdown(grace time.Duration) {
	if !s.serving.Load() {
		_ = s.ln.Listener.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_ = s.srv.ShutdownWithContext(ctx)
	s.ln.closeAll()
	<-s.done
}

// kill stops at once, cutting every connection, as a crash would.
func (s *httpServer) kill() {
	_ = s.ln.Listener.Close()
	if !s.serving.Load() {
		return
	}
	s.ln.closeAll()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.ShutdownWithContext(ctx)
	s.ln.closeAll()
	<-s.done
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", fmt.Sprintf(format, args...))
}

// newClient builds the client nodes use to talk to each other. Its timeouts
// are per read and write (idle), not per request: a 1 GB transfer that keeps
// moving must not be cut, a peer that hangs must be.
// dialTracker remembers the connections a client dialed, by address, so
// that a peer found unreachable can have every request in flight to it cut
// at once (a paused process keeps its sockets open: without this a write
// to it would hang until the idle timeout).
type dialTracker struct {
	mu    sync.Mutex
	conns map[string]map[*deadlineConn]struct{}
}

func (t *dialTracker) add(c *deadlineConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	set := t.conns[c.addr]
	if set == nil {
		set = make(map[*deadlineConn]struct{})
		t.conns[c.addr] = set
	}
	set[c] = struct{}{}
}

func (t *dialTracker) forget(c *deadlineConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if set := t.conns[c.addr]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(t.conns, c.addr)
		}
	}
}

// cut closes every connection to addr; the requests on them fail at once.
// It returns how many it closed.
func (t *dialTracker) cut(addr string) int {
	t.mu.Lock()
	set := t.conns[addr]
	delete(t.conns, addr)
	t.mu.Unlock()
	for c := range set {
		_ = c.Conn.Close()
	}
	return len(set)
}

func newClient(idle time.Duration) *fasthttp.Client {
	c, _ := newTrackedClient(idle)
	return c
}

// NewPeerClient returns the client kvdb's servers use for each other (idle
// deadlines per read and write, not per request): for a gateway, such as
// node/s3, that speaks to the nodes.
func NewPeerClient(idle time.Duration) *fasthttp.Client { return newClient(idle) }

// TrackedListener wraps a listener's connections with idle deadlines and
// a lingering close (a client sees the answer to a request refused before
// its body, not a reset), keeps accepting when out of file descriptors,
// and can cut every connection it accepted.
type TrackedListener struct{ *trackingListener }

// NewTrackedListener wraps ln; logger receives accept errors.
func NewTrackedListener(ln net.Listener, idle time.Duration, logger *slog.Logger) TrackedListener {
	tl := newTrackingListener(ln, idle)
	if logger != nil {
		tl.log = logger
	}
	return TrackedListener{tl}
}

// CloseAll closes the listener and cuts every connection it accepted.
func (l TrackedListener) CloseAll() {
	_ = l.Listener.Close()
	l.closeAll()
}

// newTrackedClient is the client nodes use to talk to each other, with the
// tracker of its connections.
func newTrackedClient(idle time.Duration) (*fasthttp.Client, *dialTracker) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &dialTracker{conns: make(map[string]map[*deadlineConn]struct{})}
	return &fasthttp.Client{
		Name:                     "kvdb",
		NoDefaultUserAgentHeader: false,
		MaxConnsPerHost:          1024,
		MaxIdleConnDuration:      30 * time.Second,
		ReadBufferSize:           16 << 10,
		WriteBufferSize:          64 << 10,
		DisablePathNormalizing:   true,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialer.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			dc := &deadlineConn{Conn: c, idle: idle, dialed: tr, addr: addr}
			tr.add(dc)
			return dc, nil
		},
	}, tr
}

// runEvery calls fn every interval, and also whenever kick receives (kick
// may be nil), until stop is closed. The background loops of both roles
// run on it.
func runEvery(stop <-chan struct{}, interval time.Duration, kick <-chan struct{}, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-kick:
		}
		fn()
	}
}

// errStatus pairs an error with the HTTP status it maps to.
type errStatus struct {
	status int
	err    error
}

func (e *errStatus) Error() string { return e.err.Error() }
func (e *errStatus) Unwrap() error { return e.err }

// withStatus marks err to be answered with status.
func withStatus(status int, err error) error { return &errStatus{status: status, err: err} }

// statusOf maps an error to its HTTP status. It is the one place that does.
func statusOf(err error) int {
	var es *errStatus
	switch {
	case errors.As(err, &es):
		return es.status
	case errors.Is(err, ErrKeyEmpty), errors.Is(err, ErrKeyTooLong), errors.Is(err, ErrKeyEncoding),
		errors.Is(err, ErrKeyReserved), errors.Is(err, ErrKeyNUL), errors.Is(err, ErrKeyUTF8),
		errors.Is(err, ErrKeyDotSegment):
		return fasthttp.StatusBadRequest
	}
	return fasthttp.StatusInternalServerError
}

// replyError answers with err's status and a one-line plain-text reason.
// replyError answers err with its status; a 503 says when to retry (a
// leader elected, a volume back: seconds).
func replyError(ctx *fasthttp.RequestCtx, err error) {
	st := statusOf(err)
	if st == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	replyText(ctx, st, err.Error())
}

func replyText(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.Response.SetBodyString(msg + "\n")
}

func replyJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.Response.SetBody(append(body, '\n'))
}

// servePprof serves Go's profiles under /_kvdb/debug/pprof/ (rest is the
// path after /_kvdb/). Nodes call it only when profiling is enabled.
func servePprof(ctx *fasthttp.RequestCtx, rest []byte) {
	ctx.URI().SetPath("/" + string(rest))
	pprofhandler.PprofHandler(ctx)
}
