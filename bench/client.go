package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// newClient returns the fasthttp client every worker shares. fasthttp's
// ReadTimeout/WriteTimeout cover a whole body, which cannot be sized for
// both 1 KiB and 1 GiB, so they stay off and each connection enforces an
// idle timeout instead: every Read and Write pushes its deadline forward.
func newClient(concurrency int, timeout time.Duration) *fasthttp.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &fasthttp.Client{
		Name: "kvdb-bench",
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialer.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, timeout: timeout}, nil
		},
		// A GET holds a connection to the server and, while it follows a
		// redirect, one to the volume: two per worker, plus slack.
		MaxConnsPerHost:    2*concurrency + 2,
		MaxConnWaitTimeout: timeout,
		ReadBufferSize:     64 << 10,
		WriteBufferSize:    64 << 10,
		// Streamed: a 1 GiB body goes through a worker's buffers, never
		// into memory whole. fasthttp then never retries a body stream.
		StreamResponseBody: true,
		// Keys are escaped by bench and must reach the server as they are.
		DisablePathNormalizing: true,
	}
}

// idleConn fails a Read or Write that waits more than timeout for a byte.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	// Write in pieces so that one large Write is not cut by the deadline
	// while bytes keep moving.
	var done int
	for done < len(p) {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
			return done, err
		}
		end := min(len(p), done+1<<20)
		n, err := c.Conn.Write(p[done:end])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// appendEscaped percent-escapes key for a URL path: unreserved characters
// and '/' go as they are, every other byte as %XX.
func appendEscaped(dst []byte, key string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '/':
			dst = append(dst, c)
		default:
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// resolveLocation turns a Location header into an absolute URL, relative to
// the URL that answered. It keeps the path bytes as sent (no re-escaping).
func resolveLocation(reqURL, loc string) string {
	schemeEnd := strings.Index(reqURL, "://")
	switch {
	case strings.Contains(loc, "://"):
		return loc
	case strings.HasPrefix(loc, "//"):
		return reqURL[:schemeEnd+1] + loc
	}
	hostEnd := strings.IndexByte(reqURL[schemeEnd+3:], '/')
	if hostEnd < 0 {
		hostEnd = len(reqURL)
	} else {
		hostEnd += schemeEnd + 3
	}
	if strings.HasPrefix(loc, "/") {
		return reqURL[:hostEnd] + loc
	}
	dir := reqURL[:hostEnd] + "/"
	path := reqURL[hostEnd:]
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir = reqURL[:hostEnd] + path[:i+1]
	}
	return dir + loc
}

// statusError describes a non-2xx answer with the first line of its body.
func statusError(resp *fasthttp.Response) error {
	var line []byte
	if s := resp.BodyStream(); s != nil {
		var b [512]byte
		n, _ := io.ReadFull(s, b[:])
		line = b[:n]
	} else {
		line = resp.Body()
	}
	if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	return &statusErr{code: resp.StatusCode(), line: string(bytes.TrimSpace(line))}
}

// statusErr is an answer with an unexpected status; retries look at code.
type statusErr struct {
	code int
	line string // first line of the body, may be empty
}

func (e *statusErr) Error() string {
	if e.line == "" {
		return fmt.Sprintf("status %d", e.code)
	}
	return fmt.Sprintf("status %d: %s", e.code, e.line)
}

// transportErr is a request that did not complete: refused or reset
// connection, a timeout, a body cut short. Its text is the cause's.
type transportErr struct{ err error }

func (e transportErr) Error() string { return e.err.Error() }
func (e transportErr) Unwrap() error { return e.err }

func isRedirect(status int) bool {
	switch status {
	case 301, 302, 303, 307, 308:
		return true
	}
	return false
}

var errNoLocation = errors.New("redirect without Location")

// newStdClient returns the net/http client for PUTs with Expect:
// 100-continue (fasthttp's client does not wait for the interim answer).
// Redirects come back to the worker, which sends the body on, once.
func newStdClient(concurrency int, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dialer.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &idleConn{Conn: c, timeout: timeout}, nil
			},
			ExpectContinueTimeout: timeout,
			MaxIdleConnsPerHost:   2*concurrency + 2,
			DisableCompression:    true,
			WriteBufferSize:       64 << 10,
			ReadBufferSize:        64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
