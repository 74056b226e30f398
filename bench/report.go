package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteTable writes r as a human-readable table: one row per operation
// with count, ops/s, MB/s, latency p50/p90/p99/max, errors and the first
// error; then the baseline rows, if any, and how the PUT and GET rates
// compare with them.
//
// With retries (the run's Retries, or any row that retried), a "retried"
// column follows "errors". The first-error column stays one error wide: a
// row's first final error when it has one, else its first retried error
// marked "retry: ", so a run whose retries all succeeded still shows what
// they were for. The JSON report carries both.
func (r Result) WriteTable(w io.Writer) error {
	var b strings.Builder
	c := r.Config
	if c.URL != "" {
		fmt.Fprintf(&b, "url %s  ", c.URL)
	}
	fmt.Fprintf(&b, "size %s  concurrency %d", c.Size, c.Concurrency)
	if c.Ops != "" {
		fmt.Fprintf(&b, "  ops %s", c.Ops)
	}
	if c.Count > 0 {
		fmt.Fprintf(&b, "  count %d", c.Count)
	} else if c.Duration != "" {
		fmt.Fprintf(&b, "  duration %s", c.Duration)
	}
	if c.Verify {
		b.WriteString("  verify")
	}
	if c.Retries > 0 {
		fmt.Fprintf(&b, "  retries %d", c.Retries)
	}
	if r.Elapsed > 0 {
		fmt.Fprintf(&b, "  elapsed %s", fmtDuration(r.Elapsed))
	}
	b.WriteString("\n")
	retried := c.Retries > 0
	for _, s := range append(append([]OpStats(nil), r.Ops...), r.Baseline...) {
		retried = retried || s.Retried > 0 || s.FirstRetryErr != ""
	}
	header := fmt.Sprintf("%-17s %8s %10s %9s %9s %9s %9s %9s %7s",
		"op", "count", "ops/s", "MB/s", "p50", "p90", "p99", "max", "errors")
	if retried {
		header += fmt.Sprintf(" %7s", "retried")
	}
	header += "  first error\n"
	if len(r.Ops) > 0 {
		b.WriteString(header)
		writeRows(&b, r.Ops, retried)
	}
	if len(r.Baseline) > 0 {
		b.WriteString("\nbaseline: this machine's limits, same sizes and concurrency\n")
		b.WriteString(header)
		writeRows(&b, r.Baseline, retried)
		var cmp []string
		for _, p := range []struct{ op, base string }{{"put", "write+fsync"}, {"get", "sendfile get"}} {
			o, okO := findRow(r.Ops, p.op)
			bl, okB := findRow(r.Baseline, p.base)
			if okO && okB && bl.MBPerSec > 0 {
				cmp = append(cmp, fmt.Sprintf("%s at %.0f%% of %s", p.op, 100*o.MBPerSec/bl.MBPerSec, p.base))
			}
		}
		if len(cmp) > 0 {
			fmt.Fprintf(&b, "MB/s: %s\n", strings.Join(cmp, ", "))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeRows(b *strings.Builder, ops []OpStats, retried bool) {
	for _, s := range ops {
		first := s.FirstErr
		if first == "" && s.FirstRetryErr != "" {
			first = "retry: " + s.FirstRetryErr
		}
		if len(first) > 120 {
			first = first[:117] + "..."
		}
		line := fmt.Sprintf("%-17s %8d %10.1f %9.1f %9s %9s %9s %9s %7d",
			s.Op, s.Count, s.OpsPerSec, s.MBPerSec,
			fmtDuration(s.P50), fmtDuration(s.P90), fmtDuration(s.P99), fmtDuration(s.Max),
			s.Errors)
		if retried {
			line += fmt.Sprintf(" %7d", s.Retried)
		}
		line += "  " + first
		b.WriteString(strings.TrimRight(line, " "))
		b.WriteByte('\n')
	}
}

func findRow(ops []OpStats, name string) (OpStats, bool) {
	for _, s := range ops {
		if s.Op == name {
			return s, true
		}
	}
	return OpStats{}, false
}

// fmtDuration shows d with three significant digits: 812µs, 12.3ms, 1.50s.
func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d)
	case d < time.Millisecond:
		return sig3(float64(d)/1e3) + "µs"
	case d < time.Second:
		return sig3(float64(d)/1e6) + "ms"
	}
	return sig3(d.Seconds()) + "s"
}

func sig3(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}
