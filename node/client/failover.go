package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"
)

// Failover between masters: which master an operation tries first, when it
// tries the next one, and how a follower's redirect to the leader is told
// from a master's redirect to a volume. The rule for writes is in the
// package doc (doc.go, "Several masters").

// masterErr is an attempt that a master could not serve: the master did
// not answer (a connection error), or answered 503. Another master may
// serve the operation; the failover loop decides whether to try one.
type masterErr struct {
	err error
	// maybe: the request reached a master whole, so a write may have taken
	// effect although its answer is an error (or was lost).
	maybe bool
}

func (e *masterErr) Error() string { return e.err.Error() }
func (e *masterErr) Unwrap() error { return e.err }

// dialError is a connection to a node that could not be made: nothing of
// the request was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// isDial reports whether err is a failed connection attempt.
func isDial(err error) bool {
	var d *dialError
	return errors.As(err, &d)
}

// Backoff between rounds over every master: the first wait, and the
// longest. Waits double and are jittered down by up to half, so that
// clients that failed together do not come back together.
const (
	backoffFirst = 50 * time.Millisecond
	backoffMax   = time.Second
)

// backoff is the wait after round number round (0-based) over the masters.
func backoff(round int) time.Duration {
	d := backoffFirst
	for range round {
		if d *= 2; d >= backoffMax {
			d = backoffMax
			break
		}
	}
	return d/2 + rand.N(d/2+1)
}

// parseURLs splits a ClientConfig.URL into its masters' base URLs, each
// normalized (http:// when no scheme, no trailing '/'), without duplicates.
func parseURLs(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		u := strings.TrimSpace(part)
		if u != "" && !strings.Contains(u, "://") {
			u = "http://" + u
		}
		u = strings.TrimRight(u, "/")
		dup := false
		for _, o := range out {
			dup = dup || o == u
		}
		if !dup {
			out = append(out, u)
		}
	}
	return out
}

// candidates lists the masters an operation tries, in order: the one that
// answered last (which may be a leader learned from a redirect), then the
// configured ones in their order.
func (c *Client) candidates() []string {
	first := c.masters[0]
	if p := c.leader.Load(); p != nil {
		first = *p
	}
	out := make([]string, 1, len(c.masters)+1)
	out[0] = first
	for _, m := range c.masters {
		if m != first {
			out = append(out, m)
		}
	}
	return out
}

// answered records master as the one to try first next time.
func (c *Client) answered(master string) {
	if p := c.leader.Load(); p == nil || *p != master {
		c.leader.Store(&master)
	}
}

// failover runs attempt against the masters in turn until one gives an
// answer that is not a *masterErr, and returns that answer. With a single
// candidate it makes one attempt, as a client of one master always did.
// With several, a master that cannot serve is followed by the next; after
// each round over all of them it backs off; it gives up when ctx ends or
// FailoverTimeout has passed since the first failure.
//
// maybe, when not nil, is asked before another attempt follows one that
// may have taken effect: it returns nil to go on, or the error to end with.
func (c *Client) failover(ctx context.Context, maybe func(err error) error, attempt func(master string) error) error {
	masters := c.candidates()
	var deadline time.Time
	tries := 0
	// worst is the failure to report when giving up: the last answer a
	// master gave (a 503 says more than a refused connection), else the
	// last failure.
	var worst error
	for round := 0; ; round++ {
		for _, m := range masters {
			err := attempt(m)
			me, ok := err.(*masterErr)
			if !ok {
				return err
			}
			if len(masters) == 1 {
				return me.err
			}
			tries++
			var se *StatusError
			if worst == nil || errors.As(me.err, &se) || !errors.As(worst, &se) {
				worst = me.err
			}
			if me.maybe && maybe != nil {
				if err := maybe(me.err); err != nil {
					return err
				}
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(c.cfg.FailoverTimeout)
			}
			if ctx.Err() != nil || !time.Now().Before(deadline) {
				return giveUp(worst, tries, len(masters), ctx)
			}
		}
		wait := backoff(round)
		if left := time.Until(deadline); wait > left {
			wait = left
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %d attempts on %d masters)", ctx.Err(), tries, len(masters))
		}
	}
}

// giveUp is the error of a failover that ran out of time: the last
// master's failure, and how many attempts were made.
func giveUp(last error, tries, masters int, ctx context.Context) error {
	if err := ctx.Err(); err != nil && !errors.Is(last, err) {
		return fmt.Errorf("%w (%w, after %d attempts on %d masters)", last, err, tries, masters)
	}
	return fmt.Errorf("%w (no master could serve it: %d attempts on %d masters)", last, tries, masters)
}

// leaderOf tells a follower's redirect to the leader from a master's
// redirect to a volume. A follower redirects to the same path and query on
// the leader; a master never sends a client to a volume that way (a read
// goes to GET /KEY?v=VER, a write to /_kvdb/write/KEY?t=...). target is
// the URL that answered, a master's base followed by suffix; loc the
// absolute Location. It returns the leader's base URL.
func leaderOf(target, suffix, loc string) (string, bool) {
	if loc == target {
		return "", false
	}
	if strings.HasSuffix(loc, suffix) {
		base := loc[:len(loc)-len(suffix)]
		i := strings.Index(base, "://")
		// The same path: /_kvdb/x/KEY on another node is not /KEY.
		if i > 0 && len(base) > i+3 && basePath(base) == basePath(target[:len(target)-len(suffix)]) {
			return base, true
		}
		return "", false
	}
	// A server may escape the path its own way: compare what it means.
	want, err1 := url.Parse(target)
	got, err2 := url.Parse(loc)
	if err1 != nil || err2 != nil || got.Host == "" || got.Host == want.Host && got.Scheme == want.Scheme {
		return "", false
	}
	if got.Path != want.Path || got.Query().Encode() != want.Query().Encode() {
		return "", false
	}
	return got.Scheme + "://" + got.Host, true
}

// basePath is the path of a base URL (scheme://host/path): what follows
// its host.
func basePath(base string) string {
	rest := base
	if i := strings.Index(base, "://"); i >= 0 {
		rest = base[i+3:]
	}
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		return rest[j:]
	}
	return ""
}

// dialer returns the function both HTTP clients connect with: idle
// deadlines on the connection, and a failure to connect marked as such.
func dialer(timeout, idle time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &dialError{err}
		}
		// fasthttp's own timeouts cover a whole body, which cannot be
		// sized for 1 KiB and 1 GiB alike: each read and write pushes an
		// idle deadline forward instead.
		return &idleConn{Conn: conn, idle: idle}, nil
	}
}
