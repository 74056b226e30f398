package node

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kvdb/kvdb/ring"
)

// Unlimited, as a rate (MasterConfig.RebalanceRate, VolumeConfig.ScrubRate),
// means no cap. Any negative rate means the same.
const Unlimited int64 = -1

// Never, as an interval (VolumeConfig.ScrubInterval), turns the periodic job
// off. Any negative interval means the same.
const Never time.Duration = -1

// MasterConfig configures the master.
//
// Start from DefaultMasterConfig, which fills every field with its default,
// and change what differs. A field left zero in a config built from scratch
// takes the same default when the master starts (so MasterConfig{Dir: d} is
// a working config, as in tests), except where a field says otherwise. "No
// cap" and "never" are the explicit values Unlimited and Never, not zero.
type MasterConfig struct {
	// Name is the master's name in gossip. Default "master".
	Name string
	// Addr is the HTTP listen address for clients. Default ":3000".
	Addr string
	// Dir holds the key index. DefaultMasterConfig sets "./data/master"
	// (what kvdb master uses without DIR); a config built from scratch must
	// name one.
	Dir string
	// Replicas is how many distinct volumes hold each value, 1 to 16.
	// Default 2 (zero in a config built from scratch means 2).
	Replicas int
	// MaxValueSize is the largest value accepted, in bytes (413 above it).
	// Default 5 GiB.
	MaxValueSize int64
	// Gossip says how to join the cluster; volumes join the master. Default
	// DefaultGossipConfig().
	Gossip GossipConfig
	// Secret is the cluster secret, the same on every node, at least
	// MinSecretLen bytes. When set, gossip is encrypted and authenticated
	// with a key derived from it (leave Gossip.Secret empty), requests to
	// volumes are signed, and read redirects carry a signature that expires
	// after RedirectTTL. Empty: none of this (see security.go).
	Secret []byte
	// RedirectTTL is how long a signed read redirect stays valid: the
	// transfer must start within it, not finish. Default DefaultRedirectTTL.
	RedirectTTL time.Duration
	// APIKeys, when not empty, are the only credentials the client API
	// accepts (see apikeys.go); /_kvdb/live and /_kvdb/ready stay open.
	APIKeys []APIKey
	// Ring tunes placement. Its Partitions must never change for a cluster.
	// Default ring.DefaultConfig().
	Ring ring.Config
	// Rebuild discards the index at start and rebuilds it from the volumes'
	// own indexes as they join (it also happens by itself when the index
	// is empty).
	Rebuild bool
	// IdleTimeout cuts a connection (client or volume) that moves no byte
	// for this long. Default 60 s.
	IdleTimeout time.Duration
	// GCInterval is how often queued deletions of old versions are retried.
	// Default 5 s.
	GCInterval time.Duration
	// RepairDelay is how long a volume must be gone (dead or left) before
	// the keys it held are copied to other volumes. Long enough to ride out
	// a restart; short enough not to stay one failure from loss for long.
	// Default 1 minute.
	RepairDelay time.Duration
	// RepairInterval is how often the index is scanned for keys below the
	// replica count. Default 10 s.
	RepairInterval time.Duration
	// RebalanceDelay is how long the set of live volumes must stay unchanged
	// before keys are moved to the placement the ring now gives them, so a
	// flapping volume does not set off a storm of copies. Default 30 s.
	RebalanceDelay time.Duration
	// RebalanceRate caps the bytes per second that rebalancing and draining
	// copy between volumes (repair of lost replicas is not capped).
	// Default 128 MiB/s; Unlimited means no cap.
	RebalanceRate int64
	// RebalanceConcurrency is how many keys are moved at once. Default 4.
	RebalanceConcurrency int
	// MoveGrace is how long a copy moved off a volume stays there (and
	// readable) after the index switched to its new place, for clients
	// redirected to it just before (a download already under way is not
	// cut by the deletion: the open file outlives its name). Default 5 s.
	MoveGrace time.Duration
	// UploadMaxAge is how long an S3 multipart upload may stay neither
	// completed nor aborted: older ones are aborted and their parts
	// deleted (multipart.go). Default 24 h.
	UploadMaxAge time.Duration
	// ProbeInterval is how often the master asks each volume whether it
	// answers; one that fails twice in a row is avoided for reads and new
	// writes until it answers again (gossip alone takes seconds to declare
	// a crashed volume dead). Default 250 ms.
	ProbeInterval time.Duration
	// CacheEntries bounds the in-memory cache of index records that serves
	// hot keys' redirects without touching goleveldb. Default 65536 (a few
	// MB).
	CacheEntries int
	// DisableWriteRedirect keeps every write on the proxy path: the body
	// streams through the master even when the client sent Expect:
	// 100-continue (for deployments where clients cannot reach the
	// volumes). By default such a write is answered 307 to a volume, which
	// takes the body and coordinates the write (redirect_write.go).
	DisableWriteRedirect bool
	// RedirectedWriteTimeout is how long a redirected write may take from
	// its 307 to its commit before the master gives up on it and deletes
	// what its coordinator wrote. Default 1 hour.
	RedirectedWriteTimeout time.Duration
	// MaxConns caps the client connections open at once, and
	// MaxConnsPerIP those from one client address; 0 means no cap (a
	// config built from scratch has none). A client that opens connections
	// without end cannot then take every file descriptor. A connection over
	// MaxConns is answered 503 and closed, one over MaxConnsPerIP 429.
	// DefaultMasterConfig sets MaxConns to DefaultMaxConns and leaves
	// MaxConnsPerIP 0: clients behind one proxy or NAT share an address.
	MaxConns      int
	MaxConnsPerIP int
	// BootstrapExpect is how many masters form the first Raft
	// configuration: once that many see each other by gossip, they elect a
	// leader. Default 1, a single master (a Raft of one). Masters that
	// join later are added by the leader.
	BootstrapExpect int
	// Raft is the Raft transport's bind address (the advertised host is
	// the gossip one). Empty: the HTTP port plus 2000 (":5000" for
	// ":3000"); port 0 picks one.
	Raft string
	// RemoveDeadMasterAfter is how long a master must be gone (gossip sees
	// it dead or left) before the leader removes it from the Raft
	// configuration; never below BootstrapExpect voters. Default 10
	// minutes.
	RemoveDeadMasterAfter time.Duration
	// Pprof serves Go's profiles under /_kvdb/debug/pprof/. Off by
	// default: profiles reveal internals and cost CPU while taken.
	Pprof bool
	// Logger receives the master's logs. Default: discard.
	Logger *slog.Logger

	// now is the wall clock (time.Now); tests step it back.
	now func() time.Time
}

// clock is the wall clock the catalog's versions come from.
func (c MasterConfig) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// Validate reports whether the configuration can be used.
func (c MasterConfig) Validate() error {
	if c.Dir == "" {
		return errors.New("master: no data directory")
	}
	if c.Name != "" && !nameRE.MatchString(c.Name) {
		return fmt.Errorf("master: name %q: want 1-63 of [A-Za-z0-9._-]", c.Name)
	}
	// Zero is a config built from scratch, which takes the default.
	if c.Replicas < 0 || c.Replicas > MaxReplicas {
		return fmt.Errorf("master: replicas %d: want 1 to %d", c.Replicas, MaxReplicas)
	}
	if c.MaxValueSize < 0 {
		return errors.New("master: max value size must not be negative")
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 9 {
		return fmt.Errorf("master: bootstrap-expect %d: want 1 to 9 masters", c.BootstrapExpect)
	}
	if c.MaxConns < 0 || c.MaxConnsPerIP < 0 {
		return errors.New("master: connection caps must not be negative (0: no cap)")
	}
	if err := c.Ring.Validate(); err != nil {
		return fmt.Errorf("master: %w", err)
	}
	if err := validateSecret("master", c.Secret, c.Gossip.Secret); err != nil {
		return err
	}
	if err := validateAPIKeys(c.APIKeys); err != nil {
		return fmt.Errorf("master: %w", err)
	}
	return c.Gossip.Validate()
}

// MaxReplicas is the largest MasterConfig.Replicas.
const MaxReplicas = 16

// DefaultMaxConns is the connection cap of DefaultMasterConfig and
// DefaultVolumeConfig: far above what a blob store's clients keep open
// (each connection moves large values, so a few hundred saturate a
// disk), and far below the file descriptors a node may open.
const DefaultMaxConns = 10000

// DefaultMasterConfig returns the master's defaults, every field filled:
// what kvdb master runs with when no flag says otherwise.
func DefaultMasterConfig() MasterConfig {
	return MasterConfig{
		Name:                   "master",
		Addr:                   ":3000",
		Dir:                    "./data/master",
		Replicas:               2,
		MaxValueSize:           5 << 30,
		Gossip:                 DefaultGossipConfig(),
		RedirectTTL:            DefaultRedirectTTL,
		Ring:                   ring.DefaultConfig(),
		IdleTimeout:            60 * time.Second,
		GCInterval:             5 * time.Second,
		RepairDelay:            time.Minute,
		RepairInterval:         10 * time.Second,
		RebalanceDelay:         30 * time.Second,
		RebalanceRate:          128 << 20,
		RebalanceConcurrency:   4,
		MoveGrace:              5 * time.Second,
		UploadMaxAge:           24 * time.Hour,
		ProbeInterval:          250 * time.Millisecond,
		CacheEntries:           1 << 16,
		RedirectedWriteTimeout: time.Hour,
		MaxConns:               DefaultMaxConns,
		MaxConnsPerIP:          0,
		BootstrapExpect:        1,
		RemoveDeadMasterAfter:  10 * time.Minute,
		Logger:                 slog.New(slog.DiscardHandler),
	}
}

// withDefaults fills the fields a config built from scratch left zero
// with DefaultMasterConfig's values (Dir and the connection caps stay as
// they are), then derives the gossip bind address and key.
func (c MasterConfig) withDefaults() MasterConfig {
	d := DefaultMasterConfig()
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.Replicas == 0 {
		c.Replicas = d.Replicas
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = d.MaxValueSize
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.GCInterval <= 0 {
		c.GCInterval = d.GCInterval
	}
	if c.UploadMaxAge <= 0 {
		c.UploadMaxAge = d.UploadMaxAge
	}
	if c.RepairDelay <= 0 {
		c.RepairDelay = d.RepairDelay
	}
	if c.RepairInterval <= 0 {
		c.RepairInterval = d.RepairInterval
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = d.ProbeInterval
	}
	if c.RebalanceDelay <= 0 {
		c.RebalanceDelay = d.RebalanceDelay
	}
	if c.RebalanceRate == 0 {
		c.RebalanceRate = d.RebalanceRate
	}
	if c.RebalanceConcurrency <= 0 {
		c.RebalanceConcurrency = d.RebalanceConcurrency
	}
	if c.MoveGrace <= 0 {
		c.MoveGrace = d.MoveGrace
	}
	if c.RedirectedWriteTimeout <= 0 {
		c.RedirectedWriteTimeout = time.Hour
	}
	if c.CacheEntries <= 0 {
		c.CacheEntries = d.CacheEntries
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.BootstrapExpect == 0 {
		c.BootstrapExpect = 1
	}
	if c.RemoveDeadMasterAfter <= 0 {
		c.RemoveDeadMasterAfter = d.RemoveDeadMasterAfter
	}
	if c.Gossip.Bind == "" {
		c.Gossip.Bind = defaultGossipBind(c.Addr)
	}
	if c.RedirectTTL <= 0 {
		c.RedirectTTL = d.RedirectTTL
	}
	if len(c.Secret) > 0 {
		c.Gossip.Secret = gossipKey(c.Secret)
	}
	return c
}

// raftBind is the Raft transport's bind address: Raft, else the HTTP
// port plus 2000.
func (c MasterConfig) raftBind() string {
	if c.Raft != "" {
		return c.Raft
	}
	return defaultPortPlus(c.Addr, 2000)
}

func (c MasterConfig) httpLimits() httpLimits {
	return httpLimits{MaxConns: c.MaxConns, MaxConnsPerIP: c.MaxConnsPerIP}
}
