package node

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// promSample is one sample line of a text exposition.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// exposition is a parsed text exposition (format 0.0.4).
type exposition struct {
	types   map[string]string // family → TYPE
	help    map[string]string // family → HELP
	samples []promSample
}

// parseExposition parses the Prometheus text format strictly: every line is
// a HELP, a TYPE or a sample (no blank lines, no other comments); names and
// label names are valid; label values use only the format's escapes; a TYPE
// comes at most once per family and before its samples; a family's samples
// are contiguous; no series appears twice; histograms have cumulative
// buckets ending in +Inf that equal their _count, and a _sum.
func parseExposition(text string) (*exposition, error) {
	e := &exposition{types: map[string]string{}, help: map[string]string{}}
	if text == "" {
		return e, nil
	}
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("exposition does not end with a line feed")
	}
	seenFamily := map[string]bool{} // families whose samples have started
	lastFamily := ""
	series := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", i+1, line, fmt.Sprintf(format, args...))
		}
		if line == "" {
			return nil, fail("blank line")
		}
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			kind, rest, _ := strings.Cut(rest, " ")
			name, arg, ok := strings.Cut(rest, " ")
			if !ok || !validMetricName(name) {
				return nil, fail("bad %s line", kind)
			}
			switch kind {
			case "HELP":
				if _, dup := e.help[name]; dup {
					return nil, fail("second HELP for %s", name)
				}
				if err := checkEscapes(arg, false); err != nil {
					return nil, fail("%v", err)
				}
				e.help[name] = arg
			case "TYPE":
				if _, dup := e.types[name]; dup {
					return nil, fail("second TYPE for %s", name)
				}
				if seenFamily[name] {
					return nil, fail("TYPE after the samples of %s", name)
				}
				switch arg {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, fail("unknown type %q", arg)
				}
				e.types[name] = arg
			default:
				return nil, fail("comment that is neither HELP nor TYPE")
			}
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fail("%v", err)
		}
		fam := e.family(s.name)
		if fam != lastFamily {
			if seenFamily[fam] {
				return nil, fail("samples of %s are not contiguous", fam)
			}
			seenFamily[fam] = true
			lastFamily = fam
		}
		if e.types[fam] == "counter" && !(s.value >= 0) {
			return nil, fail("counter %s is %v", s.name, s.value)
		}
		id := seriesID(s.name, s.labels, "")
		if series[id] {
			return nil, fail("series %s twice", id)
		}
		series[id] = true
		e.samples = append(e.samples, s)
	}
	return e, e.checkHistograms()
}

// family names the family a sample belongs to: a histogram's or summary's
// _bucket, _sum and _count belong to it.
func (e *exposition) family(name string) string {
	if _, ok := e.types[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			switch e.types[base] {
			case "histogram":
				return base
			case "summary":
				if suffix != "_bucket" {
					return base
				}
			}
		}
	}
	return name
}

func (e *exposition) checkHistograms() error {
	type hist struct {
		les     []float64
		counts  []float64
		count   float64
		hasCnt  bool
		hasSum  bool
		display string
	}
	hs := map[string]*hist{}
	get := func(fam string, labels map[string]string) *hist {
		id := seriesID(fam, labels, "le")
		if hs[id] == nil {
			hs[id] = &hist{display: id}
		}
		return hs[id]
	}
	for _, s := range e.samples {
		fam := e.family(s.name)
		if e.types[fam] != "histogram" {
			continue
		}
		h := get(fam, s.labels)
		switch s.name {
		case fam + "_bucket":
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil {
				return fmt.Errorf("%s: bucket without a valid le: %q", h.display, s.labels["le"])
			}
			if n := len(h.les); n > 0 && (le <= h.les[n-1] || s.value < h.counts[n-1]) {
				return fmt.Errorf("%s: buckets not increasing and cumulative at le=%v", h.display, le)
			}
			h.les, h.counts = append(h.les, le), append(h.counts, s.value)
		case fam + "_count":
			h.count, h.hasCnt = s.value, true
		case fam + "_sum":
			h.hasSum = true
		default:
			return fmt.Errorf("%s: sample %s in a histogram", h.display, s.name)
		}
	}
	for _, h := range hs {
		n := len(h.les)
		switch {
		case n == 0 || !math.IsInf(h.les[n-1], 1):
			return fmt.Errorf("%s: no +Inf bucket", h.display)
		case !h.hasCnt || !h.hasSum:
			return fmt.Errorf("%s: no _count or _sum", h.display)
		case h.counts[n-1] != h.count:
			return fmt.Errorf("%s: +Inf bucket %v, _count %v", h.display, h.counts[n-1], h.count)
		}
	}
	return nil
}

// seriesID is name{labels} with the labels sorted, leaving out skip.
func seriesID(name string, labels map[string]string, skip string) string {
	names := make([]string, 0, len(labels))
	for n := range labels {
		if n != skip {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(name + "{")
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%q,", n, labels[n])
	}
	b.WriteString("}")
	return b.String()
}

func validMetricName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

func validLabelName(s string) bool {
	return validMetricName(s) && !strings.Contains(s, ":")
}

// checkEscapes accepts only \\ and \n (and \" in label values).
func checkEscapes(s string, quote bool) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 == len(s) {
				return errors.New("dangling backslash")
			}
			i++
			if c := s[i]; c != '\\' && c != 'n' && !(quote && c == '"') {
				return fmt.Errorf("bad escape \\%c", c)
			}
		case '\n':
			return errors.New("raw line feed")
		}
	}
	return nil
}

// parseSample parses `name{label="value",...} value [timestamp]`.
func parseSample(line string) (promSample, error) {
	s := promSample{labels: map[string]string{}}
	end := strings.IndexAny(line, "{ ")
	if end < 0 {
		return s, errors.New("no value")
	}
	s.name = line[:end]
	if !validMetricName(s.name) {
		return s, fmt.Errorf("bad metric name %q", s.name)
	}
	rest := line[end:]
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " \t")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 {
				return s, errors.New("label without =")
			}
			ln := rest[:eq]
			if !validLabelName(ln) {
				return s, fmt.Errorf("bad label name %q", ln)
			}
			if _, dup := s.labels[ln]; dup {
				return s, fmt.Errorf("label %s twice", ln)
			}
			rest = rest[eq+1:]
			if !strings.HasPrefix(rest, `"`) {
				return s, fmt.Errorf("label %s: value not quoted", ln)
			}
			var val strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				c := rest[i]
				if c == '\\' {
					if i+1 == len(rest) {
						return s, errors.New("dangling backslash")
					}
					i++
					switch rest[i] {
					case '\\':
						c = '\\'
					case '"':
						c = '"'
					case 'n':
						c = '\n'
					default:
						return s, fmt.Errorf("bad escape \\%c", rest[i])
					}
				}
				val.WriteByte(c)
			}
			if i == len(rest) {
				return s, fmt.Errorf("label %s: unterminated value", ln)
			}
			s.labels[ln] = val.String()
			rest = strings.TrimLeft(rest[i+1:], " \t")
			switch {
			case strings.HasPrefix(rest, ","):
				rest = rest[1:]
			case strings.HasPrefix(rest, "}"):
			default:
				return s, errors.New("labels not separated by ,")
			}
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return s, errors.New("no space before the value")
	}
	fields := strings.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 {
		return s, fmt.Errorf("want a value and an optional timestamp, got %q", rest)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("bad value %q", fields[0])
	}
	s.value = v
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return s, fmt.Errorf("bad timestamp %q", fields[1])
		}
	}
	return s, nil
}

// find returns the samples of name whose labels include want (pairs of
// label name and value).
func (e *exposition) find(name string, want ...string) []promSample {
	var out []promSample
	for _, s := range e.samples {
		if s.name != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if s.labels[want[i]] != want[i+1] {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// value is the one sample of name with labels want; 0 when there is none
// (an unset counter), and the test fails if several match.
func (e *exposition) value(t testing.TB, name string, want ...string) float64 {
	t.Helper()
	ss := e.find(name, want...)
	switch len(ss) {
	case 0:
		return 0
	case 1:
		return ss[0].value
	}
	t.Fatalf("%d samples of %s%v, want 1", len(ss), name, want)
	return 0
}

func (e *exposition) sum(name string, want ...string) float64 {
	var total float64
	for _, s := range e.find(name, want...) {
		total += s.value
	}
	return total
}

// scrape GETs /_kvdb/metrics from addr and parses it.
func scrape(t testing.TB, addr string) *exposition {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/_kvdb/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: status %d: %s", addr, resp.StatusCode, b)
	}
	if got, want := resp.Header.Get("Content-Type"), metricsContentType; got != want {
		t.Fatalf("scrape %s: got Content-Type %q, want %q", addr, got, want)
	}
	e, err := parseExposition(string(b))
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return e
}

// TestMetricsParser keeps the test's parser strict: what it must reject.
func TestMetricsParser(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"good", "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\nb 1.5e+10 1700000000000\n", true},
		{"trailing comma and space", "a{x=\"1\", y=\"2\",} 1\n", true},
		{"no final line feed", "a 1", false},
		{"blank line", "a 1\n\nb 1\n", false},
		{"other comment", "# hello\na 1\n", false},
		{"bad name", "1a 1\n", false},
		{"bad label name", "a{1x=\"1\"} 1\n", false},
		{"unquoted label", "a{x=1} 1\n", false},
		{"bad escape", "a{x=\"\\t\"} 1\n", false},
		{"bad value", "a one\n", false},
		{"duplicate series", "a{x=\"1\"} 1\na{x=\"1\"} 2\n", false},
		{"split family", "a 1\nb 1\na{x=\"1\"} 1\n", false},
		{"TYPE after samples", "a 1\n# TYPE a gauge\n", false},
		{"negative counter", "# TYPE a counter\na -1\n", false},
		{"histogram ok", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n", true},
		{"histogram not cumulative", "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 3\nh_count 1\n", false},
		{"histogram without +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 3\nh_count 1\n", false},
		{"histogram count mismatch", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 3\nh_count 2\n", false},
	} {
		_, err := parseExposition(tc.text)
		if got := err == nil; got != tc.ok {
			t.Errorf("%s: got error %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestMetricsMethodLabel(t *testing.T) {
	for _, tc := range []struct{ method, want string }{
		{"GET", "GET"}, {"HEAD", "HEAD"}, {"PUT", "PUT"}, {"POST", "POST"}, {"DELETE", "DELETE"},
		{"PATCH", "other"}, {"get", "other"}, {"BREW", "other"},
	} {
		if got := methodName(methodIndex([]byte(tc.method))); got != tc.want {
			t.Errorf("method %s: got label %q, want %q", tc.method, got, tc.want)
		}
	}
	nm := newNodeMetrics(RoleMaster)
	nm.requestCounter(methodGet, 42).Inc()
	nm.requestCounter(methodGet, 600).Inc()
	nm.requestCounter(methodGet, 599).Inc()
	var ctx fasthttp.RequestCtx
	nm.serve(&ctx, func(*promWriter) {})
	e, err := parseExposition(string(ctx.Response.Body()))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.value(t, "kvdb_requests_total", "method", "GET", "status", "other"); got != 2 {
		t.Errorf("got %v requests with status other, want 2", got)
	}
	if got := e.value(t, "kvdb_requests_total", "method", "GET", "status", "599"); got != 1 {
		t.Errorf("got %v requests with status 599, want 1", got)
	}
}

// TestMetricsVolumeCounters: the counters the scrub and the write path feed.
func TestMetricsVolumeCounters(t *testing.T) {
	vm := newVolumeMetrics()
	vm.scrubbed(3, 300, 1)
	vm.scrubbed(2, 200, -5) // a negative count is ignored
	vm.wroteBlob(10)
	vm.wroteBlob(0)
	var ctx fasthttp.RequestCtx
	vm.serve(&ctx, func(*promWriter) {})
	e, err := parseExposition(string(ctx.Response.Body()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"kvdb_scrub_files_total", 5},
		{"kvdb_scrub_bytes_total", 500},
		{"kvdb_scrub_corrupt_total", 1},
		{"kvdb_blob_writes_total", 2},
		{"kvdb_blob_write_bytes_total", 10},
	} {
		if got := e.value(t, tc.name); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
		if e.types[tc.name] != "counter" || e.help[tc.name] == "" {
			t.Errorf("%s: got TYPE %q and HELP %q, want a counter with help", tc.name, e.types[tc.name], e.help[tc.name])
		}
	}
}

// TestMetricsCluster scrapes a real cluster's master and volumes after
// some traffic and checks what they report against what happened.
func TestMetricsCluster(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	values := map[string]string{
		"metrics/a": "alpha", "metrics/b": strings.Repeat("b", 1000), "metrics/c": "",
		"metrics/d": strings.Repeat("d", 70000), "metrics/e": "e",
	}
	var valueBytes int
	for k, v := range values {
		if st, _, body := c.do("PUT", k, strings.NewReader(v)); st != 201 {
			t.Fatalf("PUT %s: status %d: %s", k, st, body)
		}
		valueBytes += len(v)
	}
	for k, v := range values {
		if st, got := c.get(k); st != 200 || got != v {
			t.Fatalf("GET %s: status %d, %d bytes, want 200 and %d bytes", k, st, len(got), len(v))
		}
	}
	for _, k := range []string{"metrics/a", "metrics/b"} {
		if st, _, body := c.do("DELETE", k, nil); st != 200 {
			t.Fatalf("DELETE %s: status %d: %s", k, st, body)
		}
	}
	if st, _, _ := c.do("GET", "metrics/missing", nil); st != 404 {
		t.Fatalf("GET missing: status %d, want 404", st)
	}
	if st, _, _ := c.do("PATCH", "metrics/a", nil); st != 405 {
		t.Fatalf("PATCH: status %d, want 405", st)
	}
	live := len(values) - 2

	e := scrape(t, c.master.Addr())
	for _, tc := range []struct {
		method, status string
		want           float64
	}{
		{"PUT", "201", float64(len(values))},
		{"GET", "302", float64(len(values))},
		{"GET", "404", 1},
		{"DELETE", "200", 2},
		{"other", "405", 1},
	} {
		if got := e.value(t, "kvdb_requests_total", "role", "master", "method", tc.method, "status", tc.status); got != tc.want {
			t.Errorf("master requests %s %s: got %v, want %v", tc.method, tc.status, got, tc.want)
		}
	}
	if got, want := e.value(t, "kvdb_request_duration_seconds_count", "role", "master", "method", "PUT"), float64(len(values)); got != want {
		t.Errorf("master PUT durations: got %v, want %v", got, want)
	}
	if got := e.value(t, "kvdb_request_bytes_total", "role", "master"); got != float64(valueBytes) {
		t.Errorf("master request bytes: got %v, want %d", got, valueBytes)
	}
	if got := e.value(t, "kvdb_response_bytes_total", "role", "master"); got <= 0 {
		t.Errorf("master response bytes: got %v, want > 0", got)
	}
	if got := e.value(t, "kvdb_live_volumes"); got != 3 {
		t.Errorf("live volumes: got %v, want 3", got)
	}
	if got := e.value(t, "kvdb_replicas"); got != 2 {
		t.Errorf("replicas: got %v, want 2", got)
	}
	partitions := c.master.view.Load().ring.Config().Partitions
	if got := e.sum("kvdb_ring_partitions"); got != float64(partitions) || partitions != 1021 {
		t.Errorf("ring partitions: got a sum of %v, want %d (1021)", got, partitions)
	}
	for _, name := range []string{"kvdb_ring_partitions", "kvdb_volume_free_bytes", "kvdb_volume_total_bytes", "kvdb_volume_keys", "kvdb_volume_reachable"} {
		if got := len(e.find(name)); got != 3 {
			t.Errorf("%s: got %d series, want 3", name, got)
		}
		if e.types[name] != "gauge" || e.help[name] == "" {
			t.Errorf("%s: got TYPE %q and HELP %q, want a gauge with help", name, e.types[name], e.help[name])
		}
	}
	for _, v := range c.vols {
		if got := e.value(t, "kvdb_volume_reachable", "volume", v.Name()); got != 1 {
			t.Errorf("volume %s reachable: got %v, want 1", v.Name(), got)
		}
		if got := e.value(t, "kvdb_volume_total_bytes", "volume", v.Name()); got <= 0 {
			t.Errorf("volume %s total bytes: got %v, want > 0", v.Name(), got)
		}
	}
	for _, name := range []string{
		"kvdb_ring_max_partitions", "kvdb_under_replicated_keys", "kvdb_repair_copies_total", "kvdb_pending_deletes",
		"kvdb_rebalance_misplaced_keys", "kvdb_rebalance_moved_keys_total", "kvdb_rebalance_moved_bytes_total",
		"kvdb_rebalance_failed_total", "kvdb_rebalance_draining_volumes", "kvdb_index_merging_volumes",
		"kvdb_requests_total", "kvdb_request_duration_seconds", "go_goroutines", "process_resident_memory_bytes",
	} {
		if len(e.find(name)) == 0 && len(e.find(name+"_count")) == 0 {
			t.Errorf("no series %s", name)
		}
	}
	for name, typ := range e.types {
		if strings.HasPrefix(name, "kvdb_") && e.help[name] == "" {
			t.Errorf("%s (%s) has no HELP", name, typ)
		}
	}
	for _, s := range e.samples {
		if strings.HasPrefix(s.name, "kvdb_") && e.types[e.family(s.name)] == "" {
			t.Errorf("%s has no TYPE", s.name)
		}
	}

	// The master's per-volume key counts (from its index, at the last
	// placement scan) agree with what each volume's store holds.
	waitFor(t, 10*time.Second, "the master's key counts to match the volumes'", func() bool {
		e := scrape(t, c.master.Addr())
		for _, v := range c.vols {
			if e.value(t, "kvdb_volume_keys", "volume", v.Name()) != float64(v.store.Stats().Keys) {
				return false
			}
		}
		return e.sum("kvdb_volume_keys") == float64(2*live) && e.value(t, "kvdb_pending_deletes") == 0
	})

	var writes, writeBytes, streamed float64
	for _, v := range c.vols {
		ve := scrape(t, v.Addr())
		st := v.store.Stats()
		for _, tc := range []struct {
			name string
			want int64
		}{
			{"kvdb_store_keys", st.Keys}, {"kvdb_store_bytes", st.Bytes},
			{"kvdb_draining", 0},
		} {
			if got := ve.value(t, tc.name); got != float64(tc.want) {
				t.Errorf("volume %s %s: got %v, want %d", v.Name(), tc.name, got, tc.want)
			}
		}
		if got := ve.value(t, "kvdb_store_total_bytes"); got <= 0 {
			t.Errorf("volume %s total bytes: got %v, want > 0", v.Name(), got)
		}
		w := ve.value(t, "kvdb_blob_writes_total")
		streamed += ve.value(t, "kvdb_requests_total", "role", "volume", "method", "PUT", "status", "201")
		if got := ve.value(t, "kvdb_scrub_files_total"); got != 0 {
			t.Errorf("volume %s scrubbed files: got %v, want 0", v.Name(), got)
		}
		if len(ve.find("kvdb_live_volumes")) != 0 {
			t.Errorf("volume %s serves the master's kvdb_live_volumes", v.Name())
		}
		writes += w
		writeBytes += ve.value(t, "kvdb_blob_write_bytes_total")
	}
	if writes != float64(2*len(values)) || writeBytes != float64(2*valueBytes) {
		t.Errorf("volumes wrote %v blobs of %v bytes, want %d of %d", writes, writeBytes, 2*len(values), 2*valueBytes)
	}
	// Every write came from the master's PUTs (no repair copies): streamed
	// ones, one PUT each, and small ones, in the master's put lists.
	me := scrape(t, c.master.Addr())
	if queued := me.value(t, "kvdb_volume_batched_items_total", "kind", "put"); streamed+queued != writes || queued == 0 {
		t.Errorf("volumes answered %v blob PUTs 201 and the master sent %v small writes in lists, want %v writes in all, some small", streamed, queued, writes)
	}
	if me.value(t, "kvdb_volume_batches_total", "kind", "put") == 0 {
		t.Error("the master counted no put lists")
	}

	// A volume that dies: once the master sees it gone, its series go too.
	gone := c.vols[2].Name()
	c.killVolume(2)
	c.waitVolumes(2)
	waitFor(t, 10*time.Second, "the dead volume's series to disappear", func() bool {
		e := scrape(t, c.master.Addr())
		for _, s := range e.samples {
			if s.labels["volume"] == gone {
				return false
			}
		}
		return e.value(t, "kvdb_live_volumes") == 2 && len(e.find("kvdb_volume_free_bytes")) == 2
	})
	// And the exposition stays well-formed on the survivors.
	for _, v := range c.vols {
		if v != nil {
			scrape(t, v.Addr())
		}
	}
}

// TestMetricsRedirectAllocs: counting and timing a request keeps the
// redirect of a cached key free of allocations, through the very handler
// the master's server runs (the busy count, the metrics, the API).
func TestMetricsRedirectAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation allocates")
	}
	c := newTestCluster(t, 2, 2)
	c.put("photos/2026/cat.jpg", "meow")
	h := c.master.http.srv.Handler
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.SetRequestURI("/photos/2026/cat.jpg")
	h(&ctx) // warm the cache, the counter and fasthttp's buffers
	allocs := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		h(&ctx)
	})
	if ctx.Response.StatusCode() != fasthttp.StatusFound {
		t.Fatalf("got status %d, want 302", ctx.Response.StatusCode())
	}
	if allocs != 0 {
		t.Fatalf("got %.1f allocations per instrumented redirect, want 0", allocs)
	}
	// One warm-up call, AllocsPerRun's own warm-up, then 1000 runs.
	if got := c.master.metrics.requestCounter(methodGet, fasthttp.StatusFound).Get(); got != 1002 {
		t.Errorf("got %d redirects counted, want 1002", got)
	}
}

// BenchmarkRedirectInstrumented is BenchmarkRedirectHandler through the metrics
// wrapper.
func BenchmarkRedirectInstrumented(b *testing.B) {
	c := newTestCluster(b, 2, 2)
	c.put("photos/2026/cat.jpg", "meow")
	h := c.master.http.srv.Handler
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.SetRequestURI("/photos/2026/cat.jpg")
	h(&ctx)
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		h(&ctx)
	}
	if ctx.Response.StatusCode() != fasthttp.StatusFound {
		b.Fatalf("got status %d, want 302", ctx.Response.StatusCode())
	}
}
