// Package bench is kvdb's load generator. It drives any server speaking the
// client API (PUT, GET following one redirect, HEAD, DELETE) with values of
// 1 KiB to 1 GiB and reports, per operation, ops/s, MB/s, latency
// percentiles and errors. RunBaseline measures the same workload against
// this machine's plain file-system and sendfile limits.
//
// Values are streams generated from (seed, key) and checked against the
// same stream on the way back: bench never holds a value whole, and its
// memory stays well under a few MB per worker whatever the size. It knows
// nothing of kvdb's internals; cmd/kvdb only binds flags to Config.
package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is the report of a run.
type Result struct {
	Config Summary   `json:"config"`
	Ops    []OpStats `json:"ops"`
	// Baseline holds RunBaseline's rows when the caller ran it too.
	Baseline []OpStats `json:"baseline,omitempty"`
	// Elapsed is the wall time of the whole run, setup and cleanup included.
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Summary is the configuration a Result was measured with.
type Summary struct {
	URL         string `json:"url"`
	Size        string `json:"size"`
	Count       int    `json:"count,omitempty"`
	Duration    string `json:"duration,omitempty"`
	Concurrency int    `json:"concurrency"`
	Ops         string `json:"ops"`
	Prefix      string `json:"prefix"`
	Verify      bool   `json:"verify"`
	Seed        uint64 `json:"seed"`
	Retries     int    `json:"retries,omitempty"`
	// Procs is the Go scheduler's Ps (GOMAXPROCS) the load ran on.
	Procs int `json:"procs"`
}

// Summarize describes cfg, defaults applied, as a Result does.
func Summarize(cfg Config) Summary {
	cfg = cfg.withDefaults()
	s := Summary{
		URL: cfg.URL, Size: cfg.Size.String(), Count: cfg.Count, Concurrency: cfg.Concurrency,
		Ops: cfg.Ops.String(), Prefix: cfg.Prefix, Verify: cfg.Verify, Seed: cfg.Seed, Retries: cfg.Retries,
		Procs: runtime.GOMAXPROCS(0),
	}
	if cfg.Count == 0 {
		s.Duration = cfg.Duration.String()
	}
	return s
}

// Row names besides the ops themselves.
const (
	rowSetup   = "put (setup)"
	rowCleanup = "delete (cleanup)"
)

// Run drives cfg.URL as cfg says and reports what it measured. Failed
// operations are counted in the report, not returned as an error; the
// error is for a bad Config, or the context's when it was cancelled (the
// Result then holds what was done until then). Keys still present at the
// end are deleted unless cfg.Keep, even after a cancellation.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	start := time.Now()
	res := Result{Config: Summarize(cfg)}
	client := newClient(cfg.Concurrency, cfg.Timeout)
	defer client.CloseIdleConnections()
	std := newStdClient(cfg.Concurrency, cfg.Timeout)
	defer std.CloseIdleConnections()
	prog := &progress{w: cfg.Progress}
	mix := cfg.Ops
	if cfg.S3 != nil {
		bucket, _ := s3Bucket(cfg.Prefix)
		if err := createBucket(client, strings.TrimSuffix(strings.Split(cfg.URL, ",")[0], "/"), *cfg.S3, bucket, cfg.Timeout); err != nil {
			return res, err
		}
	}

	n := cfg.Concurrency
	var working int // keys PUT before the timed phase
	if mix.needsSetup() {
		working = 4 * n
		if cfg.Count > 0 && cfg.Count < working {
			working = cfg.Count
		}
		n = min(n, working)
	}
	ws := make([]*worker, n)
	masters := newMasterSet(cfg.URL)
	for i := range ws {
		ws[i] = newWorker(ctx, &cfg, client, prog, i, masters, "", cfg.Prefix)
		ws[i].std = std
	}
	defer func() {
		for _, w := range ws {
			w.release()
		}
	}()

	if working > 0 {
		res.Ops = append(res.Ops, runPhase("setup", prog, ws, nil, func(w *worker) {
			share := working / n
			if w.id < working%n {
				share++
			}
			for range share {
				if w.ctx.Err() != nil {
					return
				}
				k := w.newKey()
				if w.do(rowSetup, OpPut, k) == nil {
					w.live.add(k)
				}
			}
		})...)
	}

	units := cfg.Count
	if !mix.weighted() && units > 0 {
		units = (units + len(mix.seq) - 1) / len(mix.seq)
	}
	b := newBudget(ctx, units, cfg.Duration)
	var order []string
	for _, op := range mix.rowOrder() {
		order = append(order, string(op))
	}
	var body func(*worker)
	switch {
	case mix.weighted():
		body = func(w *worker) { runWeighted(w, mix, b) }
	case mix.needsSetup():
		body = func(w *worker) { runOnWorkingSet(w, mix.seq, b) }
	default:
		body = func(w *worker) { runSequence(w, mix.seq, b) }
	}
	if ctx.Err() == nil {
		res.Ops = append(res.Ops, runPhase(mix.String(), prog, ws, order, body)...)
	}

	if !cfg.Keep {
		// Clean up even after a cancellation: a stopped run should not
		// leave its values behind.
		for _, w := range ws {
			w.ctx = context.WithoutCancel(ctx)
		}
		res.Ops = append(res.Ops, runPhase("cleanup", prog, ws, nil, func(w *worker) {
			for _, k := range append([]int64(nil), w.live.nums...) {
				if w.do(rowCleanup, OpDelete, k) == nil {
					w.live.remove(k)
				}
			}
		})...)
	}
	res.Elapsed = time.Since(start)
	return res, ctx.Err()
}

// runSequence cycles through seq; each put writes a new key and the ops
// after it act on that key.
func runSequence(w *worker, seq []Op, b *budget) {
	for b.take() {
		var cur int64
		for _, op := range seq {
			if w.ctx.Err() != nil {
				return
			}
			if op == OpPut {
				cur = w.newKey()
				if w.do(string(op), op, cur) == nil {
					w.live.add(cur)
				}
				continue
			}
			if w.do(string(op), op, cur) == nil && op == OpDelete {
				w.live.remove(cur)
			}
		}
	}
}

// runOnWorkingSet cycles through seq (no put, no delete) on the keys the
// setup wrote, one key per cycle, in turn.
func runOnWorkingSet(w *worker, seq []Op, b *budget) {
	for i := 0; w.live.len() > 0 && b.take(); i++ {
		k := w.live.nums[i%w.live.len()]
		for _, op := range seq {
			if w.ctx.Err() != nil {
				return
			}
			w.do(string(op), op, k)
		}
	}
}

// runWeighted draws each op by weight; get, head and delete act on a
// random key this worker has written and not deleted.
func runWeighted(w *worker, mix Mix, b *budget) {
	for b.take() {
		op := mix.pick(w.rng.IntN(mix.total))
		if op != OpPut && w.live.len() == 0 {
			op = OpPut
		}
		if op == OpPut {
			k := w.newKey()
			if w.do(string(op), op, k) == nil {
				w.live.add(k)
			}
			continue
		}
		k := w.live.random(w.rng)
		if w.do(string(op), op, k) == nil && op == OpDelete {
			w.live.remove(k)
		}
	}
}

// runPhase runs body on every worker at once and returns the phase's rows:
// those named in order first, then the others as first recorded.
func runPhase(name string, prog *progress, ws []*worker, order []string, body func(*worker)) []OpStats {
	prog.start(name)
	start := time.Now()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body(w)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	prog.stop()

	merged := map[string]*acc{}
	names := append([]string(nil), order...)
	for _, w := range ws {
		for i, name := range w.rows.names {
			a, ok := merged[name]
			if !ok {
				a = new(acc)
				merged[name] = a
				if !contains(order, name) {
					names = append(names, name)
				}
			}
			a.merge(w.rows.accs[i])
		}
		w.rows = rows{}
	}
	var out []OpStats
	for _, name := range names {
		if a, ok := merged[name]; ok {
			out = append(out, a.stats(name, elapsed))
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// budget hands out units of work (ops or sequences) until a count or a
// deadline is reached, or the context ends.
type budget struct {
	ctx      context.Context
	counted  bool
	left     atomic.Int64
	deadline time.Time
}

func newBudget(ctx context.Context, units int, d time.Duration) *budget {
	b := &budget{ctx: ctx, counted: units > 0}
	if b.counted {
		b.left.Store(int64(units))
	} else {
		b.deadline = time.Now().Add(d)
	}
	return b
}

func (b *budget) take() bool {
	if b.ctx.Err() != nil {
		return false
	}
	if b.counted {
		return b.left.Add(-1) >= 0
	}
	return time.Now().Before(b.deadline)
}

// progress prints a line, rewritten about every 500 ms, while a phase runs.
type progress struct {
	w                         io.Writer
	ops, bytes, errs, retried atomic.Int64
	name                      string
	began                     time.Time
	stopc, done               chan struct{}
	lastLen                   int
}

func (p *progress) add(n int64, failed, retried bool) {
	if p.w == nil {
		return
	}
	p.ops.Add(1)
	p.bytes.Add(n)
	if failed {
		p.errs.Add(1)
	}
	if retried {
		p.retried.Add(1)
	}
}

func (p *progress) start(name string) {
	if p.w == nil {
		return
	}
	p.ops.Store(0)
	p.bytes.Store(0)
	p.errs.Store(0)
	p.retried.Store(0)
	p.name, p.began = name, time.Now()
	p.stopc, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.print("")
			case <-p.stopc:
				return
			}
		}
	}()
}

func (p *progress) stop() {
	if p.w == nil {
		return
	}
	close(p.stopc)
	<-p.done
	if p.ops.Load() > 0 {
		p.print("\n")
	}
}

func (p *progress) print(end string) {
	sec := time.Since(p.began).Seconds()
	mbps := 0.0
	if sec > 0 {
		mbps = float64(p.bytes.Load()) / 1e6 / sec
	}
	retried := ""
	if n := p.retried.Load(); n > 0 {
		retried = fmt.Sprintf(", %d retried", n)
	}
	line := fmt.Sprintf("%s: %d ops, %.1f MB/s, %d errors%s, %.1fs", p.name, p.ops.Load(), mbps, p.errs.Load(), retried, sec)
	pad := max(p.lastLen-len(line), 0)
	p.lastLen = len(line)
	if end != "" {
		p.lastLen = 0
	}
	fmt.Fprintf(p.w, "\r%s%*s%s", line, pad, "", end)
}
