package s3

import (
	"io"
	"net"
	"sync"
	"time"
)

// idleConn pushes its read (write) deadline forward before every read
// (write): a peer that stops moving bytes for idle is cut off, a long
// transfer that keeps moving never is. fasthttp's own timeouts cover a
// whole body, which no single value can size for 1 KB and 1 GB alike.
type idleConn struct {
	net.Conn
	idle time.Duration
	ln   *listener // nil for connections the gateway dialed
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Lingering close, as node's servers do: a gateway that answers before it
// has read the body (a refused signature without Expect: 100-continue)
// closes while the client still sends; closing outright would reset the
// connection and the client would lose the answer. So the sending side
// ends at once and what still arrives is read and dropped, for a bounded
// time and amount.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 16 << 20
)

func (c *idleConn) Close() error {
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

// listener wraps accepted connections in idleConn and tracks them, so
// Close can cut those that are left.
type listener struct {
	net.Listener
	idle  time.Duration
	mu    sync.Mutex
	conns map[*idleConn]struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ic := &idleConn{Conn: c, idle: l.idle, ln: l}
	l.mu.Lock()
	l.conns[ic] = struct{}{}
	l.mu.Unlock()
	return ic, nil
}

func (l *listener) forget(c *idleConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

func (l *listener) closeAll() {
	l.mu.Lock()
	conns := make([]*idleConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
}
