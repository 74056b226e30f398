package bench

import (
	"math"
	"math/bits"
	"time"
)

// OpStats is the report of one kind of operation in one phase.
type OpStats struct {
	// Op names the row: put, get, head, delete, "put (setup)",
	// "delete (cleanup)", or a baseline's "write+fsync" and "sendfile get".
	Op string `json:"op"`
	// Count is the operations done, failed ones included.
	Count int64 `json:"count"`
	// Errors counts failed operations: transport errors, non-2xx statuses,
	// verify mismatches. An operation retried (Config.Retries) counts once,
	// by its last attempt.
	Errors int64 `json:"errors"`
	// FirstErr is the text of the earliest failed operation's last error.
	FirstErr string `json:"first_error,omitempty"`
	// Retried counts the operations that succeeded after one retry or
	// more. They are in Count, not in Errors.
	Retried int64 `json:"retried"`
	// FirstRetryErr is the text of the earliest error that led to a retry,
	// whatever the operation's outcome.
	FirstRetryErr string `json:"first_retry_error,omitempty"`
	// Bytes is the value bytes moved by the operations that succeeded.
	Bytes int64 `json:"bytes"`
	// Elapsed is the wall time of the phase the row belongs to; rates are
	// over it.
	Elapsed   time.Duration `json:"elapsed_ns"`
	OpsPerSec float64       `json:"ops_per_sec"`
	// MBPerSec is Bytes per second in units of 10^6 bytes.
	MBPerSec float64 `json:"mb_per_sec"`
	// Latency percentiles and maximum over the operations that succeeded,
	// from a log-bucketed histogram (within 0.4%); Max is exact. A retried
	// operation's latency spans all its attempts and the waits between.
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// Histogram layout: values (ns) below 2^subBits are counted exactly; above,
// each power of two is split into subCount buckets, so a bucket's middle is
// within 1/256 of any value in it. Values past 2^(maxShift+subBits) ns
// (about 73 minutes) share the last bucket.
const (
	subBits  = 8
	subCount = 1 << (subBits - 1)
	maxShift = 34
	nBuckets = 1<<subBits + maxShift*subCount
)

type histogram struct {
	counts [nBuckets]int64
	n      int64
	max    int64
}

func bucketOf(v int64) int {
	if v < 1<<subBits {
		return int(max(v, 0))
	}
	s := bits.Len64(uint64(v)) - subBits
	if s > maxShift {
		return nBuckets - 1
	}
	return 1<<subBits + (s-1)*subCount + int(v>>s) - subCount
}

// bucketValue is the middle of bucket b.
func bucketValue(b int) int64 {
	if b < 1<<subBits {
		return int64(b)
	}
	b -= 1 << subBits
	s := b/subCount + 1
	m := int64(b%subCount + subCount)
	return m<<s + 1<<(s-1)
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	h.n++
	h.max = max(h.max, int64(d))
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the value at rank ceil(q·n), never above the maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(h.n))), 1)
	var seen int64
	for b, c := range h.counts {
		if seen += c; seen >= rank {
			return time.Duration(min(bucketValue(b), h.max))
		}
	}
	return time.Duration(h.max)
}

// acc accumulates one row for one worker; rows are merged after a phase.
type acc struct {
	count, errors, bytes, retried int64
	firstErr, firstRetryErr       string
	firstAt, firstRetryAt         time.Time
	hist                          *histogram
}

// record counts one operation that started at at and took d; retried
// says it needed at least one retry.
func (a *acc) record(at time.Time, d time.Duration, n int64, err error, retried bool) {
	a.count++
	if err != nil {
		a.errors++
		if a.firstErr == "" || at.Before(a.firstAt) {
			a.firstErr, a.firstAt = err.Error(), at
		}
		return
	}
	if retried {
		a.retried++
	}
	a.bytes += n
	if a.hist == nil {
		a.hist = new(histogram)
	}
	a.hist.add(d)
}

// retryFailed notes an attempt, started at at, that failed with the error
// msg and was retried.
func (a *acc) retryFailed(at time.Time, msg string) {
	if a.firstRetryErr == "" || at.Before(a.firstRetryAt) {
		a.firstRetryErr, a.firstRetryAt = msg, at
	}
}

func (a *acc) merge(o *acc) {
	a.count += o.count
	a.errors += o.errors
	a.bytes += o.bytes
	a.retried += o.retried
	if o.firstErr != "" && (a.firstErr == "" || o.firstAt.Before(a.firstAt)) {
		a.firstErr, a.firstAt = o.firstErr, o.firstAt
	}
	if o.firstRetryErr != "" {
		a.retryFailed(o.firstRetryAt, o.firstRetryErr)
	}
	if o.hist != nil {
		if a.hist == nil {
			a.hist = new(histogram)
		}
		a.hist.merge(o.hist)
	}
}

func (a *acc) stats(op string, elapsed time.Duration) OpStats {
	s := OpStats{
		Op: op, Count: a.count, Errors: a.errors, FirstErr: a.firstErr,
		Retried: a.retried, FirstRetryErr: a.firstRetryErr, Bytes: a.bytes, Elapsed: elapsed,
	}
	if sec := elapsed.Seconds(); sec > 0 {
		s.OpsPerSec = float64(a.count) / sec
		s.MBPerSec = float64(a.bytes) / 1e6 / sec
	}
	if h := a.hist; h != nil {
		s.P50, s.P90, s.P99, s.Max = h.quantile(0.50), h.quantile(0.90), h.quantile(0.99), time.Duration(h.max)
	}
	return s
}

// rows is a worker's set of rows in first-recorded order.
type rows struct {
	names []string
	accs  []*acc
}

func (r *rows) get(name string) *acc {
	for i, n := range r.names {
		if n == name {
			return r.accs[i]
		}
	}
	r.names = append(r.names, name)
	r.accs = append(r.accs, new(acc))
	return r.accs[len(r.accs)-1]
}
