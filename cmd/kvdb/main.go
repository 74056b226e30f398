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
	"os"
	"os/signal"
	"path/filepath"
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
  kvdb dev [flags]            one master and 3 volumes on this machine
  kvdb bench --url URL [...]  load generator for any server speaking the API
  kvdb put KEY [FILE|-]       store a value (from FILE or stdin)
  kvdb get KEY [-o FILE]      fetch a value (to stdout or FILE)
  kvdb rm KEY                 delete a value
  kvdb ls [PREFIX]            list keys
  kvdb stat KEY               size, ETag and Last-Modified of a value
  kvdb cluster                members and replication state
  kvdb drain VOLUME           move every value off a volume before removing it
  kvdb verify [--repair]      check every volume against the index (and fix it)
  kvdb help COMMAND           flags of a command

Every flag can also be set by the environment: --foo-bar as KVDB_FOO_BAR;
PORT sets the HTTP port of master and volume. The client commands take the
master from --url or KVDB_URL (default http://localhost:3000) and exit 0 on
success, 1 on error, 2 when the key does not exist.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		if len(rest) == 0 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		cmd, rest = rest[0], []string{"--help"}
	}
	var err error
	switch cmd {
	case "master":
		err = runMaster(rest, stderr)
	case "volume":
		err = runVolume(rest, stderr)
	case "dev":
		err = runDev(rest, stderr)
	case "bench":
		err = runBench(rest, stdout, stderr)
	case "put":
		err = runPut(rest, stderr)
	case "get":
		err = runGet(rest, stdout, stderr)
	case "rm":
		err = runRm(rest, stderr)
	case "ls":
		err = runLs(rest, stdout, stderr)
	case "stat":
		err = runStat(rest, stdout, stderr)
	case "cluster":
		err = runCluster(rest, stdout, stderr)
	case "drain":
		err = runDrain(rest, stdout, stderr)
	case "verify":
		err = runVerify(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "kvdb: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
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

// common holds the flags every server role takes.
type common struct {
	addr, advertise, gossip, gossipAdvertise, join, dir, cluster, profile, name string
	logFormat, logLevel                                                         string
	pprof                                                                       bool
	secret, secretFile                                                          string
}

func (c *common) register(fs *flag.FlagSet, defAddr string) {
	fs.StringVar(&c.addr, "addr", defAddr, "HTTP listen address HOST:PORT")
	fs.StringVar(&c.advertise, "advertise", "", "HOST[:PORT] other nodes and redirected clients use for this node (default: the listen host, or the first private IP)")
	fs.StringVar(&c.gossip, "gossip", "", "gossip (memberlist) bind address HOST:PORT, UDP and TCP (default: the HTTP host, HTTP port + 1000)")
	fs.StringVar(&c.gossipAdvertise, "gossip-advertise", "", "HOST[:PORT] other nodes use to gossip with this one (default: --advertise host)")
	fs.StringVar(&c.join, "join", "", "gossip address(es) of any existing member, comma-separated")
	fs.StringVar(&c.dir, "dir", "", "data directory (or give it as the last argument)")
	fs.StringVar(&c.cluster, "cluster", "kvdb", "cluster name; nodes of another cluster are ignored")
	fs.StringVar(&c.profile, "gossip-profile", node.ProfileLAN, "failure-detection timings: lan (~6 s to notice a death), local, test (~1 s, loopback only)")
	fs.StringVar(&c.name, "name", "", "node name, stable across restarts (volume default: saved in DIR/NAME, else random)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go profiles under /_kvdb/debug/pprof/")
	registerSecret(fs, &c.secret, &c.secretFile)
}

// registerSecret adds --secret and --secret-file to fs.
func registerSecret(fs *flag.FlagSet, secret, file *string) {
	fs.StringVar(secret, "secret", "", fmt.Sprintf("cluster secret, the same on every node, at least %d bytes: encrypts gossip and signs requests to volumes and read redirects (prefer KVDB_SECRET or --secret-file: command lines are visible to other users)", node.MinSecretLen))
	fs.StringVar(file, "secret-file", "", "file holding the cluster secret (surrounding whitespace ignored)")
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

func (c *common) gossipConfig() node.GossipConfig {
	g := node.GossipConfig{Bind: c.gossip, Cluster: c.cluster, Profile: c.profile, Advertise: c.gossipAdvertise}
	if g.Advertise == "" && c.advertise != "" {
		g.Advertise = hostOnly(c.advertise)
	}
	for _, a := range strings.Split(c.join, ",") {
		if a = strings.TrimSpace(a); a != "" {
			g.Join = append(g.Join, a)
		}
	}
	return g
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

// parseFlags parses args, then fills every flag not given on the command
// line from the environment (KVDB_FLAG_NAME; PORT for the HTTP port).
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
		env := "KVDB_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	if err != nil {
		return err
	}
	if port, ok := os.LookupEnv("PORT"); ok && !set["addr"] && os.Getenv("KVDB_ADDR") == "" {
		if _, e := strconv.Atoi(port); e != nil {
			return fmt.Errorf("PORT=%q is not a port number", port)
		}
		if f := fs.Lookup("addr"); f != nil {
			_ = f.Value.Set(hostOnly(f.Value.String()) + ":" + port)
		}
	}
	return nil
}

// dataDir takes --dir, else the one positional argument, else def.
func dataDir(fs *flag.FlagSet, dir, def string) (string, error) {
	switch fs.NArg() {
	case 0:
	case 1:
		if dir != "" && dir != fs.Arg(0) {
			return "", fmt.Errorf("both --dir %q and DIR %q given", dir, fs.Arg(0))
		}
		dir = fs.Arg(0)
	default:
		return "", fmt.Errorf("unexpected arguments %q", fs.Args()[1:])
	}
	if dir == "" {
		dir = def
	}
	return dir, nil
}

func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvdb %s\n\nFlags (each also from the environment as KVDB_NAME):\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func runMaster(args []string, stderr io.Writer) error {
	fs := newFlagSet("master", "master [flags] [DIR]", stderr)
	var c common
	c.register(fs, ":3000")
	replicas := fs.Int("replicas", 2, "how many distinct volumes hold each value")
	maxSize := sizeFlag(5 << 30)
	fs.Var(&maxSize, "max-size", "largest value accepted (413 above it), e.g. 5GiB")
	repairDelay := fs.Duration("repair-delay", time.Minute, "how long a volume must be gone before the keys it held are copied elsewhere")
	rebuild := fs.Bool("rebuild", false, "discard the key index and rebuild it from the volumes' indexes as they join")
	rebalanceDelay := fs.Duration("rebalance-delay", 30*time.Second, "how long membership must stay unchanged before keys move to their new volumes")
	rebalanceRate := sizeFlag(128 << 20)
	fs.Var(&rebalanceRate, "rebalance-rate", "bytes per second rebalancing and draining may copy, e.g. 200MiB (0: no cap)")
	rebalanceConc := fs.Int("rebalance-concurrency", 4, "how many keys rebalancing moves at once")
	keysFile := fs.String("api-keys-file", "", `client API keys, one "TOKEN rw" or "TOKEN ro" a line; when given, every request but /_kvdb/live and /_kvdb/ready needs "Authorization: Bearer TOKEN"`)
	redirectTTL := fs.Duration("redirect-ttl", node.DefaultRedirectTTL, "with a secret: how long a signed read redirect stays valid (the transfer must start within it)")
	s3f := registerS3(fs, "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := dataDir(fs, c.dir, "./data/master")
	if err != nil {
		return err
	}
	secret, err := clusterSecret(c.secret, c.secretFile)
	if err != nil {
		return err
	}
	keys, err := apiKeys(*keysFile)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, c.logFormat, c.logLevel)
	if err != nil {
		return err
	}
	m, err := node.NewMaster(node.MasterConfig{
		Name: c.name, Addr: c.addr, Dir: dir, Replicas: *replicas, MaxValueSize: int64(maxSize),
		Gossip: c.gossipConfig(), Rebuild: *rebuild, RepairDelay: *repairDelay, Pprof: c.pprof, Logger: log,
		RebalanceDelay: *rebalanceDelay, RebalanceRate: rateOrUnlimited(int64(rebalanceRate)), RebalanceConcurrency: *rebalanceConc,
		Secret: secret, APIKeys: keys, RedirectTTL: *redirectTTL,
	})
	if err != nil {
		return err
	}
	stopS3, err := s3f.start(localMaster(m.Addr()), log)
	if err != nil {
		_ = m.Close()
		return err
	}
	waitForSignal(log)
	stopS3()
	return m.Close()
}

func runVolume(args []string, stderr io.Writer) error {
	fs := newFlagSet("volume", "volume [flags] [DIR]", stderr)
	var c common
	c.register(fs, ":3001")
	capacity := sizeFlag(0)
	fs.Var(&capacity, "capacity", "most bytes this volume may hold, e.g. 500GiB (0: the disk's size)")
	reserve := sizeFlag(0)
	fs.Var(&reserve, "reserve", "disk space writes must leave free, e.g. 1GiB")
	weight := fs.Int("weight", 0, "share of the keys relative to other volumes (0: one per TiB of capacity, at least 1)")
	scrubInterval := fs.Duration("scrub-interval", 24*time.Hour, "how often a scrub pass re-reads every value to find bit rot (0: never)")
	scrubRate := sizeFlag(50 << 20)
	fs.Var(&scrubRate, "scrub-rate", "bytes per second a scrub pass may read, e.g. 50MiB (0: no cap)")
	drainTimeout := fs.Duration("drain-timeout", 5*time.Minute, "on SIGTERM, how long to wait for the master to move this volume's values away before leaving (0: leave at once)")
	s3f := registerS3(fs, "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := dataDir(fs, c.dir, "./data/volume")
	if err != nil {
		return err
	}
	secret, err := clusterSecret(c.secret, c.secretFile)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, c.logFormat, c.logLevel)
	if err != nil {
		return err
	}
	v, err := node.NewVolume(node.VolumeConfig{
		Name: c.name, Addr: c.addr, Advertise: c.advertise, Dir: dir, Gossip: c.gossipConfig(),
		Capacity: int64(capacity), Reserve: int64(reserve), Weight: *weight, Pprof: c.pprof, Logger: log,
		Secret: secret, ScrubInterval: intervalOrNever(*scrubInterval), ScrubRate: rateOrUnlimited(int64(scrubRate)),
	})
	if err != nil {
		return err
	}
	stopS3, err := s3f.start(volumeMaster(v), log)
	if err != nil {
		_ = v.Close()
		return err
	}
	defer stopS3()
	if sig := waitForSignal(log); sig == syscall.SIGTERM && *drainTimeout > 0 {
		// A graceful leave: hand every value to other volumes first, so no
		// key drops below its replica count. A second signal cuts it short.
		ctx, cancel := context.WithTimeout(context.Background(), *drainTimeout)
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

// runDev starts one master and several volumes in this process, on this
// machine: what `make run` starts.
func runDev(args []string, stderr io.Writer) error {
	fs := newFlagSet("dev", "dev [flags]", stderr)
	addr := fs.String("addr", ":3000", "master HTTP address; volumes take the next ports")
	dir := fs.String("dir", "./data", "data directory (master/ and vol1/... below it)")
	volumes := fs.Int("volumes", 3, "how many volumes to start")
	replicas := fs.Int("replicas", 2, "how many distinct volumes hold each value")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level")
	var secretFlag, secretFile string
	registerSecret(fs, &secretFlag, &secretFile)
	keysFile := fs.String("api-keys-file", "", `client API keys for the master, one "TOKEN rw" or "TOKEN ro" a line`)
	redirectTTL := fs.Duration("redirect-ttl", node.DefaultRedirectTTL, "with a secret: how long a signed read redirect stays valid")
	s3f := registerS3(fs, "127.0.0.1:9000")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	secret, err := clusterSecret(secretFlag, secretFile)
	if err != nil {
		return err
	}
	keys, err := apiKeys(*keysFile)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	host := hostOnly(*addr)
	port, err := strconv.Atoi((*addr)[len(host)+1:])
	if err != nil {
		return fmt.Errorf("--addr %q: %w", *addr, err)
	}
	loop := "127.0.0.1"
	m, err := node.NewMaster(node.MasterConfig{
		Addr: *addr, Dir: filepath.Join(*dir, "master"), Replicas: *replicas, Logger: log,
		Secret: secret, APIKeys: keys, RedirectTTL: *redirectTTL,
		Gossip: node.GossipConfig{Bind: fmt.Sprintf("%s:%d", loop, port+1000), Profile: node.ProfileLocal},
	})
	if err != nil {
		return err
	}
	var vols []*node.Volume
	closeAll := func() {
		for _, v := range vols {
			_ = v.Close()
		}
		_ = m.Close()
	}
	for i := 1; i <= *volumes; i++ {
		v, err := node.NewVolume(node.VolumeConfig{
			Name: fmt.Sprintf("vol%d", i), Addr: fmt.Sprintf("%s:%d", loop, port+i),
			Dir: filepath.Join(*dir, fmt.Sprintf("vol%d", i)), Logger: log, Secret: secret,
			Gossip: node.GossipConfig{
				Bind: fmt.Sprintf("%s:%d", loop, port+1000+i), Profile: node.ProfileLocal,
				Join: []string{m.GossipAddr()},
			},
		})
		if err != nil {
			closeAll()
			return err
		}
		vols = append(vols, v)
	}
	stopS3, err := s3f.start(localMaster(m.Addr()), log)
	if err != nil {
		closeAll()
		return err
	}
	log.Info("dev cluster running", "master", "http://localhost"+(*addr)[len(host):], "volumes", *volumes, "replicas", *replicas, "dir", *dir)
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

// intervalOrNever maps a flag's 0 (never) to the config's negative.
func intervalOrNever(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// rateOrUnlimited maps a flag's 0 (no cap) to the config's negative.
func rateOrUnlimited(r int64) int64 {
	if r == 0 {
		return -1
	}
	return r
}
