package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kvdb/kvdb/node/client"
)

// The client commands: put, get, rm, ls, stat, cluster. They bind flags to
// client.Client calls and print; the protocol lives in package node/client.

// stdin is where `put KEY -` reads the value. A variable so tests can
// feed it; nothing else changes it.
var stdin io.Reader = os.Stdin

// errNotFound makes run exit with status 2: the key holds no value.
var errNotFound = client.ErrNotFound

// The exit statuses, as the help of each command states them.
const (
	clientExit = `

Exit status: 0 success; 1 any error, a bad flag or argument included;
2 the key does not exist (404). Errors are one line on stderr.`
	clientExitNoKey = `

Exit status: 0 success; 1 any error, a bad flag or argument included.
Errors are one line on stderr.`
)

const (
	putSynopsis = `put [flags] KEY [FILE|-]

Stores the contents of FILE under KEY, replacing any value it holds
(--create: only if it holds none). FILE - or no FILE reads stdin. The
value streams to the master, which answers once every replica has it on
disk. Prints nothing on success; -v prints what was stored on stderr. On a
terminal, a progress bar for values of 4 MiB or more (or of unknown size).

With several masters in --url, a write whose master went away or lost
its leader is sent again to the next (a FILE is read again from its
start), but for a --create write, or one read from a pipe, that may have
taken effect: it fails saying it "may or may not have taken effect".` + clientExitNoKey

	getSynopsis = `get [flags] KEY

Writes KEY's value to stdout, or with -o to FILE: it goes to FILE.tmp-*
in the same directory, renamed to FILE once complete and checked, so a
failed download leaves no partial file. The value streams, following the
master's redirect to a volume, and is checked against its ETag.` + clientExit

	rmSynopsis = `rm [flags] KEY

Deletes KEY's value from every replica and the index.` + clientExit

	lsSynopsis = `ls [flags] [PREFIX]

Lists the keys that start with PREFIX (every key without one), one per
line, in byte order, as stored (not escaped).` + clientExitNoKey

	statSynopsis = `stat [flags] KEY

Prints KEY's size in bytes, ETag and Last-Modified as "name: value"
lines, from the master's index.` + clientExit

	clusterSynopsis = `cluster [flags]

Prints the members of the cluster as the master sees them (name, role,
address, state, free and total bytes, ring partitions owned), then
replication: replica count, live volumes, keys under-replicated at the
last repair scan, deletions still queued.` + clientExitNoKey
)

// progressMin is the size from which a transfer shows progress.
const progressMin = 4 << 20

// clientFlags are the flags every client command takes.
type clientFlags struct {
	url, token        string
	timeout, failover time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", client.DefaultURL, "master URL, or several masters' separated by commas (tried in turn when one is down or has no leader); the environment's KVDB_URL when the flag is absent")
	fs.StringVar(&c.token, "token", "", "API key, when the master requires one; without the flag, the environment's KVDB_TOKEN (safer: other users can see command lines)")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "idle timeout: fail when no byte moves for this long (the whole transfer is not limited)")
	fs.DurationVar(&c.failover, "failover-timeout", 15*time.Second, "with several masters in --url: how long to keep trying them, backing off, after the first one that is down or has no leader")
}

// newClient builds the client.Client the flags describe.
func (c *clientFlags) newClient(fs *flag.FlagSet) (*client.Client, error) {
	c.url, c.token = urlAndToken(fs, c.url, c.token)
	if c.failover <= 0 {
		return nil, fmt.Errorf("--failover-timeout %v: want more than 0", c.failover)
	}
	return client.NewClient(client.ClientConfig{URL: c.url, Token: c.token, IdleTimeout: c.timeout, FailoverTimeout: c.failover})
}

// urlAndToken takes the masters' URLs and the API key from the environment
// (KVDB_URL, KVDB_TOKEN) when the flags did not give them.
func urlAndToken(fs *flag.FlagSet, url, token string) (string, string) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if u := os.Getenv("KVDB_URL"); !set["url"] && u != "" {
		url = u
	}
	if t := os.Getenv("KVDB_TOKEN"); !set["token"] && t != "" {
		token = t
	}
	return url, token
}

// pickMaster returns, of the comma-separated masters in urls, the first
// that answers /_kvdb/live (the first when none does): the admin commands
// talk to one master, which sends them on to the leader.
func pickMaster(urls string) string {
	list := strings.Split(urls, ",")
	if len(list) == 1 {
		return strings.TrimRight(list[0], "/")
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, u := range list {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		resp, err := hc.Get(u + "/_kvdb/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return u
			}
		}
	}
	return strings.TrimRight(strings.TrimSpace(list[0]), "/")
}

// parseClientArgs parses flags placed before, between or after the
// positional arguments (`get KEY -o FILE`), and returns the positional
// ones; after "--" everything is positional (a key starting with '-').
// A bad flag is one line of error, for run to print; --help prints the
// usage. Unlike the server roles, only KVDB_URL and KVDB_TOKEN are read
// from the environment: KVDB_O must not pick a file to overwrite.
func parseClientArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	defer func() { fs.Usage = usage; fs.SetOutput(out) }()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(out)
				usage()
				return nil, err
			}
			return nil, fmt.Errorf("%v (see kvdb %s --help)", err, fs.Name())
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// newClientFlagSet is newFlagSet for a client command, whose flags do not
// come from the environment (but for KVDB_URL and KVDB_TOKEN).
func newClientFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvdb %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// wantArgs checks the number of positional arguments.
func wantArgs(fs *flag.FlagSet, pos []string, lo, hi int) error {
	if len(pos) < lo || len(pos) > hi {
		return fmt.Errorf("wrong number of arguments (see kvdb %s --help)", fs.Name())
	}
	return nil
}

// interrupted names a failure that a signal caused as such.
func interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	return err
}

// signalContext is cancelled by SIGINT or SIGTERM, so that a transfer stops
// cleanly (get removes its temporary file); a second signal kills.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}

// clientArgs parses a client command's flags and arguments and checks it
// has between min and max positional ones.
func clientArgs(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	pos, err := parseClientArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if err := wantArgs(fs, pos, min, max); err != nil {
		return nil, err
	}
	return pos, nil
}

// open returns the client and a context that Ctrl-C cancels; done
// releases both.
func (cf *clientFlags) open(fs *flag.FlagSet) (*client.Client, context.Context, func(), error) {
	cl, err := cf.newClient(fs)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, stop := signalContext()
	return cl, ctx, func() { stop(); cl.Close() }, nil
}

func runPut(args []string, stderr io.Writer) error {
	fs := newClientFlagSet("put", putSynopsis, stderr)
	var cf clientFlags
	cf.register(fs)
	create := fs.Bool("create", false, "create only: fail (exit 1) when KEY already holds a value, instead of replacing it")
	verbose := fs.Bool("v", false, `print "created|replaced KEY: SIZE bytes, ETag TAG" on stderr`)
	showProgress := fs.Bool("progress", false, "show progress even when stderr is not a terminal")
	pos, err := clientArgs(fs, args, 1, 2)
	if err != nil {
		return err
	}
	key, src := pos[0], "-"
	if len(pos) == 2 {
		src = pos[1]
	}
	cl, err := cf.newClient(fs)
	if err != nil {
		return err
	}
	defer cl.Close()

	var r io.Reader
	size := int64(-1)
	if src == "-" {
		r = stdin
		if f, ok := stdin.(*os.File); ok {
			size = remainingSize(f)
			if isTerminal(f) {
				fmt.Fprintln(stderr, "kvdb put: reading the value from the terminal; end it with Ctrl-D")
			}
		}
	} else {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return fmt.Errorf("%s is a directory", src)
		}
		r, size = f, remainingSize(f)
	}

	ctx, stop := signalContext()
	defer stop()
	bar := newProgress(stderr, *showProgress, "put "+key, size)
	if bar != nil {
		bar.waitNote = "waiting for the replicas to sync"
	}
	res, err := cl.Put(ctx, key, bar.reader(r), size, client.PutOptions{CreateOnly: *create})
	bar.finish()
	if err != nil {
		return interrupted(ctx, err)
	}
	if *verbose {
		verb := "replaced"
		if res.Created {
			verb = "created"
		}
		fmt.Fprintf(stderr, "%s %s: %d bytes, ETag %s\n", verb, key, res.Size, res.ETag)
	}
	return nil
}

// remainingSize is the bytes left to read from f when it is a regular
// file (sent with Content-Length), else -1 (sent chunked).
func remainingSize(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off > fi.Size() {
		return -1
	}
	return fi.Size() - off
}

func runGet(args []string, stdout, stderr io.Writer) error {
	fs := newClientFlagSet("get", getSynopsis, stderr)
	var cf clientFlags
	cf.register(fs)
	out := fs.String("o", "", "write the value to `FILE` (complete or not at all) instead of stdout")
	showProgress := fs.Bool("progress", false, "show progress even when stderr is not a terminal")
	pos, err := clientArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	key := pos[0]
	cl, err := cf.newClient(fs)
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, stop := signalContext()
	defer stop()
	err = getValue(ctx, cl, key, *out, *showProgress, stdout, stderr)
	return interrupted(ctx, err)
}

// getValue streams key's value to stdout, or to the file out (whole or
// not at all).
func getValue(ctx context.Context, cl *client.Client, key, out string, showProgress bool, stdout, stderr io.Writer) error {
	v, err := cl.Get(ctx, key)
	if err != nil {
		return err
	}
	defer v.Close()
	toStdout := out == "" || out == "-"
	// The value on a terminal and a bar redrawn over it would garble both.
	var bar *progress
	if showProgress || !toStdout || !isTerminal(stdout) {
		bar = newProgress(stderr, showProgress, "get "+key, v.Size)
	}
	if toStdout {
		err = copyValue(stdout, bar.reader(v))
		bar.finish()
		return err
	}
	if fi, err := os.Stat(out); err == nil && !fi.Mode().IsRegular() {
		if fi.IsDir() {
			return fmt.Errorf("-o %s is a directory", out)
		}
		// A device or a pipe (-o /dev/null): no rename possible, nor needed.
		f, err := os.OpenFile(out, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		err = copyValue(f, bar.reader(v))
		bar.finish()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	f, err := createTemp(out)
	if err != nil {
		return err
	}
	err = copyValue(f, bar.reader(v))
	bar.finish()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), out)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// copyValue copies in large pieces (io.Copy's are 32 KiB).
func copyValue(w io.Writer, r io.Reader) error {
	buf := make([]byte, 256<<10)
	// Hide any ReadFrom of w: *os.File's would fall back to 32 KiB.
	_, err := io.CopyBuffer(struct{ io.Writer }{w}, r, buf)
	return err
}

// createTemp creates path.tmp-XXXXXXXX next to path, with the mode a new
// file gets (0666 less the umask).
func createTemp(path string) (*os.File, error) {
	for range 10 {
		var b [4]byte
		_, _ = rand.Read(b[:])
		f, err := os.OpenFile(path+".tmp-"+hex.EncodeToString(b[:]), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if !errors.Is(err, os.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("no free temporary name next to %s", path)
}

func runRm(args []string, stderr io.Writer) error {
	fs := newClientFlagSet("rm", rmSynopsis, stderr)
	var cf clientFlags
	cf.register(fs)
	pos, err := clientArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	cl, ctx, done, err := cf.open(fs)
	if err != nil {
		return err
	}
	defer done()
	return cl.Delete(ctx, pos[0])
}

func runLs(args []string, stdout, stderr io.Writer) error {
	fs := newClientFlagSet("ls", lsSynopsis, stderr)
	var cf clientFlags
	cf.register(fs)
	limit := fs.Int("limit", 1000, "keys fetched per request (1 to 10000)")
	nul := fs.Bool("0", false, "end each key with a NUL byte instead of a newline (for xargs -0: keys may hold newlines)")
	pos, err := clientArgs(fs, args, 0, 1)
	if err != nil {
		return err
	}
	if *limit < 1 || *limit > 10000 {
		return fmt.Errorf("--limit %d: want 1 to 10000", *limit)
	}
	prefix := ""
	if len(pos) == 1 {
		prefix = pos[0]
	}
	cl, ctx, done, err := cf.open(fs)
	if err != nil {
		return err
	}
	defer done()
	end := byte('\n')
	if *nul {
		end = 0
	}
	w := bufio.NewWriterSize(stdout, 64<<10)
	for key, err := range cl.Keys(ctx, prefix, *limit) {
		if err != nil {
			_ = w.Flush()
			return err
		}
		_, _ = w.WriteString(key)
		if err := w.WriteByte(end); err != nil {
			return err
		}
	}
	return w.Flush()
}

func runStat(args []string, stdout, stderr io.Writer) error {
	fs := newClientFlagSet("stat", statSynopsis, stderr)
	var cf clientFlags
	cf.register(fs)
	pos, err := clientArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	cl, ctx, done, err := cf.open(fs)
	if err != nil {
		return err
	}
	defer done()
	info, err := cl.Stat(ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key: %s\nsize: %d\n", pos[0], info.Size)
	if info.ETag != "" {
		fmt.Fprintf(stdout, "etag: %s\n", info.ETag)
	}
	if !info.LastModified.IsZero() {
		fmt.Fprintf(stdout, "last-modified: %s\n", info.LastModified.UTC().Format(http.TimeFormat))
	}
	return nil
}

func runCluster(args []string, stdout, stderr io.Writer) error {
	fs := newClientFlagSet("cluster", clusterSynopsis, stderr)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the master's JSON as it is")
	_, err := clientArgs(fs, args, 0, 0)
	if err != nil {
		return err
	}
	cl, ctx, done, err := cf.open(fs)
	if err != nil {
		return err
	}
	defer done()
	info, err := cl.Cluster(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintf(stdout, "%s\n", strings.TrimSpace(string(info.Raw)))
		return err
	}
	return writeCluster(stdout, info)
}

// writeCluster prints the members as an aligned table, then a summary.
func writeCluster(w io.Writer, c *client.ClusterInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tADDR\tSTATE\tFREE\tTOTAL\tPARTITIONS")
	live := 0
	for _, m := range append(append([]client.Member{}, c.Members...), c.Departed...) {
		free, total, parts := "-", "-", "-"
		if m.Total > 0 {
			free, total = humanBytes(m.Free), humanBytes(m.Total)
		}
		if m.Role == client.RoleVolume {
			parts = strconv.Itoa(c.Ring.Owned[m.Name])
			if m.State == "alive" {
				live++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(m.Name), orDash(m.Role), orDash(m.HTTP), orDash(m.State), free, total, parts)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	pending := 0
	for _, n := range c.PendingDeletes {
		pending += n
	}
	_, err := fmt.Fprintf(w, "\nreplicas %d, live volumes %d, under-replicated keys %d, pending deletes %d\n",
		c.Replicas, live, c.UnderReplicated, pending)
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes formats n with a binary unit: 512 B, 4.0 MiB, 1.2 GiB.
func humanBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i:i+1] + "iB"
}

// progress draws a one-line progress bar (bytes, rate, ETA) on a terminal,
// redrawn in place at most five times a second. A nil *progress does
// nothing, so callers need not check whether it is shown.
type progress struct {
	w     io.Writer
	label string
	total int64 // -1: unknown
	start time.Time
	n     atomic.Int64
	// waitNote is shown once the source is read (a write then waits for
	// the replicas' fsync).
	waitNote string
	eof      atomic.Bool
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	width    int // of the last line drawn, to blank its tail
}

// newProgress returns a progress bar on w for a transfer of total bytes
// (-1 unknown), or nil when it is not wanted: w is not a terminal (unless
// force), or the transfer is small.
func newProgress(w io.Writer, force bool, label string, total int64) *progress {
	if !force && !isTerminal(w) || total >= 0 && total < progressMin {
		return nil
	}
	p := &progress{w: w, label: label, total: total, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.draw(false)
		}
	}
}

func (p *progress) draw(final bool) {
	note, elapsed := "", time.Since(p.start)
	switch {
	case final:
		note = "in " + clock(elapsed)
	case p.eof.Load() || p.total >= 0 && p.n.Load() >= p.total:
		note = p.waitNote
	}
	line := progressLine(p.label, p.n.Load(), p.total, elapsed, note)
	pad := max(p.width-len(line), 0)
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

// finish draws the final state and ends the line.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		p.draw(true)
		fmt.Fprintln(p.w)
	})
}

// reader counts what is read from r on the bar. A Seeker stays one, so
// that a write sent again (to another master) can rewind its file.
func (p *progress) reader(r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	if s, ok := r.(io.ReadSeeker); ok {
		return &progressReadSeeker{progressReader{r: r, p: p}, s}
	}
	return &progressReader{r: r, p: p}
}

// progressReadSeeker is a progressReader over an io.ReadSeeker. A seek
// starts the count over: the client seeks only to rewind a body to where
// it began, to send it again.
type progressReadSeeker struct {
	progressReader
	s io.Seeker
}

func (r *progressReadSeeker) Seek(offset int64, whence int) (int64, error) {
	if whence == io.SeekCurrent && offset == 0 {
		return r.s.Seek(0, io.SeekCurrent)
	}
	n, err := r.s.Seek(offset, whence)
	if err == nil {
		r.p.n.Store(0)
		r.p.eof.Store(false)
	}
	return n, err
}

type progressReader struct {
	r io.Reader
	p *progress
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.n.Add(int64(n))
	if err == io.EOF {
		r.p.eof.Store(true)
	}
	return n, err
}

// progressLine is one state of the bar:
//
//	put big.iso  [=======>            ]  42.0 MiB / 100.0 MiB   42%  85.3 MiB/s  ETA 0:01
//	put -  42.0 MiB  85.3 MiB/s
//
// A note, when given, replaces the ETA.
func progressLine(label string, n, total int64, elapsed time.Duration, note string) string {
	var b strings.Builder
	if len(label) > 40 {
		label = label[:37] + "..."
	}
	b.WriteString(label)
	rate := 0.0
	if s := elapsed.Seconds(); s >= 0.1 {
		rate = float64(n) / s
	}
	if total > 0 {
		const width = 20
		frac := min(float64(n)/float64(total), 1)
		full := int(frac * width)
		bar := strings.Repeat("=", full)
		if full < width {
			bar += ">" + strings.Repeat(" ", width-full-1)
		}
		fmt.Fprintf(&b, "  [%s]  %s / %s  %3d%%", bar, humanBytes(n), humanBytes(total), int(frac*100))
	} else {
		fmt.Fprintf(&b, "  %s", humanBytes(n))
	}
	if rate > 0 {
		fmt.Fprintf(&b, "  %s/s", humanBytes(int64(rate)))
	}
	switch {
	case note != "":
		b.WriteString("  " + note)
	case total > 0 && rate > 0 && n < total:
		eta := time.Duration(float64(total-n) / rate * float64(time.Second))
		fmt.Fprintf(&b, "  ETA %s", clock(eta))
	}
	return b.String()
}

// clock formats d as m:ss or h:mm:ss.
func clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
