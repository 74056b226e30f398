package node

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// batchQueues gathers the items waiting for each volume (by HTTP address)
// into shared requests: at most inFlight requests to a volume at a time,
// each taking up to maxBatch of its queued items, so that items queued while
// a request is under way go in the next one together. Deletions
// (deleteq.go) and small writes (putq.go) go to the volumes this way: the
// master and the volume then exchange one request and one answer for many
// items, and the volume commits them to its log together.
type batchQueues[T batchItem] struct {
	// send sends one batch to the volume at addr and sets each item's
	// outcome; the queue then calls the items' finish.
	send     func(addr string, batch []T)
	maxBatch int
	inFlight int

	mu sync.Mutex
	q  map[string]*batchQueue[T]
	// requests and items count the requests sent and the items they
	// carried (metrics; tests check the batching).
	requests, items atomic.Int64
}

// batchItem is an item of a batchQueues.
type batchItem interface{ finish() }

type batchQueue[T any] struct {
	pending []T
	senders int
}

// waiter is what an item sent in a batch waits on: done is closed once the
// item's outcome is set.
type waiter struct{ done chan struct{} }

func newWaiter() waiter { return waiter{done: make(chan struct{})} }

func (w *waiter) finish() { close(w.done) }

// add queues it for the volume at addr; a sender goroutine takes it with
// the others queued there.
func (b *batchQueues[T]) add(addr string, it T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.q == nil {
		b.q = make(map[string]*batchQueue[T])
	}
	q := b.q[addr]
	if q == nil {
		q = &batchQueue[T]{}
		b.q[addr] = q
	}
	q.pending = append(q.pending, it)
	if q.senders < b.inFlight {
		q.senders++
		go b.drain(addr, q)
	}
}

// drain sends addr's queued items, a batch at a time, until none is left.
func (b *batchQueues[T]) drain(addr string, q *batchQueue[T]) {
	for {
		// Let the callers already runnable here queue theirs first, to
		// share the request (deletions: about 1.6 a request without, 2.3
		// with).
		runtime.Gosched()
		b.mu.Lock()
		n := min(len(q.pending), b.maxBatch)
		if n == 0 {
			q.senders--
			if q.senders == 0 {
				delete(b.q, addr)
			}
			b.mu.Unlock()
			return
		}
		batch := q.pending[:n:n]
		q.pending = q.pending[n:]
		if len(q.pending) == 0 {
			q.pending = nil
		}
		b.mu.Unlock()
		b.requests.Add(1)
		b.items.Add(int64(n))
		b.send(addr, batch)
		for _, it := range batch {
			it.finish()
		}
	}
}
