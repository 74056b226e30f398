package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cespare/xxhash/v2"
)

// Issue 16, "One key, one order": every key must behave as one register
// that each request reads or changes at a single instant between its call
// and its answer. These tests let concurrent clients PUT, POST, DELETE and
// GET a few keys of a real cluster (separate kvdb processes), record every
// call and answer, and hand the history to porcupine, a linearizability
// checker: it searches for one order of the operations that respects
// real time and explains every answer. If there is none, the test fails
// with the operations that cannot be ordered and an HTML visualization.
//
// Environment:
//
//	KVDB_LINZ_DURATION  how long the clients run (default 8s), e.g. 2m
//	KVDB_LINZ_OPS       mixed (default), put-only (PUTs whose 200/201 is
//	                    not checked, and GETs) or post-delete (POST, DELETE
//	                    and GET): the two narrower mixes isolate the model
//	KVDB_LINZ_SEED      the clients' random seed (default: the clock; logged)
//	KVDB_LINZ_CLIENTS   concurrent clients (default 12)
//	KVDB_LINZ_VOLUME_404=skip  leave out the GETs a volume answered 404
//	                    after the master's 302 (a stale redirect), to look
//	                    past that fault for others

const (
	// Half the operations go to linzHot keys, where many clients race;
	// the other half to linzCold keys, each quiet enough that a value is
	// often read before another write overwrites it: a write that is
	// acknowledged and then lost only shows when nothing overwrote it.
	linzHot, linzCold = 3, 12
	// linzTimeout bounds every request, so a SIGSTOPped volume cannot hang
	// a client: the answer then counts as lost.
	linzTimeout = 10 * time.Second
)

// linzMix is how often each operation is picked, in percent.
type linzMix struct {
	put, post, del int // the rest are GETs
	// anyWrite accepts 200 and 201 alike for a PUT: the order of writes
	// is still checked, through what GETs see, but not "new or replaced".
	anyWrite bool
}

var linzMixes = map[string]linzMix{
	"mixed":       {put: 30, post: 20, del: 15},
	"put-only":    {put: 55, anyWrite: true},
	"post-delete": {post: 35, del: 25},
}

type linzOp uint8

const (
	linzPut linzOp = iota
	linzPost
	linzDelete
	linzGet
)

func (o linzOp) String() string { return [...]string{"PUT", "POST", "DELETE", "GET"}[o] }

// linzInput is an operation's call.
type linzInput struct {
	Key   string
	Op    linzOp
	Value string // PUT, POST: the name of the value written (see linzBody)
	Size  int64
}

type linzResult uint8

const (
	linzCreated  linzResult = iota // 201 (PUT, POST)
	linzReplaced                   // 200 (PUT)
	linzWritten                    // 200 or 201 (PUT, with linzMix.anyWrite)
	linzConflict                   // 409 (POST)
	linzDeleted                    // 200 (DELETE)
	linzAbsent                     // 404 (DELETE, GET: from the master or, after its 302, the volume)
	linzRead                       // 200 with a value (GET)
	linzUnknown                    // no answer, or 5xx: the write may or may not have happened (see linzClient.write)
	linzRefused                    // any other 4xx: the write had no effect
)

// linzOutput is an operation's answer.
type linzOutput struct {
	Result linzResult
	Status int    // the HTTP status, 0 if none
	Value  string // linzRead: the name of the value read, or "!" and what was wrong with the bytes
}

// linzStep is the register: a state is the name of the value the key
// holds, "" when absent, and the result is every state the operation may
// leave (none: the answer does not fit the state). An unknown outcome
// leaves both: the write may have happened or not. porcupine tracks the
// set (NondeterministicModel), so such a write need not be tried at every
// place it could go, once applied and once not.
func linzStep(state, input, output any) []any {
	s, in, out := state.(string), input.(linzInput), output.(linzOutput)
	if out.Result == linzRefused {
		return []any{s}
	}
	when := func(ok bool, next ...any) []any {
		if ok {
			return next
		}
		return nil
	}
	switch in.Op {
	case linzPut:
		switch out.Result {
		case linzCreated:
			return when(s == "", in.Value)
		case linzReplaced:
			return when(s != "", in.Value)
		case linzWritten:
			return []any{in.Value}
		case linzUnknown:
			return []any{s, in.Value}
		}
	case linzPost:
		switch out.Result {
		case linzCreated:
			return when(s == "", in.Value)
		case linzConflict:
			return when(s != "", s)
		case linzUnknown:
			if s == "" {
				return []any{s, in.Value}
			}
			return []any{s}
		}
	case linzDelete:
		switch out.Result {
		case linzDeleted:
			return when(s != "", "")
		case linzAbsent:
			return when(s == "", "")
		case linzUnknown:
			return []any{s, ""}
		}
	case linzGet:
		switch out.Result {
		case linzRead:
			return when(s == out.Value, s)
		case linzAbsent:
			return when(s == "", s)
		}
	}
	return nil
}

// linzNeeds says what state an operation requires, for the explanation.
func linzNeeds(in linzInput, out linzOutput) string {
	switch {
	case in.Op == linzGet && out.Result == linzRead:
		return "the key to hold " + out.Value
	case out.Result == linzCreated, out.Result == linzAbsent:
		return "the key to be absent"
	case out.Result == linzReplaced, out.Result == linzConflict, out.Result == linzDeleted:
		return "the key to be present"
	}
	return "nothing"
}

func linzDescribeState(state any) string {
	if s := state.(string); s != "" {
		return s
	}
	return "absent"
}

func linzDescribe(input, output any) string {
	// The visualization may describe an operation it has no input for.
	in, ok := input.(linzInput)
	out, ok2 := output.(linzOutput)
	if !ok || !ok2 {
		return fmt.Sprintf("%v → %v", input, output)
	}
	var b strings.Builder
	b.WriteString(in.Op.String())
	if in.Value != "" {
		fmt.Fprintf(&b, " %s (%s)", in.Value, linzSize(in.Size))
	}
	b.WriteString(" → ")
	switch {
	case out.Result == linzUnknown && out.Status == 0:
		b.WriteString("lost")
	case out.Result == linzRead:
		fmt.Fprintf(&b, "%d %s", out.Status, out.Value)
	default:
		b.WriteString(strconv.Itoa(out.Status))
	}
	return b.String()
}

func linzSize(n int64) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// linzPartition splits a history by key, in key order: keys are
// independent registers (porcupine checks each on its own).
func linzPartition(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range history {
		k := op.Input.(linzInput).Key
		byKey[k] = append(byKey[k], op)
	}
	var parts [][]porcupine.Operation
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		parts = append(parts, byKey[k])
	}
	return parts
}

var linzModel = (&porcupine.NondeterministicModel{
	Partition:         linzPartition,
	Init:              func() []any { return []any{""} },
	Step:              linzStep,
	Hash:              func(state any) uint64 { return xxhash.Sum64String(state.(string)) },
	DescribeOperation: linzDescribe,
	DescribeState:     linzDescribeState,
	DescribeOperationMetadata: func(info any) string {
		s, _ := info.(string)
		return s
	},
}).ToModel()

// linzHead is the first line of the value named name: its name and total
// size, so a reader can tell which value it got and check every byte.
func linzHead(name string, size int64) string { return fmt.Sprintf("%s %d\n", name, size) }

// linzBody streams the value named name, size bytes: its head line, then
// bytes determined by the name (size must leave room for the head).
func linzBody(name string, size int64) io.Reader {
	head := linzHead(name, size)
	return io.MultiReader(strings.NewReader(head), newCrashStream(xxhash.Sum64String(name), size-int64(len(head))))
}

// linzReadValue names the value a body of length bytes (-1: unknown)
// holds: a value written whole by a client, or "!" and what is wrong with
// the bytes. An error is a transfer that broke off, which says nothing
// about the value.
func linzReadValue(body io.Reader, length int64) (string, error) {
	br := bufio.NewReaderSize(body, 4096)
	line, err := br.ReadSlice('\n')
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, bufio.ErrBufferFull):
		return fmt.Sprintf("!no value: %q", line[:min(len(line), 40)]), nil
	case err != nil:
		return "", err
	}
	var name string
	var size int64
	if _, err := fmt.Sscanf(string(line), "%s %d\n", &name, &size); err != nil || size < int64(len(line)) {
		return fmt.Sprintf("!no value: %q", line[:min(len(line), 40)]), nil
	}
	if length >= 0 && length != size {
		return fmt.Sprintf("!%s with %d bytes instead of %d", name, length, size), nil
	}
	want := newCrashStream(xxhash.Sum64String(name), size-int64(len(line)))
	got, exp := make([]byte, 32<<10), make([]byte, 32<<10)
	for off := int64(len(line)); off < size; {
		n := int(min(size-off, int64(len(got))))
		if _, err := io.ReadFull(br, got[:n]); err != nil {
			return "", err
		}
		_, _ = io.ReadFull(want, exp[:n])
		if !bytes.Equal(got[:n], exp[:n]) {
			i := 0
			for got[i] == exp[i] {
				i++
			}
			return fmt.Sprintf("!%s differing at byte %d", name, off+int64(i)), nil
		}
		off += int64(n)
	}
	if n, _ := br.Read(got[:1]); n > 0 {
		return fmt.Sprintf("!%s followed by more bytes", name), nil
	}
	return name, nil
}

// linzThrottle trickles r out, chunk bytes per pause, and counts the bytes
// handed over: a slow client, so that writes overlap.
type linzThrottle struct {
	r     io.Reader
	chunk int
	pause time.Duration
	sent  atomic.Int64
}

func (s *linzThrottle) Read(b []byte) (int, error) {
	time.Sleep(s.pause)
	n, err := s.r.Read(b[:min(len(b), s.chunk)])
	s.sent.Add(int64(n))
	return n, err
}

// linzRun is one run of the clients against a cluster.
type linzRun struct {
	ctx           context.Context // done when the test ends early
	urls          []string        // the masters; each request picks one
	mix           linzMix
	skipVolume404 bool
	start         time.Time
	deadline      time.Time
	rnd           *rand.Rand // the fault schedule's (the test goroutine's only)

	mu          sync.Mutex
	annotations []porcupine.Annotation
}

// now is the history's clock: nanoseconds since the run started.
func (r *linzRun) now() int64 { return int64(time.Since(r.start)) }

// pause sleeps d unless that would end less than a second before the
// deadline, so the faults stop in time for the cluster to settle.
func (r *linzRun) pause(d time.Duration) bool {
	if time.Now().Add(d + time.Second).After(r.deadline) {
		return false
	}
	time.Sleep(d)
	return true
}

func (r *linzRun) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.rnd.Int64N(int64(hi-lo)))
}

// annotate logs a fault and marks it on the visualization's timeline.
func (r *linzRun) annotate(t *testing.T, start int64, what string) {
	t.Helper()
	t.Logf("%.3fs..%.3fs: %s", float64(start)/1e9, float64(r.now())/1e9, what)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.annotations = append(r.annotations, porcupine.Annotation{
		Tag: "faults", Start: start, End: r.now(), Description: what, BackgroundColor: "#fcc",
	})
}

// linzClient is one client: one request at a time, each recorded.
type linzClient struct {
	id     int
	run    *linzRun
	rnd    *rand.Rand
	client *http.Client
	n      int
	ops    []porcupine.Operation
	stats  map[string]int
}

func (c *linzClient) loop() {
	for time.Now().Before(c.run.deadline) && c.run.ctx.Err() == nil {
		key := fmt.Sprintf("linz/hot%d", c.rnd.IntN(linzHot))
		if c.rnd.IntN(2) == 0 {
			key = fmt.Sprintf("linz/cold%d", c.rnd.IntN(linzCold))
		}
		var op porcupine.Operation
		var keep bool
		switch p, m := c.rnd.IntN(100), c.run.mix; {
		case p < m.put:
			op, keep = c.write(linzPut, key)
		case p < m.put+m.post:
			op, keep = c.write(linzPost, key)
		case p < m.put+m.post+m.del:
			op, keep = c.write(linzDelete, key)
		default:
			op, keep = c.get(key)
		}
		if keep {
			c.ops = append(c.ops, op)
		}
		// Read your own write, often at once: what an acknowledged write
		// left should be there.
		if in := op.Input; keep && in.(linzInput).Value != "" && op.Return > 0 && c.rnd.IntN(2) == 0 {
			if op, keep := c.get(key); keep {
				c.ops = append(c.ops, op)
			}
		}
		if !keep || op.Output.(linzOutput).Result == linzUnknown {
			// Something is down: do not pile up operations whose outcome
			// is unknown (each widens the checker's search).
			time.Sleep(time.Duration(50+c.rnd.IntN(100)) * time.Millisecond)
		}
	}
	c.client.CloseIdleConnections()
}

// write sends a PUT, POST or DELETE. Most values are small; one in six is
// 64 KiB to 1 MiB sent at about 1.6 MB/s, so that it overlaps others.
func (c *linzClient) write(op linzOp, key string) (porcupine.Operation, bool) {
	in := linzInput{Key: key, Op: op}
	throttled := false
	if op != linzDelete {
		c.n++
		in.Value = fmt.Sprintf("c%d-op%d", c.id, c.n)
		if c.rnd.IntN(6) == 0 {
			in.Size = 64<<10 + c.rnd.Int64N(960<<10)
			throttled = true
		} else {
			in.Size = 64 + c.rnd.Int64N(4<<10)
		}
	}
	// Each attempt (a follower sends the write on to the leader) sends the
	// body afresh.
	body := func() io.Reader {
		switch {
		case op == linzDelete:
			return nil
		case throttled:
			return &linzThrottle{r: linzBody(in.Value, in.Size), chunk: 32 << 10, pause: 20 * time.Millisecond}
		}
		return linzBody(in.Value, in.Size)
	}
	// The slow (large) writes ask first, as curl does for large bodies:
	// the master redirects them to a volume, which takes the body and
	// coordinates the write. The others stream through the master.
	redirected := in.Size >= 64<<10
	target := c.run.urls[c.rnd.IntN(len(c.run.urls))] + "/" + key
	call := c.run.now()
	var resp *http.Response
	var err error
	for hop := 0; hop < 4; hop++ {
		var req *http.Request
		req, err = http.NewRequestWithContext(c.run.ctx, op.String(), target, body())
		if err != nil {
			panic(err)
		}
		req.ContentLength = in.Size
		toVolume := strings.Contains(target, "/_kvdb/write/")
		if redirected && !toVolume {
			req.Header.Set("Expect", "100-continue")
		}
		resp, err = c.client.Do(req)
		if err != nil || resp.StatusCode != http.StatusTemporaryRedirect || toVolume {
			break
		}
		target = resp.Header.Get("Location")
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if strings.Contains(target, "/_kvdb/write/") {
			c.stats[op.String()+" redirected"]++
		} else {
			c.stats[op.String()+" sent on to the leader"]++
		}
	}
	status, reason := 0, ""
	if err == nil {
		status = resp.StatusCode
		if status >= 300 {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
			reason = strings.TrimSpace(string(b))
		}
		_, _ = io.Copy(io.Discard, resp.Body) // the status is the answer
		resp.Body.Close()
	}
	ret := c.run.now()
	out := linzOutput{Status: status}
	switch {
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		// It never reached a server: no effect, nothing to check.
		c.stats[op.String()+" refused connection"]++
		return porcupine.Operation{}, false
	case err != nil:
		// The answer was lost: the server may still apply the write, at
		// any time. Its return goes after the end of the history.
		out.Result = linzUnknown
		c.stats[op.String()+" lost"]++
		return porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: -1, Metadata: err.Error()}, true
	case status >= 500:
		// A failed write must change nothing; a 5xx is taken as "maybe"
		// all the same, so that only ordering faults fail this test.
		out.Result = linzUnknown
	case status == 201 && op != linzDelete:
		out.Result = linzCreated
	case status == 200 && op == linzPut:
		out.Result = linzReplaced
	case status == 409 && op == linzPost:
		out.Result = linzConflict
	case status == 200 && op == linzDelete:
		out.Result = linzDeleted
	case status == 404 && op == linzDelete:
		out.Result = linzAbsent
	case status >= 400:
		out.Result = linzRefused
	default:
		// A status no write may answer: nothing explains it.
		out.Result = linzRead
		out.Value = fmt.Sprintf("!status %d", status)
	}
	if op == linzPut && c.run.mix.anyWrite && (out.Result == linzCreated || out.Result == linzReplaced) {
		out.Result = linzWritten
	}
	c.stats[fmt.Sprintf("%s %d", op, status)]++
	if out.Result == linzUnknown {
		ret = -1
	}
	return porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: ret, Metadata: reason}, true
}

func (c *linzClient) httpGet(u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(c.run.ctx, "GET", u, nil)
	if err != nil {
		return nil, err
	}
	return c.client.Do(req)
}

// get asks the master, follows its redirect by hand and reads the value.
// A GET that got no answer changed nothing and is left out.
func (c *linzClient) get(key string) (porcupine.Operation, bool) {
	in := linzInput{Key: key, Op: linzGet}
	call := c.run.now()
	out, stat, meta, ok := c.fetch(c.run.urls[c.rnd.IntN(len(c.run.urls))] + "/" + key)
	c.stats["GET "+stat]++
	if !ok {
		return porcupine.Operation{}, false
	}
	return porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: c.run.now(), Metadata: meta}, true
}

func (c *linzClient) fetch(u string) (out linzOutput, stat, meta string, ok bool) {
	resp, err := c.httpGet(u)
	if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		return out, "refused connection", "", false
	} else if err != nil {
		return out, "lost", "", false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case 404:
		return linzOutput{Result: linzAbsent, Status: 404}, "404 from the master", "", true
	case 302:
	default:
		return out, fmt.Sprintf("%d from the master", resp.StatusCode), "", false
	}
	for hop := 0; hop < 3; hop++ {
		loc, err := resp.Location()
		if err != nil {
			return out, "302 without a Location", "", false
		}
		meta = "from " + loc.Host
		resp, err = c.httpGet(loc.String())
		if err != nil {
			return out, "lost at the volume", "", false
		}
		switch resp.StatusCode {
		case 200:
			name, err := linzReadValue(resp.Body, resp.ContentLength)
			resp.Body.Close()
			if err != nil {
				return out, "200 cut off", "", false
			}
			return linzOutput{Result: linzRead, Status: 200, Value: name}, "200", meta, true
		case 404:
			resp.Body.Close()
			if c.run.skipVolume404 {
				return out, "404 from the volume after a 302 (left out)", "", false
			}
			// The master named a version the volume no longer has:
			// a read that sees a gap. Nothing but an absent key explains it.
			return linzOutput{Result: linzAbsent, Status: 404}, "404 from the volume after a 302",
				"404 from the volume at " + loc.String(), true
		case 301, 302, 303, 307, 308:
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			continue
		}
		resp.Body.Close()
		return out, fmt.Sprintf("%d from the volume", resp.StatusCode), "", false
	}
	return out, "too many redirects", "", false
}

// linzSettings are the environment's knobs (see the top of this file).
type linzSettings struct {
	duration      time.Duration
	mix           string
	seed          uint64
	clients       int
	skipVolume404 bool
}

func linzConfig(t *testing.T) linzSettings {
	t.Helper()
	cfg := linzSettings{duration: 8 * time.Second, mix: "mixed", seed: uint64(time.Now().UnixNano()), clients: 12}
	if s := os.Getenv("KVDB_LINZ_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("KVDB_LINZ_DURATION=%q: want a duration such as 2m", s)
		}
		cfg.duration = d
	}
	if s := os.Getenv("KVDB_LINZ_OPS"); s != "" {
		if _, ok := linzMixes[s]; !ok {
			t.Fatalf("KVDB_LINZ_OPS=%q: want one of %v", s, slices.Sorted(maps.Keys(linzMixes)))
		}
		cfg.mix = s
	}
	if s := os.Getenv("KVDB_LINZ_SEED"); s != "" {
		var err error
		if cfg.seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("KVDB_LINZ_SEED=%q: %v", s, err)
		}
	}
	if s := os.Getenv("KVDB_LINZ_CLIENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("KVDB_LINZ_CLIENTS=%q: want a positive number", s)
		}
		cfg.clients = n
	}
	switch s := os.Getenv("KVDB_LINZ_VOLUME_404"); s {
	case "":
	case "skip":
		cfg.skipVolume404 = true
	default:
		t.Fatalf("KVDB_LINZ_VOLUME_404=%q: want skip or nothing", s)
	}
	t.Logf("KVDB_LINZ_DURATION=%v KVDB_LINZ_OPS=%s KVDB_LINZ_SEED=%d KVDB_LINZ_CLIENTS=%d KVDB_LINZ_VOLUME_404=%s",
		cfg.duration, cfg.mix, cfg.seed, cfg.clients, map[bool]string{true: "skip"}[cfg.skipVolume404])
	return cfg
}

// linzTest runs the clients for the configured time while faults (run on
// the test goroutine, which may call t.Fatal) does its damage, then checks
// the history.
func linzTest(t *testing.T, faults func(*testing.T, *testProcCluster, *linzRun)) {
	linzTestOn(t, startProcCluster(t, 3, 2), faults)
}

// linzTestOn runs the history check on cluster c, its clients spread over
// every master.
func linzTestOn(t *testing.T, c *testProcCluster, faults func(*testing.T, *testProcCluster, *linzRun)) {
	cfg := linzConfig(t)
	run := &linzRun{urls: c.urls, mix: linzMixes[cfg.mix], skipVolume404: cfg.skipVolume404, rnd: rand.New(rand.NewPCG(cfg.seed, 1<<32))}
	var cancel context.CancelFunc
	run.ctx, cancel = context.WithCancel(context.Background())
	run.start = time.Now()
	run.deadline = run.start.Add(cfg.duration)

	// If a fault's restart fails the test, the clients stop before the
	// processes are killed.
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	cs := make([]*linzClient, cfg.clients)
	for i := range cs {
		cs[i] = &linzClient{
			id:  i,
			run: run,
			rnd: rand.New(rand.NewPCG(cfg.seed, uint64(i))),
			client: &http.Client{
				Timeout:       linzTimeout,
				Transport:     &http.Transport{MaxIdleConnsPerHost: 4, ExpectContinueTimeout: linzTimeout},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			},
			stats: map[string]int{},
		}
		wg.Go(cs[i].loop)
	}
	if faults != nil {
		faults(t, c, run)
	}
	wg.Wait()
	elapsed := time.Since(run.start)

	var history []porcupine.Operation
	stats := map[string]int{}
	var end int64
	for _, cl := range cs {
		history = append(history, cl.ops...)
		for k, n := range cl.stats {
			stats[k] += n
		}
		for _, op := range cl.ops {
			end = max(end, op.Return)
		}
	}
	unknown := 0
	for i := range history {
		if history[i].Return < 0 {
			history[i].Return = end + 1 // after the end: maybe applied, maybe not
			unknown++
		}
	}
	var sb strings.Builder
	for _, k := range slices.Sorted(maps.Keys(stats)) {
		fmt.Fprintf(&sb, "\n  %-40s %6d", k, stats[k])
	}
	t.Logf("%d operations in %v (%d with an unknown outcome) on %d keys by %d clients:%s",
		len(history), elapsed.Round(time.Millisecond), unknown, linzHot+linzCold, cfg.clients, sb.String())

	timeout := 60*time.Second + 2*cfg.duration
	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linzModel, history, timeout)
	t.Logf("porcupine: %s in %v", res, time.Since(checkStart).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		t.Fatalf("porcupine gave up after %v: the history (%d operations) is neither proven linearizable nor not; shorten KVDB_LINZ_DURATION", timeout, len(history))
	}
	info.AddAnnotations(run.annotations)
	path := linzVisualize(t, info)
	t.Errorf("the history is not linearizable (seed %d):\n%s\nvisualization (open in a browser; the failing key's partition shows the longest partial order): %s",
		cfg.seed, linzExplain(linzPartition(history), info, history), path)
}

// linzVisualize writes porcupine's HTML view of the history where it
// outlives the test: under -artifacts, the test's artifact directory; else
// a temporary directory that is kept.
func linzVisualize(t *testing.T, info porcupine.LinearizationInfo) string {
	t.Helper()
	var dir string
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		dir = t.ArtifactDir()
	} else {
		var err error
		if dir, err = os.MkdirTemp("", "kvdb-linearizability-"); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".html")
	if err := porcupine.VisualizePath(linzModel, info, path); err != nil {
		t.Errorf("visualization: %v", err)
	}
	return path
}

// linzExplain says, for each key whose operations cannot be ordered, how
// far the checker got: the end of the longest order it found, the value
// that leaves, and those of the operations that could come next which that
// value does not explain. (An operation that does fit there is left out:
// what must follow it does not.)
func linzExplain(parts [][]porcupine.Operation, info porcupine.LinearizationInfo, all []porcupine.Operation) string {
	var b strings.Builder
	at := func(ns int64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }
	end := int64(0)
	for _, op := range all {
		end = max(end, op.Return)
	}
	describe := func(op porcupine.Operation) string {
		ret := at(op.Return)
		if op.Output.(linzOutput).Result == linzUnknown && op.Return == end {
			ret = "∞"
		}
		s := fmt.Sprintf("client %2d  %s..%s  %s", op.ClientId, at(op.Call), ret, linzDescribe(op.Input, op.Output))
		if m, _ := op.Metadata.(string); m != "" {
			s += "  [" + m + "]"
		}
		return s
	}
	writers := map[string]porcupine.Operation{}
	for _, op := range all {
		if v := op.Input.(linzInput).Value; v != "" {
			writers[v] = op
		}
	}
	failed := 0
	for p, ops := range parts {
		var longest []int
		for _, l := range info.PartialLinearizations()[p] {
			if len(l) > len(longest) {
				longest = l
			}
		}
		if len(longest) == len(ops) {
			continue
		}
		if failed++; failed > 3 {
			continue
		}
		key := ops[0].Input.(linzInput).Key
		state := linzModel.Init()
		done := make([]bool, len(ops))
		for _, id := range longest {
			_, state = linzModel.Step(state, ops[id].Input, ops[id].Output)
			done[id] = true
		}
		var values []string
		for _, v := range state.([]any) {
			values = append(values, linzDescribeState(v))
		}
		fmt.Fprintf(&b, "key %s: no order explains its %d operations; the longest order the checker found has %d, ending with:\n",
			key, len(ops), len(longest))
		for _, id := range longest[max(0, len(longest)-4):] {
			fmt.Fprintf(&b, "    %s\n", describe(ops[id]))
		}
		fmt.Fprintf(&b, "  which leaves the key %s. Of the operations that could come next (called before any of them answered), these do not fit:\n",
			strings.Join(values, " or "))
		first := int64(1 << 62)
		for id, op := range ops {
			if !done[id] {
				first = min(first, op.Return)
			}
		}
		shown := 0
		for id, op := range ops {
			if done[id] || op.Call > first {
				continue
			}
			in, out := op.Input.(linzInput), op.Output.(linzOutput)
			if ok, _ := linzModel.Step(state, in, out); ok {
				continue // it fits here, but what follows it does not
			}
			if shown++; shown > 8 {
				b.WriteString("    ...\n")
				break
			}
			fmt.Fprintf(&b, "    %s: needs %s\n", describe(op), linzNeeds(in, out))
			if w, ok := writers[out.Value]; ok && in.Op == linzGet {
				fmt.Fprintf(&b, "        %s was written by: %s\n", out.Value, describe(w))
			}
		}
	}
	if failed > 3 {
		fmt.Fprintf(&b, "(keys not shown: %d more)\n", failed-3)
	}
	return b.String()
}

// TestLinearizableModel checks the model on small histories written by
// hand, among them the issue's: no cluster, so it runs in milliseconds.
func TestLinearizableModel(t *testing.T) {
	const never = 1 << 40 // a lost answer's return
	put := func(c int, call, ret int64, v string, r linzResult) porcupine.Operation {
		st := map[linzResult]int{linzCreated: 201, linzReplaced: 200, linzWritten: 200, linzUnknown: 503}[r]
		return porcupine.Operation{ClientId: c, Input: linzInput{Key: "k", Op: linzPut, Value: v}, Call: call, Output: linzOutput{Result: r, Status: st}, Return: ret}
	}
	post := func(c int, call, ret int64, v string, r linzResult) porcupine.Operation {
		op := put(c, call, ret, v, r)
		in := op.Input.(linzInput)
		in.Op = linzPost
		op.Input = in
		return op
	}
	del := func(c int, call, ret int64, r linzResult) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: linzInput{Key: "k", Op: linzDelete}, Call: call, Output: linzOutput{Result: r}, Return: ret}
	}
	get := func(c int, call, ret int64, v string) porcupine.Operation {
		out := linzOutput{Result: linzRead, Status: 200, Value: v}
		if v == "" {
			out = linzOutput{Result: linzAbsent, Status: 404}
		}
		return porcupine.Operation{ClientId: c, Input: linzInput{Key: "k", Op: linzGet}, Call: call, Output: out, Return: ret}
	}
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"sequential", []porcupine.Operation{
			put(0, 0, 1, "a", linzCreated), get(0, 2, 3, "a"), post(0, 4, 5, "b", linzConflict),
			del(0, 6, 7, linzDeleted), get(0, 8, 9, ""), del(0, 10, 11, linzAbsent), post(0, 12, 13, "c", linzCreated),
			put(0, 14, 15, "d", linzReplaced), get(0, 16, 17, "d"),
		}, porcupine.Ok},
		{"PUT 201 on a present key", []porcupine.Operation{put(0, 0, 1, "a", linzCreated), put(0, 2, 3, "b", linzCreated)}, porcupine.Illegal},
		{"POST 409 on an absent key", []porcupine.Operation{post(0, 0, 1, "a", linzConflict)}, porcupine.Illegal},
		// The issue: a slow PUT is acknowledged with 200 after a POST
		// created the key during it, and the POST's value stays.
		{"slow PUT 200 around POST 201, POST's value read", []porcupine.Operation{
			put(0, 0, 10, "slow", linzReplaced), post(1, 2, 3, "post", linzCreated), get(0, 11, 12, "post"),
		}, porcupine.Illegal},
		{"slow PUT 200 around POST 201, PUT's value read", []porcupine.Operation{
			put(0, 0, 10, "slow", linzReplaced), post(1, 2, 3, "post", linzCreated), get(0, 11, 12, "slow"),
		}, porcupine.Ok},
		{"slow PUT 200 around fast PUT 201, fast one read", []porcupine.Operation{
			put(0, 0, 10, "slow", linzReplaced), put(1, 2, 3, "fast", linzCreated), get(0, 11, 12, "fast"),
		}, porcupine.Illegal},
		{"both PUTs 201", []porcupine.Operation{put(0, 0, 10, "slow", linzCreated), put(1, 2, 3, "fast", linzCreated)}, porcupine.Illegal},
		// Without statuses, two overlapping PUTs may go either way.
		{"PUTs without status", []porcupine.Operation{
			put(0, 0, 10, "slow", linzWritten), put(1, 2, 3, "fast", linzWritten), get(0, 11, 12, "fast"),
		}, porcupine.Ok},
		// The stale redirect: a GET that overlaps an overwrite but sees
		// no value at all.
		{"404 during an overwrite", []porcupine.Operation{
			put(0, 0, 1, "a", linzCreated), get(1, 2, 5, ""), put(0, 3, 4, "b", linzReplaced),
		}, porcupine.Illegal},
		{"404 during a DELETE", []porcupine.Operation{
			put(0, 0, 1, "a", linzCreated), get(1, 2, 5, ""), del(0, 3, 4, linzDeleted),
		}, porcupine.Ok},
		{"bytes no one wrote", []porcupine.Operation{put(0, 0, 1, "a", linzCreated), get(0, 2, 3, "!a cut short")}, porcupine.Illegal},
		// A lost or failed write may take effect at any time after its
		// call, or never; once seen, it has happened.
		{"lost PUT seen late", []porcupine.Operation{
			put(0, 0, never, "x", linzUnknown), get(1, 1, 2, ""), get(1, 3, 4, "x"),
		}, porcupine.Ok},
		{"lost PUT never seen", []porcupine.Operation{
			put(0, 0, never, "x", linzUnknown), get(1, 1, 2, ""), post(1, 3, 4, "y", linzCreated), get(1, 5, 6, "y"),
		}, porcupine.Ok},
		{"lost PUT seen, then gone", []porcupine.Operation{
			put(0, 0, never, "x", linzUnknown), get(1, 1, 2, "x"), get(1, 3, 4, ""),
		}, porcupine.Illegal},
		{"failed POST on a present key", []porcupine.Operation{
			put(0, 0, 1, "a", linzCreated), post(0, 2, never, "b", linzUnknown), get(1, 3, 4, "a"), get(1, 5, 6, "b"),
		}, porcupine.Illegal},
		{"lost DELETE", []porcupine.Operation{
			put(0, 0, 1, "a", linzCreated), del(0, 2, never, linzUnknown), get(1, 3, 4, "a"), get(1, 5, 6, ""), post(1, 7, 8, "c", linzCreated),
		}, porcupine.Ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(linzModel, tc.history, 10*time.Second); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestLinearizableValues: a value read back whole is named; altered,
// shortened or lengthened bytes are not a value anyone wrote; a transfer
// that breaks off is an error, not a value.
func TestLinearizableValues(t *testing.T) {
	const size = 100 << 10
	whole, err := io.ReadAll(linzBody("c1-op2", size))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(whole)
	flipped[size/2] ^= 1
	for _, tc := range []struct {
		name   string
		body   io.Reader
		length int64
		want   string // "" for an error
	}{
		{"whole", bytes.NewReader(whole), size, "c1-op2"},
		{"whole, length unknown", bytes.NewReader(whole), -1, "c1-op2"},
		{"a bit flipped", bytes.NewReader(flipped), size, "!c1-op2 differing at byte 51200"},
		{"wrong length", bytes.NewReader(whole[:size-1]), size - 1, "!c1-op2 with 102399 bytes instead of 102400"},
		{"extra bytes", io.MultiReader(bytes.NewReader(whole), strings.NewReader("x")), -1, "!c1-op2 followed by more bytes"},
		{"no head", strings.NewReader("hello"), 5, `!no value: "hello"`},
		{"cut off", io.MultiReader(bytes.NewReader(whole[:size/2]), iotest.ErrReader(io.ErrUnexpectedEOF)), size, ""},
	} {
		got, err := linzReadValue(tc.body, tc.length)
		if tc.want == "" && err == nil || tc.want != "" && (err != nil || got != tc.want) {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

// TestLinearizableNoFaults: concurrent PUT, POST, DELETE and GET of three
// keys on a healthy cluster.
func TestLinearizableNoFaults(t *testing.T) {
	linzTest(t, nil)
}

// TestLinearizableVolumeFaults: the same while volumes are SIGKILLed and
// restarted, or SIGSTOPped and SIGCONTed, one at a time.
func TestLinearizableVolumeFaults(t *testing.T) {
	linzTest(t, func(t *testing.T, c *testProcCluster, r *linzRun) {
		for i := 0; r.pause(r.between(time.Second, 2*time.Second)); i++ {
			v := r.rnd.IntN(len(c.vols))
			start := r.now()
			if i%2 == 0 {
				crashKill(t, c.vols[v])
				time.Sleep(r.between(200*time.Millisecond, time.Second))
				c.vols[v] = crashRestart(t, c.vols[v], "volume started")
				c.waitLiveVolumes(t, len(c.vols))
				r.annotate(t, start, fmt.Sprintf("vol%d SIGKILLed and restarted", v+1))
				continue
			}
			linzSignal(t, c.vols[v], syscall.SIGSTOP)
			time.Sleep(r.between(500*time.Millisecond, 2*time.Second))
			linzSignal(t, c.vols[v], syscall.SIGCONT)
			r.annotate(t, start, fmt.Sprintf("vol%d SIGSTOPped, then SIGCONTed", v+1))
		}
	})
}

// TestLinearizableMasterKill: the same while the master is SIGKILLed and
// restarted. Requests sent while it is down are refused and left out; those
// it was handling lose their answer and may or may not have happened.
func TestLinearizableMasterKill(t *testing.T) {
	linzTest(t, func(t *testing.T, c *testProcCluster, r *linzRun) {
		for r.pause(r.between(1500*time.Millisecond, 2500*time.Millisecond)) {
			start := r.now()
			crashKill(t, c.master)
			time.Sleep(r.between(100*time.Millisecond, 800*time.Millisecond))
			c.restartMaster(t)
			c.waitLiveVolumes(t, len(c.vols))
			r.annotate(t, start, "master SIGKILLed and restarted")
		}
	})
}

// linzSignal sends sig (SIGSTOP, SIGCONT) to a process. A process left
// stopped is still killed by the cleanup: SIGKILL needs no SIGCONT.
func linzSignal(t *testing.T, p *proc, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// The regression tests below replay the curl reproductions.

// linzAnswer is the outcome of one request.
type linzAnswer struct {
	status int
	err    error
}

func (a linzAnswer) String() string {
	if a.err != nil {
		return a.err.Error()
	}
	return strconv.Itoa(a.status)
}

func (a linzAnswer) ok() bool { return a.err == nil && a.status/100 == 2 }

func linzDo(client *http.Client, method, url string, body io.Reader, size int64) linzAnswer {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return linzAnswer{err: err}
	}
	req.ContentLength = size
	resp, err := client.Do(req)
	if err != nil {
		return linzAnswer{err: err}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return linzAnswer{status: resp.StatusCode, err: err}
}

// linzSlowWrite starts a 2 MB write of the value named name, sent at
// about 400 KB/s (5 s in all), and returns once a second of it is out,
// with the channel its answer will come on.
func linzSlowWrite(t *testing.T, client *http.Client, method, url, name string) <-chan linzAnswer {
	t.Helper()
	const size = 2 << 20
	body := &linzThrottle{r: linzBody(name, size), chunk: 8 << 10, pause: 20 * time.Millisecond}
	done := make(chan linzAnswer, 1)
	go func() { done <- linzDo(client, method, url, body, size) }()
	deadline := time.Now().Add(30 * time.Second)
	for body.sent.Load() < 400<<10 {
		select {
		case a := <-done:
			t.Fatalf("slow %s %s: answered %v after %d bytes, before the other write", method, name, a, body.sent.Load())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow %s %s: %d bytes out after 30 s", method, name, body.sent.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return done
}

// linzGetValue GETs url, following redirects, and names the value it
// holds ("" with 404).
func linzGetValue(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case 404:
		return ""
	case 200:
	default:
		t.Fatalf("GET %s: got %d", url, resp.StatusCode)
	}
	name, err := linzReadValue(resp.Body, resp.ContentLength)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return name
}

func linzShow(name string) string {
	if name == "" {
		return "404"
	}
	return name + "'s value"
}

// TestRegressionSlowPutVsPost: a slow PUT to a new key is still streaming
// when a POST creates the key. The POST gets 201 (the key is absent until
// some write commits). The PUT may then fail, and leave the POST's value;
// or succeed with 200, replacing it, and GET must then return the PUT's
// bytes. Acknowledging the PUT while keeping the POST's value loses an
// acknowledged write.
func TestRegressionSlowPutVsPost(t *testing.T) {
	c := startProcCluster(t, 3, 2)
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	url := c.url + "/regress/slow-put-vs-post"
	slow := linzSlowWrite(t, client, "PUT", url, "slow-put")
	if post := linzDo(client, "POST", url, linzBody("post", 100), 100); post.status != 201 {
		t.Fatalf("POST while the only other write (a PUT) is still streaming: got %v, want 201", post)
	}
	put := <-slow
	got := linzGetValue(t, client, url)
	switch {
	case put.err != nil:
		t.Fatalf("slow PUT: %v (a lost answer proves nothing)", put.err)
	case put.status >= 400 && got != "post":
		t.Errorf("the slow PUT failed (%d) after the POST's 201; GET: got %s, want post's value", put.status, linzShow(got))
	case put.status >= 400:
	case put.status != 200 || got != "slow-put":
		t.Errorf("the POST created the key (201), then the slow PUT answered %d; GET: got %s.\n"+
			"Want either the PUT to fail, or 200 (it replaced the POST's value) and GET to return slow-put's value: "+
			"an acknowledged PUT was dropped", put.status, linzShow(got))
	}
}

// TestRegressionTwoPutsNewKey: a slow PUT to a new key, and a fast one
// started while it streams. If both succeed, exactly one found the key
// absent (201) and the other replaced its value (200): the 200 is the later
// one, and its value is the one GET returns.
func TestRegressionTwoPutsNewKey(t *testing.T) {
	c := startProcCluster(t, 3, 2)
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	url := c.url + "/regress/two-puts-new-key"
	slowDone := linzSlowWrite(t, client, "PUT", url, "slow-put")
	fast := linzDo(client, "PUT", url, linzBody("fast-put", 100), 100)
	slow := <-slowDone
	got := linzGetValue(t, client, url)
	t.Logf("fast PUT: %v; slow PUT: %v; GET: %s", fast, slow, linzShow(got))
	switch {
	case slow.err != nil || fast.err != nil:
		t.Fatalf("a lost answer proves nothing: fast %v, slow %v", fast, slow)
	case slow.ok() && fast.ok() && slow.status == fast.status:
		t.Errorf("both PUTs to a new key answered %d: one of them must have created it (201) and the other replaced its value (200)", slow.status)
	case slow.ok() && fast.ok():
		last := "fast-put"
		if slow.status == 200 {
			last = "slow-put"
		}
		if got != last {
			t.Errorf("fast PUT %d, slow PUT %d: the statuses order %s last, so GET must return its value; got %s: an acknowledged PUT was dropped",
				fast.status, slow.status, last, linzShow(got))
		}
	case slow.ok() && (slow.status != 201 || got != "slow-put"):
		t.Errorf("fast PUT failed (%d), slow PUT %d; GET: got %s, want 201 and slow-put's value", fast.status, slow.status, linzShow(got))
	case fast.ok() && (fast.status != 201 || got != "fast-put"):
		t.Errorf("slow PUT failed (%d), fast PUT %d; GET: got %s, want 201 and fast-put's value", slow.status, fast.status, linzShow(got))
	case !slow.ok() && !fast.ok() && got != "":
		t.Errorf("both PUTs failed (%d, %d), yet GET returns %s", fast.status, slow.status, linzShow(got))
	}
}

// TestRegressionStaleRedirect: a reader got its redirect just before an
// overwrite and follows it a little later. The old version may still be
// served whole, or the volume may send the reader on to the new one; a 404
// is a read that sees the key absent, which it never was.
func TestRegressionStaleRedirect(t *testing.T) {
	c := startProcCluster(t, 3, 2)
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	noFollow := &http.Client{
		Timeout:       time.Minute,
		Transport:     client.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for i, delay := range []time.Duration{5 * time.Millisecond, 50 * time.Millisecond, 500 * time.Millisecond} {
		url := fmt.Sprintf("%s/regress/stale-redirect-%d", c.url, i)
		oldName, newName := fmt.Sprintf("old-%d", i), fmt.Sprintf("new-%d", i)
		if a := linzDo(client, "PUT", url, linzBody(oldName, 100), 100); a.status != 201 {
			t.Fatalf("PUT %s: got %v, want 201", oldName, a)
		}
		resp, err := noFollow.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if resp.StatusCode != 302 || err != nil {
			t.Fatalf("GET: got %d (Location: %v), want 302", resp.StatusCode, err)
		}
		if a := linzDo(client, "PUT", url, linzBody(newName, 100), 100); a.status != 200 {
			t.Fatalf("PUT %s: got %v, want 200", newName, a)
		}
		time.Sleep(delay)
		if got := linzGetValue(t, client, loc.String()); got != oldName && got != newName {
			t.Errorf("following the redirect issued before an overwrite, %v after it: got %s, want %s's or %s's value",
				delay, linzShow(got), oldName, newName)
		}
	}
}

// TestLinearizableMastersNoFaults: the history check against three masters
// (Raft), clients sending each request to any of them: followers send them
// on to the leader.
func TestLinearizableMastersNoFaults(t *testing.T) {
	linzTestOn(t, startProcMasters(t, 3, 3, 2), nil)
}

// TestLinearizableMastersLeaderKill: the same while the leader is
// SIGKILLed and restarted, or SIGSTOPped and SIGCONTed (a paused leader
// that resumes must not answer from stale state).
func TestLinearizableMastersLeaderKill(t *testing.T) {
	linzTestOn(t, startProcMasters(t, 3, 3, 2), func(t *testing.T, c *testProcCluster, r *linzRun) {
		for i := 0; r.pause(r.between(1500*time.Millisecond, 2500*time.Millisecond)); i++ {
			l := c.waitLeader(t)
			start := r.now()
			if i%2 == 0 {
				crashKill(t, c.masters[l])
				time.Sleep(r.between(100*time.Millisecond, 800*time.Millisecond))
				c.restartMasterN(t, l)
				r.annotate(t, start, fmt.Sprintf("leader master%d SIGKILLed and restarted", l+1))
				continue
			}
			linzSignal(t, c.masters[l], syscall.SIGSTOP)
			time.Sleep(r.between(time.Second, 2*time.Second))
			linzSignal(t, c.masters[l], syscall.SIGCONT)
			r.annotate(t, start, fmt.Sprintf("leader master%d SIGSTOPped, then SIGCONTed", l+1))
		}
	})
}
