package node

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// Metrics, served at /_kvdb/metrics in the Prometheus text format (0.0.4).
//
// Every node has its own metrics.Set, never the package's default one:
// several masters and volumes run in one process (the tests, kvdb dev), and
// each must count only its own requests. Three kinds of series come out:
//
//   - counters and histograms kept in the Set and updated as things happen
//     (requests, blob writes, scrubs);
//   - gauges computed at scrape time from one snapshot of the node's state
//     (cluster membership, store usage). Per-volume series are rendered from
//     the current members only, so a departed volume's series disappear
//     instead of freezing at their last value;
//   - Go runtime and process metrics, process-wide (metrics.WriteProcessMetrics).
//
// Request durations are a Prometheus-classic histogram (le buckets, see
// durationBuckets), not VictoriaMetrics' vmrange histogram, so that stock
// Prometheus can compute quantiles with histogram_quantile.

// metricsContentType is the media type of the text exposition format.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// durationBuckets returns the upper bounds, in seconds, of the request
// duration histogram: from a cached redirect (tens of µs) to a large value
// streamed through the master (minutes).
func durationBuckets() []float64 {
	return []float64{
		0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
		0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
	}
}

// The method label takes one of these values: the methods the API knows,
// anything else is "other", so a client cannot grow the label's values.
const (
	methodGet = iota
	methodHead
	methodPut
	methodPost
	methodDelete
	methodOther
	numMethods
)

// methodName is the label value of method index i.
func methodName(i int) string {
	switch i {
	case methodGet:
		return fasthttp.MethodGet
	case methodHead:
		return fasthttp.MethodHead
	case methodPut:
		return fasthttp.MethodPut
	case methodPost:
		return fasthttp.MethodPost
	case methodDelete:
		return fasthttp.MethodDelete
	}
	return "other"
}

func methodIndex(m []byte) int {
	switch string(m) {
	case fasthttp.MethodGet:
		return methodGet
	case fasthttp.MethodHead:
		return methodHead
	case fasthttp.MethodPut:
		return methodPut
	case fasthttp.MethodPost:
		return methodPost
	case fasthttp.MethodDelete:
		return methodDelete
	}
	return methodOther
}

// Status codes 100 to 599 each have their label value; anything else (which
// fasthttp would send as is) counts as status "other", in slot 0.
const (
	minStatus   = 100
	maxStatus   = 599
	statusSlots = maxStatus - minStatus + 2
)

// nodeMetrics is one node's metrics: the request counters and histograms
// every role has, and the Set holding them (and the volume's counters).
// Its methods are safe for concurrent use.
type nodeMetrics struct {
	set  *metrics.Set
	role string
	// requests caches kvdb_requests_total's counters by method and status,
	// created on first use: looking one up on the request path is an
	// array index and an atomic load, no formatting, no allocation.
	requests  [numMethods][statusSlots]atomic.Pointer[metrics.Counter]
	durations [numMethods]*metrics.PrometheusHistogram
	reqBytes  *metrics.Counter
	respBytes *metrics.Counter
	// redirected counts writes the master sent to a volume (307).
	redirected *metrics.Counter
}

func newNodeMetrics(role string) *nodeMetrics {
	nm := &nodeMetrics{set: metrics.NewSet(), role: role}
	for i := range nm.durations {
		nm.durations[i] = nm.set.NewPrometheusHistogramExt(
			fmt.Sprintf(`kvdb_request_duration_seconds{role=%q,method=%q}`, role, methodName(i)), durationBuckets())
	}
	nm.reqBytes = nm.set.NewCounter(fmt.Sprintf(`kvdb_request_bytes_total{role=%q}`, role))
	nm.respBytes = nm.set.NewCounter(fmt.Sprintf(`kvdb_response_bytes_total{role=%q}`, role))
	nm.redirected = nm.set.NewCounter(fmt.Sprintf(`kvdb_redirected_writes_total{role=%q}`, role))
	return nm
}

// redirectedWrite counts a write answered 307 (its body goes to a volume).
func (nm *nodeMetrics) redirectedWrite() { nm.redirected.Inc() }

// instrument wraps h so that every request is counted and timed. The
// duration is the time in h: a response body sent by sendfile (a volume's
// GET) goes out after h returns and is not part of it.
func (nm *nodeMetrics) instrument(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		h(ctx)
		nm.observe(ctx, time.Since(start))
	}
}

func (nm *nodeMetrics) observe(ctx *fasthttp.RequestCtx, d time.Duration) {
	mi := methodIndex(ctx.Method())
	nm.requestCounter(mi, ctx.Response.StatusCode()).Inc()
	nm.durations[mi].Update(d.Seconds())
	// The declared length: a streamed body is not counted as it is read,
	// and a chunked one (length unknown) counts 0.
	if n := ctx.Request.Header.ContentLength(); n > 0 {
		nm.reqBytes.Add(n)
	}
	if n := responseBodySize(ctx); n > 0 {
		nm.respBytes.Add(n)
	}
}

// responseBodySize is the number of body bytes the response carries: the
// declared length of a streamed body, nothing for HEAD.
func responseBodySize(ctx *fasthttp.RequestCtx) int {
	resp := &ctx.Response
	switch {
	case resp.SkipBody || ctx.IsHead():
		return 0
	case resp.IsBodyStream():
		// Body() would read the stream: use the declared length.
		return resp.Header.ContentLength()
	}
	return len(resp.Body())
}

// requestCounter returns the counter of requests with method mi answered
// with status, creating it on first use. Two requests racing to create the
// same counter get the same one: GetOrCreateCounter is idempotent.
func (nm *nodeMetrics) requestCounter(mi, status int) *metrics.Counter {
	si, label := 0, "other"
	if status >= minStatus && status <= maxStatus {
		si = status - minStatus + 1
	}
	slot := &nm.requests[mi][si]
	if c := slot.Load(); c != nil {
		return c
	}
	if si != 0 {
		label = strconv.Itoa(status)
	}
	c := nm.set.GetOrCreateCounter(fmt.Sprintf(`kvdb_requests_total{role=%q,method=%q,status=%q}`, nm.role, methodName(mi), label))
	slot.Store(c)
	return c
}

// serve answers a scrape: the Set's series with their HELP and TYPE, then
// what gauges writes from the node's current state, then the process's.
func (nm *nodeMetrics) serve(ctx *fasthttp.RequestCtx, gauges func(w *promWriter)) {
	var set bytes.Buffer
	nm.set.WritePrometheus(&set)
	w := &promWriter{b: make([]byte, 0, 2*set.Len()+16<<10)}
	w.withMetadata(set.Bytes())
	gauges(w)
	metrics.WriteProcessMetrics(w)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(metricsContentType)
	ctx.Response.SetBodyRaw(w.b)
}

// familyInfo gives the TYPE and HELP of the families kept in a Set (the
// Set writes none: VictoriaMetrics exposes metadata only when a
// package-wide switch is on, and nodes must not flip package-wide state).
func familyInfo(name string) (typ, help string, ok bool) {
	switch name {
	case "kvdb_requests_total":
		return "counter", "HTTP requests answered, by method and status code.", true
	case "kvdb_request_duration_seconds":
		return "histogram", "Time spent handling a request, by method (a body sent by sendfile after the handler returns is not included).", true
	case "kvdb_request_bytes_total":
		return "counter", "Request body bytes received, as declared by Content-Length (chunked bodies count 0).", true
	case "kvdb_response_bytes_total":
		return "counter", "Response body bytes sent, as declared by Content-Length for streamed bodies.", true
	case "kvdb_redirected_writes_total":
		return "counter", "Writes the master answered 307 to a volume, which took the body and coordinated the write.", true
	case "kvdb_blob_writes_total":
		return "counter", "Blob versions written to this volume's store (writes from the master and copies pulled from other volumes).", true
	case "kvdb_blob_write_bytes_total":
		return "counter", "Bytes of blob versions written to this volume's store.", true
	case "kvdb_scrub_files_total":
		return "counter", "Blob versions whose file a scrub checked.", true
	case "kvdb_scrub_bytes_total":
		return "counter", "Bytes a scrub read from blob files.", true
	case "kvdb_scrub_corrupt_total":
		return "counter", "Blob versions a scrub found missing, truncated or corrupt.", true
	}
	return "", "", false
}

// promWriter builds a text exposition.
type promWriter struct {
	b []byte
}

// Write appends p as is: it takes what writes text exposition itself, such
// as metrics.WriteProcessMetrics.
func (w *promWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// withMetadata copies a Set's exposition, putting each known family's HELP
// and TYPE before its first sample (the Set groups a family's samples).
func (w *promWriter) withMetadata(exp []byte) {
	last := ""
	for len(exp) > 0 {
		line := exp
		if i := bytes.IndexByte(exp, '\n'); i >= 0 {
			line, exp = exp[:i+1], exp[i+1:]
		} else {
			exp = nil
		}
		if fam, typ, help, ok := sampleFamily(line); ok && fam != last {
			w.family(fam, typ, help)
			last = fam
		}
		w.b = append(w.b, line...)
	}
	if n := len(w.b); n > 0 && w.b[n-1] != '\n' {
		w.b = append(w.b, '\n')
	}
}

// sampleFamily names the family a sample line belongs to, if familyInfo
// knows it; a histogram's _bucket, _sum and _count belong to it.
func sampleFamily(line []byte) (fam, typ, help string, ok bool) {
	end := bytes.IndexAny(line, "{ ")
	if end < 0 {
		return "", "", "", false
	}
	name := string(line[:end])
	if typ, help, ok := familyInfo(name); ok {
		return name, typ, help, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, cut := strings.CutSuffix(name, suffix); cut {
			if typ, help, ok := familyInfo(base); ok && typ == "histogram" {
				return base, typ, help, true
			}
		}
	}
	return "", "", "", false
}

// family writes a family's HELP and TYPE lines.
func (w *promWriter) family(name, typ, help string) {
	w.b = append(w.b, "# HELP "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, help...)
	w.b = append(w.b, "\n# TYPE "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, typ...)
	w.b = append(w.b, '\n')
}

// single writes a family with one unlabelled sample.
func (w *promWriter) single(name, typ, help string, v int64) {
	w.family(name, typ, help)
	w.sample(name, "", "", v)
}

// perVolume writes a gauge family with one sample per volume, in name
// order; a family with no volume is left out.
func (w *promWriter) perVolume(name, help string, vals map[string]int64) {
	if len(vals) == 0 {
		return
	}
	names := make([]string, 0, len(vals))
	for n := range vals {
		names = append(names, n)
	}
	sort.Strings(names)
	w.family(name, "gauge", help)
	for _, n := range names {
		w.sample(name, "volume", n, vals[n])
	}
}

func (w *promWriter) sample(name, label, value string, v int64) {
	w.b = append(w.b, name...)
	if label != "" {
		w.b = append(w.b, '{')
		w.b = append(w.b, label...)
		w.b = append(w.b, `="`...)
		w.b = appendLabelValue(w.b, value)
		w.b = append(w.b, `"}`...)
	}
	w.b = append(w.b, ' ')
	w.b = strconv.AppendInt(w.b, v, 10)
	w.b = append(w.b, '\n')
}

// appendLabelValue escapes a label value as the text format wants it:
// backslash, double quote and line feed.
func appendLabelValue(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			dst = append(dst, `\\`...)
		case '"':
			dst = append(dst, `\"`...)
		case '\n':
			dst = append(dst, `\n`...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func boolGauge(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// serveMetrics answers /_kvdb/metrics on the master.
func (m *Master) serveMetrics(ctx *fasthttp.RequestCtx) {
	m.metrics.serve(ctx, m.writeGauges)
}

// writeGauges writes the master's view of the cluster, from one snapshot.
func (m *Master) writeGauges(w *promWriter) {
	c := m.clusterState()
	bad := *m.unreachable.Load()
	free, total, keys, reachable := map[string]int64{}, map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, mem := range c.Members {
		if mem.Role != RoleVolume {
			continue
		}
		free[mem.Name], total[mem.Name], keys[mem.Name] = mem.Free, mem.Total, mem.Keys
		reachable[mem.Name] = boolGauge(!bad[mem.Name])
	}
	owned := make(map[string]int64, len(c.Ring.Owned))
	for name, n := range c.Ring.Owned {
		owned[name] = int64(n)
	}
	var pending int64
	for _, n := range c.PendingDeletes {
		pending += int64(n)
	}
	r := c.Rebalance
	w.single("kvdb_live_volumes", "gauge", "Volumes in the ring (live and not draining).", int64(m.LiveVolumes()))
	w.single("kvdb_gossip_members", "gauge", "Members gossip sees alive, this node included.", int64(m.gossip.ml.NumMembers()))
	w.single("kvdb_replicas", "gauge", "Replicas each value is stored on (--replicas).", int64(c.Replicas))
	w.single("kvdb_ring_max_partitions", "gauge", "Most ring partitions any one volume may own (the load bound).", int64(c.Ring.MaxPartitions))
	w.perVolume("kvdb_ring_partitions", "Ring partitions owned by each volume.", owned)
	w.perVolume("kvdb_volume_free_bytes", "Bytes each live volume can still take, as it last published.", free)
	w.perVolume("kvdb_volume_total_bytes", "Size of each live volume, as it last published.", total)
	w.perVolume("kvdb_volume_keys", "Values whose index record names each live volume as a replica, at the last placement scan.", keys)
	w.perVolume("kvdb_volume_reachable", "1 if the volume answers the master's probes, 0 if it failed the last ones.", reachable)
	w.single("kvdb_under_replicated_keys", "gauge", "Keys with fewer live replicas than --replicas at the last placement scan.", int64(c.UnderReplicated))
	w.single("kvdb_repair_copies_total", "counter", "Replica copies made by repair since the master started.", c.RepairCopies)
	w.single("kvdb_pending_deletes", "gauge", "Blob versions queued for deletion on volumes.", pending)
	w.family("kvdb_volume_batches_total", "counter", "Requests sent to volumes with queued small writes (kind put) or deletions (kind delete).")
	w.sample("kvdb_volume_batches_total", "kind", "put", m.puts.requests.Load())
	w.sample("kvdb_volume_batches_total", "kind", "delete", m.dels.requests.Load())
	w.family("kvdb_volume_batched_items_total", "counter", "Small writes (kind put) and deletions (kind delete) sent to volumes in those requests.")
	w.sample("kvdb_volume_batched_items_total", "kind", "put", m.puts.items.Load())
	w.sample("kvdb_volume_batched_items_total", "kind", "delete", m.dels.items.Load())
	w.single("kvdb_rebalance_misplaced_keys", "gauge", "Keys whose replicas differed from the ring's placement at the last complete pass.", int64(r.Misplaced))
	w.single("kvdb_rebalance_moved_keys_total", "counter", "Keys moved by rebalancing and draining since the master started.", r.Moved)
	w.single("kvdb_rebalance_moved_bytes_total", "counter", "Bytes moved by rebalancing and draining since the master started.", r.Bytes)
	w.single("kvdb_rebalance_failed_total", "counter", "Key moves that failed since the master started.", r.Failed)
	w.single("kvdb_rebalance_draining_volumes", "gauge", "Live volumes whose values are being moved off.", int64(len(r.Draining)))
	w.single("kvdb_index_merging_volumes", "gauge", "Volumes whose own index is being merged into the master's.", int64(len(c.Merging)))
}

// volumeMetrics adds a volume's own counters to its request metrics.
type volumeMetrics struct {
	*nodeMetrics
	blobWrites     *metrics.Counter
	blobWriteBytes *metrics.Counter
	scrubFiles     *metrics.Counter
	scrubBytes     *metrics.Counter
	scrubCorrupt   *metrics.Counter
}

func newVolumeMetrics() *volumeMetrics {
	nm := newNodeMetrics(RoleVolume)
	return &volumeMetrics{
		nodeMetrics:    nm,
		blobWrites:     nm.set.NewCounter("kvdb_blob_writes_total"),
		blobWriteBytes: nm.set.NewCounter("kvdb_blob_write_bytes_total"),
		scrubFiles:     nm.set.NewCounter("kvdb_scrub_files_total"),
		scrubBytes:     nm.set.NewCounter("kvdb_scrub_bytes_total"),
		scrubCorrupt:   nm.set.NewCounter("kvdb_scrub_corrupt_total"),
	}
}

// wroteBlob counts one blob version of size bytes stored.
func (vm *volumeMetrics) wroteBlob(size int64) {
	vm.blobWrites.Inc()
	vm.blobWriteBytes.AddInt64(size)
}

// scrubbed adds to the scrub counters: files checked, bytes read, and
// versions found bad. It may be called per pass or more often (the counts
// are added); negative counts are ignored.
func (vm *volumeMetrics) scrubbed(files, bytes, corrupt int64) {
	vm.scrubFiles.AddInt64(max(files, 0))
	vm.scrubBytes.AddInt64(max(bytes, 0))
	vm.scrubCorrupt.AddInt64(max(corrupt, 0))
}

// serveMetrics answers /_kvdb/metrics on a volume.
func (v *Volume) serveMetrics(ctx *fasthttp.RequestCtx) {
	v.metrics.serve(ctx, v.writeGauges)
}

func (v *Volume) writeGauges(w *promWriter) {
	st := v.store.Stats()
	w.single("kvdb_store_keys", "gauge", "Value versions held by this volume's store.", st.Keys)
	w.single("kvdb_store_bytes", "gauge", "Bytes of values held by this volume's store.", st.Bytes)
	w.single("kvdb_store_free_bytes", "gauge", "Bytes this volume can still take (free space less the reserve, within the capacity).", st.Free)
	w.single("kvdb_store_total_bytes", "gauge", "Size of this volume: its capacity if set, else its filesystem's.", st.Total)
	w.single("kvdb_draining", "gauge", "1 while this volume is draining (its values are moved elsewhere).", boolGauge(v.draining.Load()))
	w.single("kvdb_gossip_members", "gauge", "Members gossip sees alive, this node included.", int64(v.gossip.ml.NumMembers()))
}
