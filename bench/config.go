package bench

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Value size bounds: what bench generates and verifies.
const (
	MinSize = 1 << 10 // 1 KiB
	MaxSize = 1 << 30 // 1 GiB
)

// Config describes one benchmark run. The zero value of every field but URL
// means its default; Run copies the Config and never changes the caller's.
type Config struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:3000, or several
	// masters' separated by commas (http://a:3000,http://b:3000). Keys are
	// appended to it as path segments. With several, requests go to the
	// master that answered last; one that cannot be reached or answers 503
	// is left for the next, and a follower's redirect to another (the
	// leader) is followed, with or without Retries.
	URL string
	// Size is the value size: fixed (Min == Max) or drawn uniformly from
	// [Min, Max] per key. Bounds 1 KiB to 1 GiB. Default 1 MiB.
	Size SizeRange
	// Count is the number of operations of the timed phase. With a
	// sequence such as put,get,delete it is rounded up to whole sequences.
	// 0: run for Duration instead.
	Count int
	// Duration is how long the timed phase runs when Count is 0. Workers
	// finish the sequence they are in. Default 10 s.
	Duration time.Duration
	// Concurrency is the number of parallel workers, each with its own
	// keys and buffers. Default 1.
	Concurrency int
	// Ops is the operation mix. Default put,get,delete.
	Ops Mix
	// Prefix starts every key this run writes. Default "bench/<6 random
	// hex digits>/", so runs never collide.
	Prefix string
	// Verify makes every GET compare each byte against the generated value
	// (and HEAD the Content-Length against its size).
	Verify bool
	// Seed keys the value generator: a value is a function of (Seed, key).
	Seed uint64
	// Progress, when not nil, receives a progress line, rewritten with \r
	// about every 500 ms, and a final newline.
	Progress io.Writer
	// Timeout is the idle timeout of a request: it fails when no byte moves
	// for this long, whatever the size of the value. Default 60 s.
	Timeout time.Duration
	// Keep leaves the keys written by the run in the store. By default the
	// keys still present at the end are deleted, untimed for the figures of
	// the run but reported as a "delete (cleanup)" row.
	Keep bool
	// Retries is how many times a failed operation is tried again, each
	// time from the master (a new redirect, and with Verify the check from
	// byte 0), on the next master when the failed one could not be reached
	// or answered 503. Attempts wait 100 ms, 300 ms, 900 ms, ... (×3, at
	// most 2 s) apart.
	//
	// A GET or HEAD is tried again after a transport error (refused or
	// reset connection, idle timeout, a body cut mid-way), a 5xx answer,
	// or a 404 for a key this worker wrote and has not deleted, which a
	// redirect to a replica in the middle of being replaced can give.
	//
	// A PUT or DELETE is tried again only after what a master failing over
	// gives: a transport error or a 503. Its first attempt may then have
	// taken effect, and sending it again must be safe: a PUT sends the same
	// bytes under the same key (a value is a function of Seed and key), and
	// a DELETE removes the worker's own key, so a retry that finds it gone
	// (404) counts as done: only the earlier attempt can have removed it
	// (a lost write would be, and a GET with Verify finds those). Any
	// other failed write, a 500 say, is final: a retry could only hide it.
	//
	// A verify mismatch or any other 4xx is never retried. Operations that
	// succeeded after a retry are counted as Retried, with the first error
	// that led to a retry, so that retries never hide what they rode out.
	// 0, the default, tries every op once.
	Retries int
	// Expect is the value size from which a PUT carries Expect:
	// 100-continue: a kvdb master then answers 307 before the body is sent
	// and the body goes straight to a volume (any server may answer 100
	// Continue and take it itself). Default 1 MiB; negative: never.
	Expect int64
	// S3, when set, makes URL an S3 endpoint (a kvdb --s3 gateway): keys
	// are objects addressed path-style, the first segment of Prefix is
	// their bucket (created at the start if missing), and every request is
	// signed with Signature V4 with these credentials. Expect is then off.
	S3 *S3Credentials
}

// Backoff before retries: first wait, growth factor, longest wait.
const (
	retryFirst  = 100 * time.Millisecond
	retryFactor = 3
	retryMax    = 2 * time.Second
)

// retryWait is the wait before retry number i (0-based).
func retryWait(i int) time.Duration {
	d := retryFirst
	for range i {
		if d *= retryFactor; d >= retryMax {
			return retryMax
		}
	}
	return d
}

func (c Config) withDefaults() Config {
	if c.Size == (SizeRange{}) {
		c.Size = SizeRange{Min: 1 << 20, Max: 1 << 20}
	}
	if c.Count == 0 && c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Ops.IsZero() {
		c.Ops, _ = ParseMix("put,get,delete")
	}
	if c.Prefix == "" {
		c.Prefix = fmt.Sprintf("bench/%06x/", rand.Uint32()&0xffffff)
	}
	if c.Timeout == 0 {
		c.Timeout = 60 * time.Second
	}
	if c.Expect == 0 {
		c.Expect = 1 << 20
	}
	if c.S3 != nil {
		c.Expect = -1
	}
	return c
}

// Validate reports whether the configuration can be run, defaults applied.
func (c Config) Validate() error {
	if err := c.withDefaults().validate(); err != nil {
		return err
	}
	return checkURLs(c.URL)
}

// validate checks everything but the URL, which a baseline does not need.
func (c Config) validate() error {
	switch {
	case c.Size.Min < MinSize || c.Size.Max > MaxSize:
		return fmt.Errorf("bench: size %s: want 1KiB to 1GiB", c.Size)
	case c.Size.Min > c.Size.Max:
		return fmt.Errorf("bench: size %s: minimum above maximum", c.Size)
	case c.Count < 0:
		return fmt.Errorf("bench: count %d is negative", c.Count)
	case c.Duration < 0:
		return fmt.Errorf("bench: duration %v is negative", c.Duration)
	case c.Concurrency < 0:
		return fmt.Errorf("bench: concurrency %d is negative", c.Concurrency)
	case c.Timeout < 0:
		return fmt.Errorf("bench: timeout %v is negative", c.Timeout)
	case c.Retries < 0:
		return fmt.Errorf("bench: retries %d is negative", c.Retries)
	case len(c.Prefix) > 900:
		return errors.New("bench: prefix is longer than 900 bytes (keys are at most 1024)")
	case strings.HasPrefix(c.Prefix, "_kvdb/"):
		return errors.New("bench: prefix uses the reserved _kvdb/")
	}
	if c.S3 != nil {
		if _, err := s3Bucket(c.Prefix); err != nil {
			return err
		}
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("bench: url %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("bench: url %q: want http://HOST:PORT", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("bench: url %q: no query or fragment allowed", s)
	}
	return nil
}

// SizeRange is a value size in bytes: fixed when Min == Max, else uniform in
// [Min, Max] (each key's size is a function of the seed and the key).
type SizeRange struct{ Min, Max int64 }

// String formats r as ParseSizeRange reads it.
func (r SizeRange) String() string {
	if r.Min == r.Max {
		return FormatSize(r.Min)
	}
	return FormatSize(r.Min) + "-" + FormatSize(r.Max)
}

// ParseSizeRange reads a size ("1MiB", "4096") or a range ("1KiB-16MiB"),
// each bound as ParseSize reads it. The 1 KiB to 1 GiB bounds are checked
// by Validate.
func ParseSizeRange(s string) (SizeRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	min, err := ParseSize(lo)
	if err != nil {
		return SizeRange{}, err
	}
	max := min
	if isRange {
		if max, err = ParseSize(hi); err != nil {
			return SizeRange{}, err
		}
		if min > max {
			return SizeRange{}, fmt.Errorf("size range %q: minimum above maximum", s)
		}
	}
	return SizeRange{Min: min, Max: max}, nil
}

// sizeUnits are the suffixes ParseSize knows, the longer before the
// shorter they end with ("MiB" and "MB" before "B").
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// maxParsedSize is the largest size ParseSize accepts, 4 EiB: beyond any
// real value or disk, and far enough from the int64 limit that two sizes
// add without overflow.
const maxParsedSize = 1 << 62

// ParseSize reads a byte count: a whole number with an optional unit,
// KiB MiB GiB TiB (K M G T mean the same), KB MB GB TB (powers of 1000) or
// B, in any case, with or without a space before it ("4096", "64KiB",
// "5 GiB", "1MB", "2g"). It is the one size syntax of kvdb's flags and of
// bench. Sizes above 4 EiB are refused.
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range sizeUnits {
		if len(t) > len(u.suffix) && strings.EqualFold(t[len(t)-len(u.suffix):], u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > maxParsedSize/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes such as 4096, 64KiB or 5GiB", v)
	}
	return n * mult, nil
}

// FormatSize writes n bytes in the largest binary unit that divides it
// exactly ("5GiB", "128MiB", "1536KiB", "1000"), so that ParseSize reads
// back the same number.
func FormatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// Op is one kind of request.
type Op string

// The operations bench issues.
const (
	OpPut    Op = "put"
	OpGet    Op = "get"
	OpHead   Op = "head"
	OpDelete Op = "delete"
)

// Mix is the operation mix: either a sequence each worker cycles through on
// its own keys, or a weighted random choice per operation. The zero Mix
// means the default, put,get,delete.
type Mix struct {
	spec string
	// seq is the sequence (put,get,delete) when weights is empty.
	seq []Op
	// weights are the ops of a "mixed:" spec with their weights.
	weights []weightedOp
	total   int
}

type weightedOp struct {
	op Op
	w  int
}

// IsZero reports whether m is the zero Mix.
func (m Mix) IsZero() bool { return m.spec == "" }

// String returns the spec m was parsed from.
func (m Mix) String() string { return m.spec }

// ParseMix reads an operation mix:
//
//   - "put", "get", "head": one operation over and over. get and head
//     first PUT a working set (4 keys per worker, fewer when Count is
//     smaller), reported as a "put (setup)" row and not timed with them.
//   - "put,get,delete": a sequence; each worker cycles through it on its
//     own keys: every put writes a new key, the ops after it act on that
//     key. Without a put, the sequence walks the working set, and may not
//     delete.
//   - "mixed:70get/20put/10delete": each operation drawn at random by
//     weight. put writes a new key; get, head and delete pick one of the
//     keys the worker has written and not deleted (a put when there is
//     none).
func ParseMix(s string) (Mix, error) {
	spec := strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(spec, "mixed:"); ok {
		return parseWeighted(spec, rest)
	}
	if spec == "" {
		return Mix{}, errors.New("ops: empty mix")
	}
	m := Mix{spec: spec}
	for _, f := range strings.Split(spec, ",") {
		op, err := parseOp(strings.TrimSpace(f))
		if err != nil {
			return Mix{}, fmt.Errorf("ops %q: %w", s, err)
		}
		m.seq = append(m.seq, op)
	}
	hasPut := false
	for _, op := range m.seq {
		hasPut = hasPut || op == OpPut
	}
	if !hasPut {
		for _, op := range m.seq {
			if op == OpDelete {
				return Mix{}, fmt.Errorf("ops %q: delete needs a put earlier in the sequence", s)
			}
		}
		return m, nil
	}
	// Going round the cycle twice, every get, head or delete must find a
	// key a put wrote and no delete removed since.
	have := false
	for i := 0; i < 2*len(m.seq); i++ {
		switch op := m.seq[i%len(m.seq)]; {
		case op == OpPut:
			have = true
		case !have:
			return Mix{}, fmt.Errorf("ops %q: %s after a delete has no key; put first", s, op)
		case op == OpDelete:
			have = false
		}
	}
	return m, nil
}

func parseWeighted(spec, rest string) (Mix, error) {
	m := Mix{spec: spec}
	seen := map[Op]bool{}
	for _, f := range strings.Split(rest, "/") {
		f = strings.TrimSpace(f)
		i := 0
		for i < len(f) && f[i] >= '0' && f[i] <= '9' {
			i++
		}
		w, err := strconv.Atoi(f[:i])
		if err != nil || w > 1e6 {
			return Mix{}, fmt.Errorf("ops %q: %q: want a weight then an op, e.g. 70get", spec, f)
		}
		op, err := parseOp(f[i:])
		if err != nil {
			return Mix{}, fmt.Errorf("ops %q: %w", spec, err)
		}
		if seen[op] {
			return Mix{}, fmt.Errorf("ops %q: %s given twice", spec, op)
		}
		seen[op] = true
		if w > 0 {
			m.weights = append(m.weights, weightedOp{op, w})
			m.total += w
		}
	}
	if m.total == 0 {
		return Mix{}, fmt.Errorf("ops %q: all weights are zero", spec)
	}
	return m, nil
}

func parseOp(s string) (Op, error) {
	switch op := Op(strings.ToLower(s)); op {
	case OpPut, OpGet, OpHead, OpDelete:
		return op, nil
	}
	return "", fmt.Errorf("unknown op %q: want put, get, head or delete", s)
}

// weighted reports whether ops are drawn at random.
func (m Mix) weighted() bool { return len(m.weights) > 0 }

// needsSetup reports whether a sequence reads keys it never writes.
func (m Mix) needsSetup() bool {
	if m.weighted() {
		return false
	}
	for _, op := range m.seq {
		if op == OpPut {
			return false
		}
	}
	return true
}

// pick draws an op by weight; x is uniform in [0, total).
func (m Mix) pick(x int) Op {
	for _, w := range m.weights {
		if x < w.w {
			return w.op
		}
		x -= w.w
	}
	return m.weights[len(m.weights)-1].op
}

// rowOrder is the order of the report's rows.
func (m Mix) rowOrder() []Op {
	var ops []Op
	add := func(op Op) {
		for _, o := range ops {
			if o == op {
				return
			}
		}
		ops = append(ops, op)
	}
	for _, op := range m.seq {
		add(op)
	}
	for _, w := range m.weights {
		add(w.op)
	}
	add(OpPut) // a weighted mix may put when it has no key to read
	return ops
}
