package client

import (
	"net"
	"time"
)

// idleConn pushes the read (write) deadline forward before every read
// (write), so that a request fails once no byte has moved for idle, while
// a long transfer that keeps moving is never cut. fasthttp's own timeouts
// cover a whole body, which no single value can size for 1 KiB and 1 GiB
// alike.
type idleConn struct {
	net.Conn
	idle time.Duration
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
