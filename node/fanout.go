package node

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// chunkSize is the unit a value is streamed in. Each replica may lag the
// fastest by at most fanoutDepth chunks, so one write holds at most about
// (fanoutDepth+2) × chunkSize bytes whatever the value's size.
const (
	chunkSize   = 256 << 10
	fanoutDepth = 4
)

var chunkPool = sync.Pool{New: func() any { return &chunk{buf: make([]byte, chunkSize)} }}

type chunk struct {
	buf  []byte
	n    int
	refs atomic.Int32
}

func (c *chunk) release() {
	if c.refs.Add(-1) == 0 {
		c.n = 0
		chunkPool.Put(c)
	}
}

// errNoReplicaLeft stops reading a body that no replica is taking any more.
var errNoReplicaLeft = errors.New("every replica failed")

// fanout copies one source stream to several readers at the pace of the
// slowest, with a bounded number of shared buffers: the body is read once
// and never held whole.
type fanout struct {
	src  io.Reader
	outs []*fanoutReader
	read int64 // bytes read from src
}

func newFanout(src io.Reader, n int) *fanout {
	f := &fanout{src: src, outs: make([]*fanoutReader, n)}
	for i := range f.outs {
		f.outs[i] = &fanoutReader{ch: make(chan *chunk, fanoutDepth), dead: make(chan struct{})}
	}
	return f
}

// run pumps src to the readers until src ends. It returns nil at a clean
// end of src, src's error otherwise (the readers then fail with it too), or
// errNoReplicaLeft when every reader was abandoned.
func (f *fanout) run() error {
	for {
		c := chunkPool.Get().(*chunk)
		n, err := fill(f.src, c.buf)
		f.read += int64(n)
		if n > 0 {
			c.n = n
			if !f.deliver(c) {
				f.finish(errNoReplicaLeft)
				return errNoReplicaLeft
			}
		} else {
			chunkPool.Put(c)
		}
		if err == io.EOF {
			f.finish(nil)
			return nil
		}
		if err != nil {
			f.finish(err)
			return err
		}
	}
}

// deliver hands c to every reader still alive; false when none is.
func (f *fanout) deliver(c *chunk) bool {
	c.refs.Store(int32(len(f.outs)) + 1) // +1 held while delivering
	alive := 0
	for _, o := range f.outs {
		// A reader that gave up takes nothing more, even with room in its
		// channel (a select between the two would pick at random).
		select {
		case <-o.dead:
			c.refs.Add(-1)
			continue
		default:
		}
		select {
		case o.ch <- c:
			alive++
		case <-o.dead:
			c.refs.Add(-1)
		}
	}
	c.release()
	return alive > 0
}

func (f *fanout) finish(err error) {
	for _, o := range f.outs {
		o.err = err
		close(o.ch)
	}
}

// fill reads into buf until it is full or src fails; io.EOF only at the end.
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			// A reader returning 0, nil repeatedly would spin; let it.
			continue
		}
	}
	return n, nil
}

// fanoutReader is one replica's view of the stream.
type fanoutReader struct {
	ch       chan *chunk
	dead     chan struct{}
	deadOnce sync.Once
	err      error // set before ch is closed
	cur      *chunk
	off      int
}

// Read implements io.Reader.
func (r *fanoutReader) Read(p []byte) (int, error) {
	if r.cur == nil {
		c, ok := <-r.ch
		if !ok {
			if r.err != nil {
				return 0, r.err
			}
			return 0, io.EOF
		}
		r.cur, r.off = c, 0
	}
	n := copy(p, r.cur.buf[r.off:r.cur.n])
	r.off += n
	if r.off == r.cur.n {
		r.cur.release()
		r.cur = nil
	}
	return n, nil
}

// WriteTo hands whole chunks to w (no extra copy); fasthttp's client uses it
// when it streams a request body.
func (r *fanoutReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if r.cur != nil {
		n, err := w.Write(r.cur.buf[r.off:r.cur.n])
		total += int64(n)
		r.cur.release()
		r.cur = nil
		if err != nil {
			return total, err
		}
	}
	for c := range r.ch {
		n, err := w.Write(c.buf[:c.n])
		total += int64(n)
		c.release()
		if err != nil {
			return total, err
		}
	}
	return total, r.err
}

// abandon tells the producer this reader takes nothing more, and returns
// the chunks it still holds.
func (r *fanoutReader) abandon() {
	r.deadOnce.Do(func() {
		close(r.dead)
		if r.cur != nil {
			r.cur.release()
			r.cur = nil
		}
		// Usually the stream has ended and ch is closed: drain it here,
		// and leave a goroutine to wait for the producer only when not.
		for {
			select {
			case c, ok := <-r.ch:
				if !ok {
					return
				}
				c.release()
			default:
				go func() {
					for c := range r.ch {
						c.release()
					}
				}()
				return
			}
		}
	})
}
