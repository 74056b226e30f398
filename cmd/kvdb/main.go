// Command kvdb runs the roles of the kvdb blob store: the master, a volume,
// a one-machine development cluster, and the bench load generator. It only
// binds flags to each package's Config, sets up logging and signals, starts
// and stops; the logic lives in node/, store/, ring/ and bench/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kvdb/kvdb/node"
)

const usage = `kvdb — a distributed store for large values

Usage:
  kvdb master [flags] [DIR]   the master: client API and key index
  kvdb volume [flags] [DIR]   a volume server: holds the bytes, joins by gossip
  kvdb dev [flags]            one master and 3 volumes on this machine (127.0.0.1)
  kvdb bench --url URL [...]  load generator for any server speaking the API
  kvdb put KEY [FILE|-]       store a value (from FILE or stdin)
  kvdb get KEY [-o FILE]      fetch a value (to stdout or FILE)
  kvdb rm KEY                 delete a value
  kvdb ls [PREFIX]            list keys
  kvdb stat KEY               size, ETag and Last-Modified of a value
  kvdb cluster                members and replication state
  kvdb drain VOLUME           move every value off a volume before removing it
  kvdb verify [--repair]      check every volume against the index (and fix it)
  kvdb version                version, VCS revision and Go version (also --version)
  kvdb help COMMAND           flags of a command

The flags of master, volume, dev and bench can also come from the
environment: KVDB_ then the flag's name in capitals, - as _ (--max-size as
KVDB_MAX_SIZE, --name as KVDB_NAME); a flag on the command line wins. PORT
sets the HTTP port of master, volume and dev. The client commands read only
KVDB_URL (the master, or several comma-separated; default
http://localhost:3000) and KVDB_TOKEN, and exit 0 on success, 1 on error, 2 when the key does not exist. A KVDB_
variable that no command reads (a typo) is named in a warning at start.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command returns what runs subcommand name, or nil.
func command(name string) func(args []string, stdout, stderr io.Writer) error {
	switch name {
	case "master":
		return func(a []string, _, e io.Writer) error { return runMaster(a, e) }
	case "volume":
		return func(a []string, _, e io.Writer) error { return runVolume(a, e) }
	case "dev":
		return func(a []string, _, e io.Writer) error { return runDev(a, e) }
	case "bench":
		return runBench
	case "put":
		return func(a []string, _, e io.Writer) error { return runPut(a, e) }
	case "get":
		return runGet
	case "rm":
		return func(a []string, _, e io.Writer) error { return runRm(a, e) }
	case "ls":
		return runLs
	case "stat":
		return runStat
	case "cluster":
		return runCluster
	case "drain":
		return runDrain
	case "verify":
		return runVerify
	case "version":
		return runVersion
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		cmd, rest = rest[0], []string{"--help"}
	case "-version", "--version":
		cmd = "version"
	}
	runCmd := command(cmd)
	if runCmd == nil {
		fmt.Fprintf(stderr, "kvdb: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if cmd != "version" {
		warnUnknownEnv(stderr, cmd, os.Environ())
	}
	err := runCmd(rest, stdout, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errNotFound):
		fmt.Fprintf(stderr, "kvdb %s: %v\n", cmd, err)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "kvdb %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

// serverFlags holds the flags every server role takes that are no field of
// its Config; the others bind to the Config's fields (see roleFields).
type serverFlags struct {
	advertise, join     string
	logFormat, logLevel string
	secret, secretFile  string
}

// roleFields points at the fields of a role's Config that the flags every
// server role takes set. The flags' defaults are what the fields hold: the
// preset's (node.DefaultMasterConfig, node.DefaultVolumeConfig).
type roleFields struct {
	name, addr, dir         *string
	gossip                  *node.GossipConfig
	pprof                   *bool
	maxConns, maxConnsPerIP *int
}

func (c *serverFlags) register(fs *flag.FlagSet, f roleFields, nameUsage string) {
	fs.StringVar(f.addr, "addr", *f.addr, "HTTP listen address `HOST:PORT` (HOST empty: every interface)")
	fs.StringVar(&c.advertise, "advertise", "", "`HOST[:PORT]` other nodes and redirected clients use for this node (default: the listen host, or the first private IP); set it on every multi-machine node")
	fs.StringVar(&f.gossip.Bind, "gossip", f.gossip.Bind, "gossip (memberlist) bind address `HOST:PORT`, UDP and TCP (default: the HTTP host, HTTP port + 1000)")
	fs.StringVar(&f.gossip.Advertise, "gossip-advertise", f.gossip.Advertise, "`HOST[:PORT]` other nodes use to gossip with this one (default: the --advertise host)")
	fs.StringVar(&c.join, "join", "", "gossip address(es) `HOST:PORT` of any existing member, comma-separated")
	fs.StringVar(f.dir, "dir", *f.dir, "data directory `DIR` (or give it as the last argument)")
	fs.StringVar(&f.gossip.Cluster, "cluster", f.gossip.Cluster, "cluster `NAME`; nodes of another cluster are ignored")
	fs.StringVar(&f.gossip.Profile, "gossip-profile", f.gossip.Profile, "failure-detection timings: lan (~6 s to notice a death), local, test (~1 s, loopback only)")
	fs.StringVar(f.name, "name", *f.name, nameUsage)
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(f.pprof, "pprof", *f.pprof, "serve Go profiles under /_kvdb/debug/pprof/")
	registerConnCaps(fs, f.maxConns, f.maxConnsPerIP)
	registerSecret(fs, &c.secret, &c.secretFile)
}

// registerConnCaps adds --max-conns and --max-conns-per-ip to fs.
func registerConnCaps(fs *flag.FlagSet, maxConns, perIP *int) {
	fs.Var(intFlag(maxConns, 0, math.MaxInt32), "max-conns", "at most `N` HTTP connections open at once (0: no cap); one more is answered 503 and closed")
	fs.Var(intFlag(perIP, 0, math.MaxInt32), "max-conns-per-ip", "at most `N` HTTP connections open at once from one client address (0: no cap); one more is answered 429 and closed. Clients behind one proxy or NAT share an address, and so do the master's connections to a volume")
}

// registerSecret adds --secret and --secret-file to fs.
func registerSecret(fs *flag.FlagSet, secret, file *string) {
	fs.StringVar(secret, "secret", "", fmt.Sprintf("cluster secret, the same on every node, at least %d bytes: encrypts gossip and signs requests to volumes and read redirects (prefer KVDB_SECRET or --secret-file: command lines are visible to other users)", node.MinSecretLen))
	fs.StringVar(file, "secret-file", "", "`FILE` holding the cluster secret (surrounding whitespace ignored)")
}

// clusterSecret takes the secret from --secret or --secret-file.
func clusterSecret(secret, file string) ([]byte, error) {
	switch {
	case secret != "" && file != "":
		return nil, errors.New("give --secret or --secret-file, not both")
	case file != "":
		return node.ReadSecretFile(file)
	case secret != "" && len(secret) < node.MinSecretLen:
		return nil, fmt.Errorf("--secret is %d bytes: want at least %d (e.g. openssl rand -base64 32)", len(secret), node.MinSecretLen)
	case secret != "":
		return []byte(secret), nil
	}
	return nil, nil
}

// apiKeys loads --api-keys-file, if given.
func apiKeys(path string) ([]node.APIKey, error) {
	if path == "" {
		return nil, nil
	}
	return node.LoadAPIKeys(path)
}

// finishGossip completes g from the flags that are no field of it: the
// addresses to join, and the gossip advertise host taken from --advertise.
func (c *serverFlags) finishGossip(g *node.GossipConfig) {
	if g.Advertise == "" && c.advertise != "" {
		g.Advertise = hostOnly(c.advertise)
	}
	for _, a := range strings.Split(c.join, ",") {
		if a = strings.TrimSpace(a); a != "" {
			g.Join = append(g.Join, a)
		}
	}
}

func hostOnly(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		return hostport[:i]
	}
	return hostport
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// envName is the environment variable that sets flag name: --max-size is
// KVDB_MAX_SIZE.
func envName(flagName string) string {
	return "KVDB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command
// line from the environment (envName; PORT for the HTTP port). A flag set
// either way counts as given (flag.FlagSet.Visit).
func parseFlags(fs *flag.FlagSet, args []string) error {
	// Flags may come after the positional DIR too: parse, set a positional
	// aside, parse the rest, until nothing is left.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if err := fs.Parse(append([]string{"--"}, positional...)); err != nil {
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	if err != nil {
		return err
	}
	if port, ok := os.LookupEnv("PORT"); ok && !given(fs, "addr") {
		if _, e := strconv.Atoi(port); e != nil {
			return fmt.Errorf("PORT=%q is not a port number", port)
		}
		if f := fs.Lookup("addr"); f != nil {
			_ = fs.Set("addr", hostOnly(f.Value.String())+":"+port)
		}
	}
	return nil
}

// given reports whether the flag was set, on the command line or by the
// environment.
func given(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// dataDir takes the one positional argument, if any, as the data
// directory dir; --dir names it too, so both must agree.
func dataDir(fs *flag.FlagSet, dir *string) error {
	switch fs.NArg() {
	case 0:
	case 1:
		if given(fs, "dir") && *dir != fs.Arg(0) {
			return fmt.Errorf("both --dir %q and DIR %q given", *dir, fs.Arg(0))
		}
		*dir = fs.Arg(0)
	default:
		return fmt.Errorf("unexpected arguments %q", fs.Args()[1:])
	}
	return nil
}

func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvdb %s\n\nFlags. Each can also come from the environment: %s.\n", synopsis, envExample(fs))
		fs.PrintDefaults()
	}
	return fs
}

// envExample shows how one of fs's flags is set by the environment, e.g.
// "--log-level as KVDB_LOG_LEVEL": a flag with a dash in its name, so the
// rule for dashes shows too.
func envExample(fs *flag.FlagSet) string {
	var name string
	fs.VisitAll(func(f *flag.Flag) {
		if name == "" || !strings.Contains(name, "-") && strings.Contains(f.Name, "-") {
			name = f.Name
		}
	})
	return fmt.Sprintf("--%s as\n%s, and so on (the command line wins)", name, envName(name))
}

const masterSynopsis = `master [flags] [DIR]

The master: the client API, and the key index in goleveldb under DIR
(default ./data/master). Volumes join it by gossip (kvdb volume --join).
SIGTERM or SIGINT lets requests finish, leaves gossip and closes the index.`

// masterOpts is what kvdb master's flags set.
type masterOpts struct {
	cfg      node.MasterConfig
	srv      serverFlags
	keysFile string
	s3       *s3Flags
}

// masterFlags declares kvdb master's flags, bound to a node.MasterConfig
// that starts as node.DefaultMasterConfig.
func masterFlags(stderr io.Writer) (*flag.FlagSet, *masterOpts) {
	fs := newFlagSet("master", masterSynopsis, stderr)
	o := &masterOpts{cfg: node.DefaultMasterConfig()}
	c := &o.cfg
	o.srv.register(fs, roleFields{&c.Name, &c.Addr, &c.Dir, &c.Gossip, &c.Pprof, &c.MaxConns, &c.MaxConnsPerIP}, "node `NAME` in gossip, stable across restarts")
	fs.Var(intFlag(&c.Replicas, 1, node.MaxReplicas), "replicas", fmt.Sprintf("how many distinct volumes hold each value, `N` from 1 to %d", node.MaxReplicas))
	fs.Var((*sizeFlag)(&c.MaxValueSize), "max-size", "largest value accepted (413 above it), a `SIZE` such as 5GiB or 500MB")
	fs.DurationVar(&c.RepairDelay, "repair-delay", c.RepairDelay, "how long a volume must be gone before the keys it held are copied elsewhere")
	fs.BoolVar(&c.Rebuild, "rebuild", c.Rebuild, "discard the key index and rebuild it from the volumes' indexes as they join")
	fs.DurationVar(&c.RebalanceDelay, "rebalance-delay", c.RebalanceDelay, "how long membership must stay unchanged before keys move to their new volumes")
	fs.Var((*rateFlag)(&c.RebalanceRate), "rebalance-rate", "bytes per second rebalancing and draining may copy, a `SIZE` such as 200MiB (0: no cap)")
	fs.Var(intFlag(&c.RebalanceConcurrency, 1, math.MaxInt32), "rebalance-concurrency", "how many keys rebalancing moves at once, `N` from 1")
	fs.StringVar(&o.keysFile, "api-keys-file", "", `client API keys, one "TOKEN rw" or "TOKEN ro" a line; when given, every request but /_kvdb/live and /_kvdb/ready needs "Authorization: Bearer TOKEN"`)
	fs.DurationVar(&c.RedirectTTL, "redirect-ttl", c.RedirectTTL, "with a secret: how long a signed read redirect stays valid (the transfer must start within it)")
	fs.DurationVar(&c.UploadMaxAge, "upload-max-age", c.UploadMaxAge, "S3 multipart uploads neither completed nor aborted after this long are aborted and their parts deleted")
	registerWriteRedirect(fs, c)
	registerRaft(fs, c)
	o.s3 = registerS3(fs, "")
	return fs, o
}

// registerRaft adds the flags of several masters: --bootstrap-expect,
// --raft and --remove-dead-master-after.
func registerRaft(fs *flag.FlagSet, c *node.MasterConfig) {
	fs.Var(intFlag(&c.BootstrapExpect, 1, 9), "bootstrap-expect", "how many masters form the first Raft configuration, `N` from 1 to 9: once N masters see each other by gossip they elect a leader (1: a single master); give every master of a new cluster the same N and --join")
	fs.StringVar(&c.Raft, "raft", c.Raft, "Raft transport bind address `HOST:PORT`, TCP, for the other masters (default: the HTTP host, HTTP port + 2000); advertised with the gossip host")
	fs.DurationVar(&c.RemoveDeadMasterAfter, "remove-dead-master-after", c.RemoveDeadMasterAfter, "how long a master must be gone before the leader removes it from the Raft configuration (never below --bootstrap-expect masters)")
}

// registerWriteRedirect adds --write-redirect and --redirected-write-timeout.
func registerWriteRedirect(fs *flag.FlagSet, c *node.MasterConfig) {
	fs.BoolFunc("write-redirect", "answer a write that carries Expect: 100-continue with 307 to a volume, which takes the body and coordinates the write, so the master carries no value bytes (default true; false: every write streams through the master, for clients that cannot reach the volumes)", func(v string) error {
		on, err := strconv.ParseBool(v)
		c.DisableWriteRedirect = !on
		return err
	})
	fs.DurationVar(&c.RedirectedWriteTimeout, "redirected-write-timeout", c.RedirectedWriteTimeout, "how long a redirected write may take from the 307 to its commit before what its volume wrote is deleted")
}

func runMaster(args []string, stderr io.Writer) error {
	fs, o := masterFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := o.cfg
	if err := dataDir(fs, &cfg.Dir); err != nil {
		return err
	}
	var err error
	if cfg.Secret, err = clusterSecret(o.srv.secret, o.srv.secretFile); err != nil {
		return err
	}
	if cfg.APIKeys, err = apiKeys(o.keysFile); err != nil {
		return err
	}
	if cfg.Logger, err = newLogger(stderr, o.srv.logFormat, o.srv.logLevel); err != nil {
		return err
	}
	o.srv.finishGossip(&cfg.Gossip)
	m, err := node.NewMaster(cfg)
	if err != nil {
		return err
	}
	stopS3, err := o.s3.start(func() (string, error) { return localMaster(m.LeaderAddr())() }, nil, cfg.Logger)
	if err != nil {
		_ = m.Close()
		return err
	}
	waitForSignal(cfg.Logger)
	stopS3()
	return m.Close()
}

const volumeSynopsis = `volume [flags] [DIR]

A volume server: holds values under DIR (default ./data/volume) and serves
them; joins the cluster by gossip (--join, the master's gossip address).
SIGTERM first drains it (its values move to other volumes, up to
--drain-timeout), then leaves; SIGINT leaves at once.`

// volumeOpts is what kvdb volume's flags set.
type volumeOpts struct {
	cfg          node.VolumeConfig
	srv          serverFlags
	drainTimeout time.Duration
	s3           *s3Flags
}

// volumeFlags declares kvdb volume's flags, bound to a node.VolumeConfig
// that starts as node.DefaultVolumeConfig.
func volumeFlags(stderr io.Writer) (*flag.FlagSet, *volumeOpts) {
	fs := newFlagSet("volume", volumeSynopsis, stderr)
	o := &volumeOpts{cfg: node.DefaultVolumeConfig(), drainTimeout: 5 * time.Minute}
	c := &o.cfg
	o.srv.register(fs, roleFields{&c.Name, &c.Addr, &c.Dir, &c.Gossip, &c.Pprof, &c.MaxConns, &c.MaxConnsPerIP}, "node `NAME`, stable across restarts (default: the one saved in DIR/NAME, else a new random one)")
	fs.Var((*sizeFlag)(&c.Capacity), "capacity", "most bytes this volume may hold, a `SIZE` such as 500GiB (0: the disk's size)")
	fs.Var((*sizeFlag)(&c.Reserve), "reserve", "disk space writes must leave free, a `SIZE` such as 1GiB")
	fs.IntVar(&c.Weight, "weight", c.Weight, "share of the keys relative to other volumes (0: one per TiB of capacity, at least 1)")
	fs.Var((*intervalFlag)(&c.ScrubInterval), "scrub-interval", "how often a scrub pass re-reads every value to find bit rot, a `DURATION` (0: never)")
	fs.Var((*rateFlag)(&c.ScrubRate), "scrub-rate", "bytes per second a scrub pass may read, a `SIZE` such as 50MiB (0: no cap)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", o.drainTimeout, "on SIGTERM, how long to wait for the master to move this volume's values away before leaving (0: leave at once)")
	o.s3 = registerS3(fs, "")
	return fs, o
}

func runVolume(args []string, stderr io.Writer) error {
	fs, o := volumeFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := o.cfg
	if err := dataDir(fs, &cfg.Dir); err != nil {
		return err
	}
	var err error
	if cfg.Secret, err = clusterSecret(o.srv.secret, o.srv.secretFile); err != nil {
		return err
	}
	if cfg.Logger, err = newLogger(stderr, o.srv.logFormat, o.srv.logLevel); err != nil {
		return err
	}
	cfg.Advertise = o.srv.advertise
	o.srv.finishGossip(&cfg.Gossip)
	if n, ok := volumeProcs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0), o.s3.addr != ""); ok {
		runtime.GOMAXPROCS(n)
	}
	v, err := node.NewVolume(cfg)
	if err != nil {
		return err
	}
	log := cfg.Logger
	stopS3, err := o.s3.start(volumeMaster(v), v, log)
	if err != nil {
		_ = v.Close()
		return err
	}
	defer stopS3()
	if sig := waitForSignal(log); sig == syscall.SIGTERM && o.drainTimeout > 0 {
		// A graceful leave: hand every value to other volumes first, so no
		// key drops below its replica count. A second signal cuts it short.
		ctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := v.Drain(ctx); err != nil {
			log.Warn("leaving before the drain finished", "err", err)
		}
		cancel()
	}
	return v.Close()
}

// volumeProcs is how many CPUs a volume process runs Go code on at once
// (its GOMAXPROCS), given the environment's GOMAXPROCS, the CPUs the
// process may use (Go's default GOMAXPROCS), and whether it serves S3.
// It reports false to leave Go's choice alone: when GOMAXPROCS is set,
// and for a volume with an S3 gateway, which hashes every byte it takes
// (MD5, and SHA-256 of signed payloads).
//
// A volume's work is mostly in the kernel: sendfile, writes, fdatasync,
// socket reads. A thread in a system call gives up its P, so the kernel
// work needs no P of its own, and the Go code between system calls is
// little. Every further P costs something, though: when a goroutine
// becomes runnable while a P is idle, Go wakes a thread to spin on that P
// looking for work, and with a request every few hundred microseconds
// that is most of the time. So a volume runs on half the CPUs, at least
// one. Measured on 2 CPUs with a master and three volumes as processes
// (README, "A volume on half the CPUs"): 1 KiB cycles took 0.23 ms of
// CPU per cycle on each volume instead of 0.30, and large reads and
// writes kept their speed. Setting it stops Go from following a later
// change of the container's CPU limit; a restart picks the new limit up.
func volumeProcs(env string, cpus int, s3 bool) (int, bool) {
	if s3 {
		return 0, false
	}
	return halfProcs(env, cpus)
}

// halfProcs is half of cpus, at least one, unless GOMAXPROCS is set in
// the environment (env): what a volume and bench run Go code on.
func halfProcs(env string, cpus int) (int, bool) {
	if env != "" {
		return 0, false
	}
	return max(1, cpus/2), true
}

const devSynopsis = `dev [flags]

One master and --volumes volumes in this process, on this machine: what
make run starts. Everything listens on 127.0.0.1 unless --addr names
another host: the master on --addr (PORT sets its port), the volumes on
the next ports of the same host, gossip on 127.0.0.1 (or the --addr host
when it is a specific address) at PORT+1000 and up. Without a secret and
API keys anyone who reaches these ports can read and write: keep the
default host, or set --secret-file and --api-keys-file.`

// devOpts is what kvdb dev's flags set.
type devOpts struct {
	master              node.MasterConfig // the master's; caps go to the volumes too
	addr, dir           string
	volumes, masters    int
	logFormat, logLevel string
	secret, secretFile  string
	keysFile            string
	s3                  *s3Flags
}

// devFlags declares kvdb dev's flags; the master's settings start as
// node.DefaultMasterConfig.
func devFlags(stderr io.Writer) (*flag.FlagSet, *devOpts) {
	fs := newFlagSet("dev", devSynopsis, stderr)
	o := &devOpts{master: node.DefaultMasterConfig(), addr: "127.0.0.1:3000", dir: "./data", volumes: 3, masters: 1}
	fs.StringVar(&o.addr, "addr", o.addr, "master HTTP address `HOST:PORT`; the volumes take the next ports on HOST (HOST empty or 0.0.0.0: every interface, reachable by anyone on the network)")
	fs.StringVar(&o.dir, "dir", o.dir, "data directory (master/, vol1/, ... below it)")
	fs.Var(intFlag(&o.volumes, 1, 100), "volumes", "how many volumes to start, `N` from 1 to 100")
	fs.Var(intFlag(&o.masters, 1, 9), "masters", "how many masters to start, `N` from 1 to 9: with more than one, they replicate the index by Raft, on PORT, PORT+1, ... (the volumes on the ports after them)")
	fs.Var(intFlag(&o.master.Replicas, 1, node.MaxReplicas), "replicas", fmt.Sprintf("how many distinct volumes hold each value, `N` from 1 to %d (at most --volumes)", node.MaxReplicas))
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	registerSecret(fs, &o.secret, &o.secretFile)
	fs.StringVar(&o.keysFile, "api-keys-file", "", `client API keys for the master, one "TOKEN rw" or "TOKEN ro" a line`)
	fs.DurationVar(&o.master.RedirectTTL, "redirect-ttl", o.master.RedirectTTL, "with a secret: how long a signed read redirect stays valid")
	fs.DurationVar(&o.master.UploadMaxAge, "upload-max-age", o.master.UploadMaxAge, "S3 multipart uploads neither completed nor aborted after this long are aborted and their parts deleted")
	registerConnCaps(fs, &o.master.MaxConns, &o.master.MaxConnsPerIP)
	registerWriteRedirect(fs, &o.master)
	o.s3 = registerS3(fs, "127.0.0.1:9000")
	return fs, o
}

// runDev starts one master and several volumes in this process, on this
// machine: what `make run` starts.
func runDev(args []string, stderr io.Writer) error {
	fs, o := devFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.master.Replicas > o.volumes {
		return fmt.Errorf("--replicas %d: more than the %d volumes", o.master.Replicas, o.volumes)
	}
	secret, err := clusterSecret(o.secret, o.secretFile)
	if err != nil {
		return err
	}
	keys, err := apiKeys(o.keysFile)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(o.addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", o.addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port+2000+o.masters+o.volumes > 65535 {
		return fmt.Errorf("--addr %q: want a port from 1 to %d", o.addr, 65535-2000-o.masters-o.volumes)
	}
	// Gossip never leaves this process's nodes: it stays on loopback unless
	// --addr names a specific address.
	gossipHost := "127.0.0.1"
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		gossipHost = host
	}
	at := func(h string, p int) string { return net.JoinHostPort(h, strconv.Itoa(p)) }
	var masters []*node.Master
	var vols []*node.Volume
	closeAll := func() {
		for _, v := range vols {
			_ = v.Close()
		}
		for _, m := range masters {
			_ = m.Close()
		}
	}
	var seeds []string
	for i := 0; i < o.masters; i++ {
		mc := o.master
		mc.Addr, mc.Dir, mc.Logger, mc.Secret, mc.APIKeys = at(host, port+i), filepath.Join(o.dir, "master"), log, secret, keys
		mc.Gossip.Bind, mc.Gossip.Profile = at(gossipHost, port+1000+i), node.ProfileLocal
		mc.Raft = at(gossipHost, port+2000+i)
		if o.masters > 1 {
			mc.Name, mc.Dir = fmt.Sprintf("master%d", i+1), filepath.Join(o.dir, fmt.Sprintf("master%d", i+1))
			mc.BootstrapExpect = o.masters
			mc.Gossip.Join = seeds
		}
		m, err := node.NewMaster(mc)
		if err != nil {
			closeAll()
			return err
		}
		masters = append(masters, m)
		seeds = append(seeds, m.GossipAddr())
	}
	for i := 1; i <= o.volumes; i++ {
		p := port + o.masters - 1 + i
		vc := node.DefaultVolumeConfig()
		vc.Name, vc.Addr, vc.Dir = fmt.Sprintf("vol%d", i), at(host, p), filepath.Join(o.dir, fmt.Sprintf("vol%d", i))
		vc.Logger, vc.Secret, vc.MaxConns, vc.MaxConnsPerIP = log, secret, o.master.MaxConns, o.master.MaxConnsPerIP
		vc.Gossip.Bind, vc.Gossip.Profile, vc.Gossip.Join = at(gossipHost, p+1000), node.ProfileLocal, seeds
		v, err := node.NewVolume(vc)
		if err != nil {
			closeAll()
			return err
		}
		vols = append(vols, v)
	}
	shown := host
	if ip := net.ParseIP(host); host == "" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		shown = "localhost"
	}
	// The gateway reads vol1's copies from disk.
	var local *node.Volume
	if len(vols) > 0 {
		local = vols[0]
	}
	stopS3, err := o.s3.start(devMasters(masters), local, log)
	if err != nil {
		closeAll()
		return err
	}
	log.Info("dev cluster running", "master", "http://"+at(shown, port), "masters", o.masters, "volumes", o.volumes, "replicas", o.master.Replicas, "dir", o.dir, "s3", o.s3.addr)
	waitForSignal(log)
	stopS3()
	closeAll()
	return nil
}

// waitForSignal blocks until SIGINT or SIGTERM and returns it; a third
// one exits at once.
func waitForSignal(log *slog.Logger) os.Signal {
	ch := make(chan os.Signal, 3)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	s := <-ch
	log.Info("stopping", "signal", s.String())
	go func() {
		<-ch
		<-ch
		os.Exit(1)
	}()
	return s
}
