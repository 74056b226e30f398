package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kvdb/kvdb/bench"
)

const benchSynopsis = `bench [flags]

Drives any server speaking the kvdb client API (PUT, GET following one
redirect, HEAD, DELETE) and reports per operation: count, ops/s, MB/s,
latency p50/p90/p99/max, errors and the first error. Values are generated
as streams from --seed and the key, never held in memory. Keys still
present at the end are deleted unless --keep. Ctrl-C stops the run early
and still prints the report.

--ops: put | get | head | a sequence such as put,get,delete (each worker
cycles through it on its own keys) | mixed:70get/20put/10delete (random
choice per op by weight). get and head alone first PUT a working set,
reported as "put (setup)".

--url: one server, or several masters separated by commas. Requests go to
the master that answered last; one that cannot be reached or answers 503
is left for the next, and a follower's redirect to the leader is followed.

--retries N: a failed operation is tried again up to N times, 100ms,
300ms, 900ms... (at most 2s) apart, from the master (the next one when it
could not be reached or answered 503), a GET verified again from byte 0.
A GET or HEAD is retried after a transport error (a refused or reset
connection, a body cut mid-way, the idle timeout), a 5xx, or a 404 for a
key bench wrote and has not deleted. A PUT or DELETE only after a
transport error or a 503, what a master failing over gives: the PUT sends
the same bytes again, and a retried DELETE that finds its key gone counts
as done (bench's keys are its own). Other failures are final, as a retry
could only hide them. The report counts ops that succeeded after a retry
as "retried", not as errors, with the first error that led to a retry.

Exit status: 0 when the run completed, even with failed operations (they
are counted in the report); 1 when every operation failed, the run was
interrupted or could not start; 2 on a bad flag or value.`

// sizeRangeFlag is --size: a size or a range of sizes.
type sizeRangeFlag struct{ r bench.SizeRange }

func (f *sizeRangeFlag) String() string { return f.r.String() }

func (f *sizeRangeFlag) Set(v string) error {
	r, err := bench.ParseSizeRange(v)
	if err != nil {
		return err
	}
	f.r = r
	return nil
}

// mixFlag is --ops.
type mixFlag struct{ m bench.Mix }

func (f *mixFlag) String() string { return f.m.String() }

func (f *mixFlag) Set(v string) error {
	m, err := bench.ParseMix(v)
	if err != nil {
		return err
	}
	f.m = m
	return nil
}

// benchOpts is what kvdb bench's flags set.
type benchOpts struct {
	cfg                                          bench.Config
	size                                         sizeRangeFlag
	ops                                          mixFlag
	asJSON, baseline, baselineOnly, showProgress bool
	baselineDir                                  string
	s3                                           bool
	s3Key                                        string
	procs                                        int
}

// benchFlags declares kvdb bench's flags, bound to a bench.Config.
func benchFlags(stderr io.Writer) (*flag.FlagSet, *benchOpts) {
	fs := newFlagSet("bench", benchSynopsis, stderr)
	o := &benchOpts{size: sizeRangeFlag{bench.SizeRange{Min: 1 << 20, Max: 1 << 20}}, baselineDir: "./data/bench-baseline"}
	_ = o.ops.Set("put,get,delete")
	cfg := &o.cfg
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:3000", "base URL of the server, or several masters' separated by commas")
	fs.Var(&o.size, "size", "value `SIZE` from 1KiB to 1GiB, or a range MIN-MAX drawn uniformly per key (e.g. 1KiB-16MiB)")
	fs.IntVar(&cfg.Count, "count", 0, "operations to run (a sequence is rounded up to whole cycles); 0: run for --duration")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to run when --count is 0")
	fs.IntVar(&cfg.Concurrency, "concurrency", 4, "parallel workers")
	fs.Var(&o.ops, "ops", "operation `MIX`: put, get, head, a sequence (put,get,delete) or mixed:70get/20put/10delete")
	fs.StringVar(&cfg.Prefix, "prefix", "", `key prefix (default "bench/<6 random hex digits>/")`)
	fs.BoolVar(&cfg.Verify, "verify", false, "GET checks every byte against what was PUT")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the value generator")
	fs.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "idle timeout: a request fails when no byte moves for this long")
	fs.BoolVar(&cfg.Keep, "keep", false, "leave the keys written in the store (default: delete them at the end, untimed)")
	fs.IntVar(&cfg.Retries, "retries", 0, "retry a failed operation up to `N` times, on the next master when one is down or answers 503, backing off 100ms, 300ms, 900ms... up to 2s: a GET or HEAD after a transport error, cut body, 5xx or 404 on a key bench wrote; a PUT or DELETE after a transport error or 503")
	fs.Int64Var(&cfg.Expect, "expect", 1<<20, "PUTs of values of at least `BYTES` send Expect: 100-continue (a kvdb master then redirects the body to a volume); -1: never")
	fs.BoolVar(&o.s3, "s3", false, "--url is an S3 endpoint (kvdb --s3): objects path-style in the bucket that starts --prefix (created if missing), requests signed with Signature V4")
	fs.StringVar(&o.s3Key, "s3-key", "", "with --s3, the access key as `ID:SECRET` (default: $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, else kvdb-bench:kvdb-bench, which a gateway without keys accepts)")
	fs.BoolVar(&o.asJSON, "json", false, "print the report as JSON on stdout instead of a table")
	fs.BoolVar(&o.baseline, "baseline", false, "after the run, measure this machine's limits with the same workload: write+fsync files, GET them from a sendfile server")
	fs.BoolVar(&o.baselineOnly, "baseline-only", false, "run only the baseline (no server needed)")
	fs.StringVar(&o.baselineDir, "baseline-dir", o.baselineDir, "directory for the baseline's files, on the disk the server writes to; created and removed again")
	procs, _ := halfProcs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0))
	fs.IntVar(&o.procs, "procs", procs, "drive the server from at most `N` CPUs at once (GOMAXPROCS; the default is half the CPUs, at least 1, or 0 when GOMAXPROCS is set; the baseline runs on Go's own choice); 0: Go's own choice")
	fs.BoolVar(&o.showProgress, "progress", false, "show progress on stderr even when it is not a terminal (it is shown on a terminal anyway)")
	return fs, o
}

// runBench binds the bench flags to bench.Config and runs it.
func runBench(args []string, stdout, stderr io.Writer) error {
	fs, o := benchFlags(stderr)
	cfg := &o.cfg
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvdb bench: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if o.procs < 0 {
		fmt.Fprintf(stderr, "kvdb bench: --procs %d: want 0 or more\n", o.procs)
		return errUsage
	}
	// The load generator shares the machine with the servers it measures,
	// often on few CPUs: see README, "bench on half the CPUs". The
	// baseline runs on Go's own choice: it is a server and its load in
	// one process.
	restore := func() {}
	if o.procs > 0 && !o.baselineOnly {
		prev := runtime.GOMAXPROCS(o.procs)
		restore = sync.OnceFunc(func() { runtime.GOMAXPROCS(prev) })
	}
	defer restore()
	cfg.Size, cfg.Ops = o.size.r, o.ops.m
	if o.s3 {
		cfg.S3 = s3Credentials(o.s3Key)
	}
	if o.showProgress || isTerminal(stderr) {
		cfg.Progress = stderr
	}
	validate := cfg.Validate
	if o.baselineOnly {
		cfg.URL = ""
		validate = func() error {
			// Everything but the URL, which the baseline does not use.
			c := *cfg
			c.URL = "http://127.0.0.1"
			return c.Validate()
		}
	}
	if err := validate(); err != nil {
		fmt.Fprintf(stderr, "kvdb bench: %v\n", err)
		return errUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A second signal kills the process: the first only stops the run.
	go func() {
		<-ctx.Done()
		stop()
	}()

	var res bench.Result
	var runErr error
	if o.baselineOnly {
		res.Config = bench.Summarize(*cfg)
		res.Config.Ops, res.Config.Prefix = "", ""
	} else {
		res, runErr = bench.Run(ctx, *cfg)
		restore()
		if runErr != nil && !errors.Is(runErr, context.Canceled) {
			return runErr
		}
	}
	if (o.baseline || o.baselineOnly) && ctx.Err() == nil {
		rows, err := bench.RunBaseline(ctx, *cfg, o.baselineDir)
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		res.Baseline = rows
	}

	if o.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else if err := res.WriteTable(stdout); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	var ok, total int64
	for _, rows := range [][]bench.OpStats{res.Ops, res.Baseline} {
		for _, s := range rows {
			total += s.Count
			ok += s.Count - s.Errors
		}
	}
	if total > 0 && ok == 0 {
		return fmt.Errorf("all %d operations failed", total)
	}
	return nil
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// s3Credentials are bench --s3's credentials: --s3-key ID:SECRET, else
// the AWS environment, else a placeholder an open gateway accepts.
func s3Credentials(flag string) *bench.S3Credentials {
	c := &bench.S3Credentials{AccessKeyID: os.Getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), Region: os.Getenv("AWS_DEFAULT_REGION")}
	if id, secret, ok := strings.Cut(flag, ":"); ok {
		c.AccessKeyID, c.SecretAccessKey = id, secret
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		c.AccessKeyID, c.SecretAccessKey = "kvdb-bench", "kvdb-bench"
	}
	return c
}
