package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
	"github.com/kvdb/kvdb/ring"
)

// MasterConfig configures the master.
type MasterConfig struct {
	// Name is the master's name in gossip. Default "master".
	Name string
	// Addr is the HTTP listen address for clients. Default ":3000".
	Addr string
	// Dir holds the key index. Default "./data/master" is set by cmd.
	Dir string
	// Replicas is how many distinct volumes hold each value. Default 2.
	Replicas int
	// MaxValueSize is the largest value accepted, in bytes (413 above it).
	// Default 5 GiB.
	MaxValueSize int64
	// Gossip says how to join the cluster; volumes join the master.
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
	// copy between volumes (repair of lost replicas is not capped). 0 means
	// the default, 128 MiB/s; negative means no cap.
	RebalanceRate int64
	// RebalanceConcurrency is how many keys are moved at once. Default 4.
	RebalanceConcurrency int
	// MoveGrace is how long a copy moved off a volume stays there (and
	// readable) after the index switched to its new place, for clients
	// redirected to it just before (a download already under way is not
	// cut by the deletion: the open file outlives its name). Default 5 s.
	MoveGrace time.Duration
	// ProbeInterval is how often the master asks each volume whether it
	// answers; one that fails twice in a row is avoided for reads and new
	// writes until it answers again (gossip alone takes seconds to declare
	// a crashed volume dead). Default 250 ms.
	ProbeInterval time.Duration
	// CacheEntries bounds the in-memory cache of index records that serves
	// hot keys' redirects without touching goleveldb. Default 65536 (a few
	// MB).
	CacheEntries int
	// Pprof serves Go's profiles under /_kvdb/debug/pprof/. Off by
	// default: profiles reveal internals and cost CPU while taken.
	Pprof bool
	// Logger receives the master's logs. Default: discard.
	Logger *slog.Logger
}

// Validate reports whether the configuration can be used.
func (c MasterConfig) Validate() error {
	if c.Dir == "" {
		return errors.New("master: no data directory")
	}
	if c.Name != "" && !nameRE.MatchString(c.Name) {
		return fmt.Errorf("master: name %q: want 1-63 of [A-Za-z0-9._-]", c.Name)
	}
	if c.Replicas < 0 || c.Replicas > 16 {
		return fmt.Errorf("master: replicas %d: want 1 to 16", c.Replicas)
	}
	if c.MaxValueSize < 0 {
		return errors.New("master: max value size must not be negative")
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

func (c MasterConfig) withDefaults() MasterConfig {
	if c.Name == "" {
		c.Name = "master"
	}
	if c.Addr == "" {
		c.Addr = ":3000"
	}
	if c.Replicas == 0 {
		c.Replicas = 2
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = 5 << 30
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.GCInterval <= 0 {
		c.GCInterval = 5 * time.Second
	}
	if c.RepairDelay <= 0 {
		c.RepairDelay = time.Minute
	}
	if c.RepairInterval <= 0 {
		c.RepairInterval = 10 * time.Second
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = 250 * time.Millisecond
	}
	if c.RebalanceDelay <= 0 {
		c.RebalanceDelay = 30 * time.Second
	}
	if c.RebalanceRate == 0 {
		c.RebalanceRate = 128 << 20
	}
	if c.RebalanceConcurrency <= 0 {
		c.RebalanceConcurrency = 4
	}
	if c.MoveGrace <= 0 {
		c.MoveGrace = 5 * time.Second
	}
	if c.CacheEntries <= 0 {
		c.CacheEntries = 1 << 16
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Gossip.Bind == "" {
		c.Gossip.Bind = defaultGossipBind(c.Addr)
	}
	if c.RedirectTTL <= 0 {
		c.RedirectTTL = DefaultRedirectTTL
	}
	if len(c.Secret) > 0 {
		c.Gossip.Secret = gossipKey(c.Secret)
	}
	return c
}

// clusterView is one immutable snapshot of the live volumes and the ring
// over them. Requests read it without locks; membership changes replace it.
type clusterView struct {
	// ring places new values: the live volumes that are not draining.
	ring *ring.Ring
	vols map[string]Member // live volumes by name, draining ones included
	// draining lists the live volumes whose values are being moved off.
	draining []string
	// changed is when the set of live volumes last changed; moves wait for
	// it to settle.
	changed time.Time
}

// Master answers clients: it keeps the key index and places values on
// volumes. It holds no value bytes beyond a few streaming buffers.
type Master struct {
	cfg    MasterConfig
	log    *slog.Logger
	ix     *index
	cache  *recordCache
	http   *httpServer
	gossip *membership
	client *fasthttp.Client
	sec    *signer  // nil without a cluster secret
	keys   []apiKey // empty: the client API is open
	// metrics counts requests; scrapes add the cluster's state (metrics.go).
	metrics *nodeMetrics
	view    atomic.Pointer[clusterView]
	// unreachable holds the volumes that failed their last probes.
	unreachable atomic.Pointer[map[string]bool]
	// loads holds each live volume's load, from probes.
	loads atomic.Pointer[map[string]*volumeLoad]

	locks       [256]sync.Mutex
	lastVersion atomic.Uint64

	mergeMu sync.Mutex
	merging map[string]bool // volumes whose index is being merged
	merged  map[string]bool // volumes known to be merged (cache of the index)

	repairMu sync.Mutex
	repair   repairState
	// repairedInPass counts keys the running placement pass brought back
	// to the replica count.
	repairedInPass atomic.Int64
	moves          *rateLimiter

	// grace holds garbage entries (by garbageKey) that must not be deleted
	// before the given time: copies moved away from a volume stay readable
	// for a while for clients that were just redirected to them.
	graceMu sync.Mutex
	grace   map[string]time.Time

	// drains holds the volumes an operator asked to drain (persisted in
	// the index); drainSince is when, for the drain endpoint's Done.
	drains     atomic.Pointer[map[string]bool]
	drainMu    sync.Mutex
	drainSince map[string]time.Time
	// viewMu serializes rebuilds of the view.
	viewMu sync.Mutex
	// verifier runs verify and handles volumes' lost-copy reports.
	verifier verifyState

	gcKick     chan struct{}
	repairKick chan struct{}
	stop       chan struct{}
	wg         sync.WaitGroup
	closeOnce  sync.Once
}

// NewMaster opens the index, starts serving HTTP and starts gossip.
func NewMaster(cfg MasterConfig) (*Master, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Master{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.Name),
		client:  newClient(cfg.IdleTimeout),
		sec:     newSigner(cfg.Secret),
		keys:    newAPIKeys(cfg.APIKeys),
		merging: make(map[string]bool),
		merged:  make(map[string]bool),
		cache:   newRecordCache(cfg.CacheEntries),
		gcKick:  make(chan struct{}, 1),

		repairKick: make(chan struct{}, 1),
		stop:       make(chan struct{}),
		grace:      make(map[string]time.Time),

		drainSince: make(map[string]time.Time),
	}
	m.moves = newRateLimiter(cfg.RebalanceRate, m.stop)
	empty, err := ring.New(cfg.Ring, nil)
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	m.view.Store(&clusterView{ring: empty, vols: map[string]Member{}, changed: time.Now()})
	ix, recovered, err := openIndex(filepath.Join(cfg.Dir, "index"), cfg.Rebuild)
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	if recovered {
		m.log.Warn("index was corrupt and has been recovered; merging every volume's index again")
	}
	m.ix = ix
	drains, err := ix.drains()
	if err != nil {
		ix.close()
		return nil, fmt.Errorf("master: %w", err)
	}
	m.drains.Store(&drains)
	m.metrics = newNodeMetrics(RoleMaster)
	m.http, err = startHTTP(cfg.Addr, m.metrics.instrument(m.handle), m.expect, cfg.IdleTimeout, m.log)
	if err != nil {
		ix.close()
		return nil, fmt.Errorf("master: listen %s: %w", cfg.Addr, err)
	}
	ghost, _, _ := net.SplitHostPort(cfg.Gossip.Bind)
	host, err := advertiseHost(cfg.Gossip.Advertise, ghost)
	if err != nil {
		m.http.kill()
		ix.close()
		return nil, err
	}
	_, port, _ := net.SplitHostPort(m.http.addr())
	m.gossip, err = startMembership(cfg.Name, cfg.Gossip, nodeMeta{Role: RoleMaster, HTTP: net.JoinHostPort(host, port)}, m.log)
	if err != nil {
		m.http.kill()
		ix.close()
		return nil, fmt.Errorf("master: %w", err)
	}
	m.repair.missingSince = map[string]time.Time{}
	m.unreachable.Store(&map[string]bool{})
	m.loads.Store(&map[string]*volumeLoad{})
	m.wg.Add(4)
	go m.probeLoop()
	go m.watchMembers()
	go m.gcLoop()
	go m.repairLoop()
	m.log.Info("master started", "http", m.http.addr(), "gossip", m.gossip.addr(), "dir", cfg.Dir, "replicas", cfg.Replicas)
	return m, nil
}

// Addr is the address the client API listens on.
func (m *Master) Addr() string { return m.http.addr() }

// GossipAddr is the address volumes join through.
func (m *Master) GossipAddr() string { return m.gossip.addr() }

// LiveVolumes is the number of volumes in the current ring.
func (m *Master) LiveVolumes() int { return m.view.Load().ring.Len() }

// Close stops gracefully: running requests finish, the cluster is told,
// the index is closed. Safe to call more than once.
func (m *Master) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.stop)
		m.http.shutdown(10 * time.Second)
		m.gossip.leave(2 * time.Second)
		m.wg.Wait()
		err = m.ix.close()
		m.log.Info("master stopped")
	})
	return err
}

// Kill stops as a crash would (no goodbye, connections cut). The index is
// closed so that the directory can be opened again.
func (m *Master) Kill() {
	m.closeOnce.Do(func() {
		close(m.stop)
		m.gossip.shutdown()
		m.http.kill()
		m.wg.Wait()
		_ = m.ix.close()
	})
}

// watchMembers rebuilds the view after every membership change and starts
// merging the index of volumes the master has not seen before.
func (m *Master) watchMembers() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.gossip.changed:
		}
		m.refreshView()
	}
}

func (m *Master) refreshView() {
	m.viewMu.Lock()
	defer m.viewMu.Unlock()
	vols := make(map[string]Member)
	for _, mem := range m.gossip.snapshot() {
		if mem.Role == RoleVolume {
			vols[mem.Name] = mem
		}
	}
	drains := m.drainSet()
	members := make([]ring.Member, 0, len(vols))
	var draining []string
	for name, mem := range vols {
		if mem.Draining || drains[name] {
			draining = append(draining, name)
			continue
		}
		members = append(members, ring.Member{Name: name, Weight: max(mem.Weight, 1)})
	}
	sort.Strings(draining)
	old := m.view.Load()
	r := old.ring
	if !sameMembers(r, members) {
		nr, err := ring.New(m.cfg.Ring, members)
		if err != nil {
			m.log.Error("ring rebuild failed; keeping the previous ring", "err", err)
		} else {
			r = nr
			m.log.Info("ring rebuilt", "volumes", nr.Len(), "draining", len(draining))
			// Look at placement now, and again once membership may have
			// settled.
			m.kickRepair()
			time.AfterFunc(m.cfg.RebalanceDelay+10*time.Millisecond, m.kickRepair)
		}
	}
	changed := old.changed
	if len(vols) != len(old.vols) {
		changed = time.Now()
	} else {
		for name := range vols {
			if _, ok := old.vols[name]; !ok {
				changed = time.Now()
				break
			}
		}
	}
	m.view.Store(&clusterView{ring: r, vols: vols, draining: draining, changed: changed})
	for _, mem := range vols {
		m.maybeMerge(mem)
	}
	m.kickGC()
}

// sameMembers reports whether r is built over exactly members (names and
// weights).
func sameMembers(r *ring.Ring, members []ring.Member) bool {
	have := r.Members()
	if len(have) != len(members) {
		return false
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	for i := range have {
		if have[i].Name != members[i].Name || max(have[i].Weight, 1) != max(members[i].Weight, 1) {
			return false
		}
	}
	return true
}

func (m *Master) lockKey(key []byte) *sync.Mutex {
	mu := &m.locks[xxhash.Sum64(key)%uint64(len(m.locks))]
	mu.Lock()
	return mu
}

// nextVersion returns a version larger than any handed out before: the wall
// clock in nanoseconds, bumped when two writes land in one nanosecond. Newer
// writes get larger versions, which is what lets a rebuild pick the newest
// copy of a key.
func (m *Master) nextVersion() uint64 {
	for {
		last := m.lastVersion.Load()
		v := uint64(time.Now().UnixNano())
		if v <= last {
			v = last + 1
		}
		if m.lastVersion.CompareAndSwap(last, v) {
			return v
		}
	}
}

func (m *Master) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.URI().PathOriginal()
	// Volumes report lost copies without an API key; see verify.go.
	if m.serveLost(ctx, path) {
		return
	}
	if !m.authorize(ctx, path) {
		return
	}
	if rest, ok := bytes.CutPrefix(path, []byte("/"+ReservedPrefix)); ok {
		if vol, ok := bytes.CutPrefix(rest, []byte("drain/")); ok {
			m.handleDrain(ctx, string(vol))
			return
		}
		if string(rest) == "verify" {
			m.handleVerify(ctx)
			return
		}
		if (ctx.IsGet() || ctx.IsHead()) && m.handleAdmin(ctx, rest) {
			return
		}
	}
	if ctx.IsGet() && ctx.QueryArgs().Has("list") {
		m.handleList(ctx, path)
		return
	}
	switch {
	case ctx.IsGet(), ctx.IsHead(), ctx.IsPut(), ctx.IsPost(), ctx.IsDelete():
	default:
		ctx.Response.Header.Set("Allow", "GET, HEAD, PUT, POST, DELETE")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed")
		return
	}
	if ctx.IsGet() || ctx.IsHead() {
		m.handleRead(ctx, path)
		return
	}
	key, err := ParseKey(nil, path)
	if err != nil {
		replyError(ctx, err)
		return
	}
	switch {
	case ctx.IsDelete():
		m.handleDelete(ctx, key)
	default:
		m.handleWrite(ctx, key)
	}
}

// lookup returns key's current record, from the cache when it can. The
// record is shared: callers must not modify it.
func (m *Master) lookup(key []byte) (*Record, bool, error) {
	if rec, ok := m.cache.get(key); ok {
		return rec, true, nil
	}
	mu := m.lockKey(key)
	defer mu.Unlock()
	if rec, ok := m.cache.get(key); ok {
		return rec, true, nil
	}
	var rec Record
	found, err := m.ix.get(key, &rec)
	if err != nil || !found {
		return nil, false, err
	}
	m.cache.set(key, &rec)
	return &rec, true, nil
}

// handleRead answers GET and HEAD. The key stays in a stack buffer: the
// redirect of a cached key allocates nothing.
func (m *Master) handleRead(ctx *fasthttp.RequestCtx, path []byte) {
	var kb [256]byte
	key, err := ParseKey(kb[:0], path)
	if err != nil {
		replyError(ctx, err)
		return
	}
	rec, found, err := m.lookup(key)
	switch {
	case err != nil:
		replyError(ctx, err)
	case !found:
		replyText(ctx, fasthttp.StatusNotFound, "key not found")
	case ctx.IsGet():
		m.redirect(ctx, key, rec)
	default:
		headRecord(ctx, rec)
	}
}

// redirect answers 302 to a live volume holding rec's version of key.
func (m *Master) redirect(ctx *fasthttp.RequestCtx, key []byte, rec *Record) {
	view := m.view.Load()
	bad := *m.unreachable.Load()
	loads := *m.loads.Load()
	// The least loaded live replica that answers probes (ties go to the
	// first in the record, the ring's owner); failing that, any live one.
	best, bestLoad := -1, int64(0)
	for i, name := range rec.Replicas {
		if _, ok := view.vols[name]; !ok || bad[name] {
			continue
		}
		var load int64
		if l := loads[name]; l != nil {
			load = l.estimate()
		}
		if best < 0 || load < bestLoad {
			best, bestLoad = i, load
		}
	}
	if best >= 0 {
		name := rec.Replicas[best]
		if l := loads[name]; l != nil {
			l.sent.Add(1)
		}
		m.redirectTo(ctx, view.vols[name], key, rec)
		return
	}
	for _, name := range rec.Replicas {
		if vol, ok := view.vols[name]; ok {
			m.redirectTo(ctx, vol, key, rec)
			return
		}
	}
	replyText(ctx, fasthttp.StatusServiceUnavailable, "no live volume holds this key right now")
}

func (m *Master) redirectTo(ctx *fasthttp.RequestCtx, vol Member, key []byte, rec *Record) {
	var ub [512]byte
	loc := appendBlobURL(ub[:0], vol.HTTP, key, rec.Version)
	if m.sec != nil {
		loc = m.sec.appendReadSig(loc, key, rec.Version, time.Now().Add(m.cfg.RedirectTTL).Unix())
	}
	ctx.Response.Header.SetBytesV("Location", loc)
	// The ETag goes after the URL, in ub while it has room; a long key's
	// URL has outgrown ub, and ub[len(loc):] would be out of range.
	ctx.Response.Header.SetBytesV("ETag", appendETag(loc[len(loc):], rec.Checksum))
	ctx.SetStatusCode(fasthttp.StatusFound)
}

// headRecord answers HEAD from the index.
func headRecord(ctx *fasthttp.RequestCtx, rec *Record) {
	h := &ctx.Response.Header
	var b [64]byte
	h.SetBytesV("ETag", appendETag(b[:0], rec.Checksum))
	h.SetBytesV("Last-Modified", fasthttp.AppendHTTPDate(b[:0], rec.ModTime))
	h.SetContentType("application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	ctx.Response.SkipBody = true
	h.SetContentLength(int(rec.Size))
}

// handleList answers GET /PREFIX?list with keys in byte order.
func (m *Master) handleList(ctx *fasthttp.RequestCtx, path []byte) {
	prefix, err := unescape(nil, bytes.TrimPrefix(path, []byte("/")))
	if err == nil {
		err = ValidatePrefix(prefix)
	}
	if err != nil {
		replyError(ctx, err)
		return
	}
	args := ctx.QueryArgs()
	limit := 1000
	if b := args.Peek("limit"); len(b) > 0 {
		n, err := strconv.Atoi(string(b))
		if err != nil || n < 1 || n > 10000 {
			replyText(ctx, fasthttp.StatusBadRequest, "limit must be 1 to 10000")
			return
		}
		limit = n
	}
	keys, next, err := m.ix.list(prefix, args.Peek("start"), limit)
	if err != nil {
		replyError(ctx, err)
		return
	}
	if keys == nil {
		keys = []string{}
	}
	b, _ := json.Marshal(client.ListPage{Keys: keys, Next: next})
	replyJSON(ctx, fasthttp.StatusOK, b)
}

func (m *Master) handleDelete(ctx *fasthttp.RequestCtx, key []byte) {
	mu := m.lockKey(key)
	var rec Record
	found, err := m.ix.get(key, &rec)
	if err == nil && found {
		err = m.ix.remove(key, &rec)
	}
	m.cache.forget(key)
	mu.Unlock()
	if err != nil {
		replyError(ctx, err)
		return
	}
	if !found {
		replyText(ctx, fasthttp.StatusNotFound, "key not found")
		return
	}
	m.deleteBlobs(key, rec.Version, rec.Replicas)
	b, _ := json.Marshal(map[string]string{"deleted": string(key)})
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// deleteBlobs deletes one version of key from vols now, in parallel; each
// deletion that fails stays queued and is retried by the GC loop.
func (m *Master) deleteBlobs(key []byte, version uint64, vols []string) {
	view := m.view.Load()
	var wg sync.WaitGroup
	for _, name := range vols {
		vol, ok := view.vols[name]
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.deleteBlob(vol.HTTP, key, version); err != nil {
				m.log.Warn("delete on volume failed; will retry", "volume", name, "key", string(key), "err", err)
				return
			}
			if err := m.ix.doneGarbage(name, key, version); err != nil {
				m.log.Warn("index", "err", err)
			}
		}()
	}
	wg.Wait()
}

func (m *Master) deleteBlob(addr string, key []byte, version uint64) error {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodDelete)
	req.SetRequestURI(m.sec.signURL(fasthttp.MethodDelete, internalURL(addr, "blob/", key, version)))
	req.URI().DisablePathNormalizing = true
	if err := m.client.DoTimeout(req, resp, 30*time.Second); err != nil {
		return err
	}
	switch resp.StatusCode() {
	case fasthttp.StatusOK, fasthttp.StatusNotFound:
		return nil
	}
	return fmt.Errorf("volume %s answered %d: %s", addr, resp.StatusCode(), bytes.TrimSpace(resp.Body()))
}

func internalURL(addr, op string, key []byte, version uint64) string {
	b := make([]byte, 0, 64+len(key)*3)
	b = append(b, "http://"...)
	b = append(b, addr...)
	b = append(b, "/"+ReservedPrefix...)
	b = append(b, op...)
	b = AppendEscapedKey(b, key)
	b = append(b, "?v="...)
	b = appendVersion(b, version)
	return string(b)
}

// putResult is one replica's outcome of a write.
type putResult struct {
	vol      string
	size     int64
	checksum uint64
	err      error
	status   int // the volume's status when it answered with an error
}

// writePlan is what admitWrite decided for a write.
type writePlan struct {
	view       *clusterView
	createOnly bool
	conflict   int // the status for an existing key when createOnly
	candidates []string
}

// admitWrite checks, from the headers alone, whether a write of size bytes
// (-1: unknown) to key can go ahead, and picks the volumes to try. A
// refusal is a status and a one-line reason. It runs before any byte of the
// body is read, and for Expect: 100-continue before the client sends one.
func (m *Master) admitWrite(ctx *fasthttp.RequestCtx, key []byte, size int64) (writePlan, int, string) {
	var p writePlan
	h := &ctx.Request.Header
	if size > m.cfg.MaxValueSize {
		return p, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("value of %d bytes is over the maximum of %d", size, m.cfg.MaxValueSize)
	}
	p.conflict = fasthttp.StatusConflict
	if ctx.IsPost() {
		p.createOnly = true
	} else if inm := h.Peek("If-None-Match"); len(inm) > 0 {
		if !bytes.Equal(bytes.TrimSpace(inm), []byte("*")) {
			return p, fasthttp.StatusBadRequest, "only If-None-Match: * is supported on writes"
		}
		p.createOnly, p.conflict = true, fasthttp.StatusPreconditionFailed
	}
	if p.createOnly {
		var rec Record
		found, err := m.ix.get(key, &rec)
		if err != nil {
			return p, statusOf(err), err.Error()
		}
		if found {
			return p, p.conflict, "key already exists"
		}
	}
	view := m.view.Load()
	p.view = view
	n := m.cfg.Replicas
	if len(view.vols) < n {
		return p, fasthttp.StatusServiceUnavailable, fmt.Sprintf("%d live volumes, %d replicas needed", len(view.vols), n)
	}
	p.candidates = make([]string, 0, len(view.vols))
	order := view.ring.Order(key)
	if len(order) < n {
		// Too few volumes outside those draining: draining ones may still
		// take the value (rebalance moves it off once there is room).
		order = append(slices.Clone(order), view.draining...)
	}
	for _, name := range m.reachableFirst(order) {
		if vol := view.vols[name]; size < 0 || vol.Total == 0 || vol.Free >= size {
			p.candidates = append(p.candidates, name)
		}
	}
	if len(p.candidates) < n {
		return p, fasthttp.StatusInsufficientStorage, fmt.Sprintf("only %d volumes have room for %d bytes, %d replicas needed", len(p.candidates), size, n)
	}
	return p, 0, ""
}

// expect answers Expect: 100-continue: a write the master would refuse
// gets its final status before the client sends the body (fasthttp sends
// it with no body and closes the connection); anything else is read and
// handled as usual.
func (m *Master) expect(ctx *fasthttp.RequestCtx) int {
	if !ctx.IsPut() && !ctx.IsPost() {
		return fasthttp.StatusContinue
	}
	path := ctx.URI().PathOriginal()
	if bytes.HasPrefix(path, []byte("/"+ReservedPrefix)) {
		return fasthttp.StatusContinue
	}
	if st, _ := m.authStatus(ctx, path); st != 0 {
		return st
	}
	key, err := ParseKey(nil, path)
	if err != nil {
		return statusOf(err)
	}
	if _, st, _ := m.admitWrite(ctx, key, bodySize(&ctx.Request.Header)); st != 0 {
		return st
	}
	return fasthttp.StatusContinue
}

// handleWrite stores a value: PUT creates or replaces, POST (or PUT with
// If-None-Match: *) only creates.
func (m *Master) handleWrite(ctx *fasthttp.RequestCtx, key []byte) {
	size := bodySize(&ctx.Request.Header)
	plan, refused, msg := m.admitWrite(ctx, key, size)
	if refused != 0 {
		replyText(ctx, refused, msg)
		return
	}
	createOnly, conflict, candidates := plan.createOnly, plan.conflict, plan.candidates
	view, n := plan.view, m.cfg.Replicas
	var rec Record

	version := m.nextVersion()
	var body io.Reader = ctx.RequestBodyStream()
	if size == 0 {
		body = bytes.NewReader(nil)
	}
	lim := &limitedBody{r: body, max: m.cfg.MaxValueSize}
	ok, tried, err := m.replicate(view, key, version, size, lim, candidates, n)
	if err != nil {
		m.abandonWrite(view, key, version, tried)
		switch {
		case lim.over:
			replyText(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("value is over the maximum of %d bytes", m.cfg.MaxValueSize))
		default:
			replyError(ctx, err)
		}
		return
	}

	rec = Record{Version: version, Size: ok[0].size, Checksum: ok[0].checksum, ModTime: versionTime(version)}
	for _, r := range ok {
		rec.Replicas = append(rec.Replicas, r.vol)
	}
	mu := m.lockKey(key)
	var old Record
	found, err := m.ix.get(key, &old)
	switch {
	case err != nil:
	case found && createOnly:
		err = withStatus(conflict, errors.New("key already exists"))
	case found && old.Version > version:
		// A concurrent write that started later committed first; this one
		// is ordered before it and is already overwritten.
		err = errSuperseded
	case found:
		err = m.ix.commit(key, &rec, tried, &old)
	default:
		err = m.ix.commit(key, &rec, tried, nil)
	}
	if err == nil {
		m.cache.set(key, &rec)
	} else {
		m.cache.forget(key)
	}
	mu.Unlock()
	if err != nil && !errors.Is(err, errSuperseded) {
		m.abandonWrite(view, key, version, tried)
		replyError(ctx, err)
		return
	}
	if errors.Is(err, errSuperseded) {
		m.abandonWrite(view, key, version, tried)
	} else if found {
		m.kickGC()
	}
	status := fasthttp.StatusCreated
	if found {
		status = fasthttp.StatusOK
	}
	ctx.Response.Header.Set("ETag", rec.ETag())
	b, _ := json.Marshal(client.WriteReply{ETag: rec.ETag(), Key: string(key), Size: rec.Size})
	replyJSON(ctx, status, b)
}

var errSuperseded = errors.New("superseded by a newer write")

// limitedBody fails a body (of unknown length) once it passes max bytes.
type limitedBody struct {
	r    io.Reader
	max  int64
	n    int64
	over bool
}

func (l *limitedBody) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		l.over = true
		return n, withStatus(fasthttp.StatusRequestEntityTooLarge, errors.New("value over the maximum size"))
	}
	return n, err
}

// replicate streams body to the first n candidates in parallel and, for
// each that fails, copies the value from a replica that succeeded to the
// next candidate. It returns the n successful replicas and every volume it
// wrote to (or tried to).
func (m *Master) replicate(view *clusterView, key []byte, version uint64, size int64, body io.Reader, candidates []string, n int) ([]putResult, []string, error) {
	targets, spares := candidates[:n], candidates[n:]
	tried := append([]string(nil), targets...)
	if err := m.ix.addPending(version, key, targets...); err != nil {
		return nil, nil, err
	}
	fan := newFanout(body, n)
	results := make([]putResult, n)
	var wg sync.WaitGroup
	for i, name := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := fan.outs[i]
			results[i] = m.putToVolume(view.vols[name], key, version, size, r)
			r.abandon()
		}()
	}
	srcErr := fan.run()
	wg.Wait()
	if srcErr == nil && size >= 0 && fan.read < size {
		// fasthttp ends a request body the client cut short with a plain
		// io.EOF: it is the client's fault (400), not the volumes' (503).
		srcErr = io.ErrUnexpectedEOF
	}
	if srcErr != nil && !errors.Is(srcErr, errNoReplicaLeft) {
		return nil, tried, bodyError(srcErr, fan.read, size)
	}
	var ok, failed []putResult
	for _, r := range results {
		if r.err == nil {
			ok = append(ok, r)
		} else {
			failed = append(failed, r)
			m.log.Warn("replica write failed", "volume", r.vol, "key", string(key), "err", r.err)
		}
	}
	if len(ok) == 0 {
		return nil, tried, replicaError(failed)
	}
	for i := 1; i < len(ok); i++ {
		if ok[i].checksum != ok[0].checksum || ok[i].size != ok[0].size {
			return nil, tried, fmt.Errorf("replicas of %q disagree: %s has %x, %s has %x", key, ok[0].vol, ok[0].checksum, ok[i].vol, ok[i].checksum)
		}
	}
	// Replace each failed replica by copying from a good one.
	for len(ok) < n && len(spares) > 0 {
		spare := spares[0]
		spares = spares[1:]
		if err := m.ix.addPending(version, key, spare); err != nil {
			return nil, tried, err
		}
		tried = append(tried, spare)
		r := m.pull(view.vols[spare], view.vols[ok[0].vol], key, version)
		if r.err != nil {
			m.log.Warn("replica copy failed", "volume", spare, "key", string(key), "err", r.err)
			failed = append(failed, r)
			continue
		}
		if r.checksum != ok[0].checksum {
			failed = append(failed, putResult{vol: spare, err: fmt.Errorf("copy to %s has checksum %x, want %x", spare, r.checksum, ok[0].checksum)})
			continue
		}
		ok = append(ok, r)
	}
	if len(ok) < n {
		return nil, tried, replicaError(failed)
	}
	return ok, tried, nil
}

// bodyError explains a failed read of the client's body.
func bodyError(err error, read, size int64) error {
	var es *errStatus
	if errors.As(err, &es) {
		return err
	}
	if size >= 0 && read < size {
		return withStatus(fasthttp.StatusBadRequest, fmt.Errorf("body ended after %d of %d bytes: %v", read, size, err))
	}
	return withStatus(fasthttp.StatusBadRequest, fmt.Errorf("reading body: %v", err))
}

// replicaError is the answer when too few replicas took a write: 507 when
// every volume that answered was out of space, 503 otherwise.
func replicaError(failed []putResult) error {
	full := len(failed) > 0
	var first error
	for _, r := range failed {
		if r.status != fasthttp.StatusInsufficientStorage {
			full = false
		}
		if first == nil {
			first = fmt.Errorf("volume %s: %w", r.vol, r.err)
		}
	}
	if first == nil {
		first = errors.New("no volume took the write")
	}
	if full {
		return withStatus(fasthttp.StatusInsufficientStorage, fmt.Errorf("every candidate volume is out of space (%v)", first))
	}
	return withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("not enough volumes took the write: %v", first))
}

// abandonWrite queues the blobs of a write that will not commit for
// deletion and deletes them now where it can.
func (m *Master) abandonWrite(view *clusterView, key []byte, version uint64, tried []string) {
	if len(tried) == 0 {
		return
	}
	if err := m.ix.abandon(version, key, tried); err != nil {
		m.log.Error("index", "err", err)
		return
	}
	go m.deleteBlobs(append([]byte(nil), key...), version, tried)
}

// putToVolume streams body into one volume.
func (m *Master) putToVolume(vol Member, key []byte, version uint64, size int64, body io.Reader) putResult {
	return m.blobRequest(vol, fasthttp.MethodPut, internalURL(vol.HTTP, "blob/", key, version), body, size)
}

// pull asks dst to copy one version of key from src.
func (m *Master) pull(dst, src Member, key []byte, version uint64) putResult {
	return m.blobRequest(dst, fasthttp.MethodPost, internalURL(dst.HTTP, "pull/", key, version)+"&from="+src.HTTP, nil, 0)
}

// blobRequest sends one request that makes vol store a blob (body, if not
// nil, is streamed) and reads the volume's answer.
func (m *Master) blobRequest(vol Member, method, uri string, body io.Reader, size int64) putResult {
	res := putResult{vol: vol.Name}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(m.sec.signURL(method, uri))
	req.URI().DisablePathNormalizing = true
	if body != nil {
		req.SetBodyStream(body, int(size))
	}
	if err := m.client.Do(req, resp); err != nil {
		res.err = err
		return res
	}
	return parseBlobReply(res, resp)
}

func parseBlobReply(res putResult, resp *fasthttp.Response) putResult {
	if resp.StatusCode() != fasthttp.StatusCreated {
		res.status = resp.StatusCode()
		res.err = fmt.Errorf("status %d: %s", resp.StatusCode(), bytes.TrimSpace(resp.Body()))
		return res
	}
	var br blobReply
	if err := json.Unmarshal(resp.Body(), &br); err != nil {
		res.err = fmt.Errorf("bad reply: %w", err)
		return res
	}
	sum, err := strconv.ParseUint(br.Checksum, 16, 64)
	if err != nil {
		res.err = fmt.Errorf("bad checksum %q", br.Checksum)
		return res
	}
	res.size, res.checksum = br.Size, sum
	return res
}

func (m *Master) kickRepair() {
	select {
	case m.repairKick <- struct{}{}:
	default:
	}
}

func (m *Master) kickGC() {
	select {
	case m.gcKick <- struct{}{}:
	default:
	}
}

// gcLoop deletes queued blob versions (old versions after an overwrite,
// deleted keys, abandoned writes) from volumes that are alive, retrying the
// rest later.
func (m *Master) gcLoop() {
	defer m.wg.Done()
	runEvery(m.stop, m.cfg.GCInterval, m.gcKick, m.collectGarbage)
}

type garbageItem struct {
	vol     string
	key     []byte
	version uint64
}

func (m *Master) collectGarbage() {
	view := m.view.Load()
	var batch []garbageItem
	err := m.ix.garbage(func(vol string, key []byte, version uint64) bool {
		if _, ok := view.vols[vol]; ok {
			batch = append(batch, garbageItem{vol, key, version})
		}
		return len(batch) < 512
	})
	if err != nil {
		m.log.Error("gc scan", "err", err)
		return
	}
	var rec Record
	for _, g := range batch {
		select {
		case <-m.stop:
			return
		default:
		}
		if m.inGrace(g.vol, g.key, g.version) {
			continue
		}
		// A copy of this very version may be on its way to the volume
		// (repair, rebalance): its intent keeps it.
		if pending, err := m.ix.isPending(g.version, g.vol, g.key); err != nil || pending {
			continue
		}
		// Never delete the version the index points at (a blob that was
		// abandoned on a volume may have been copied back there since).
		if found, err := m.ix.get(g.key, &rec); err == nil && found && rec.Version == g.version && contains(rec.Replicas, g.vol) {
			_ = m.ix.doneGarbage(g.vol, g.key, g.version)
			continue
		}
		if err := m.deleteBlob(view.vols[g.vol].HTTP, g.key, g.version); err != nil {
			m.log.Debug("gc delete failed; will retry", "volume", g.vol, "key", string(g.key), "err", err)
			continue
		}
		_ = m.ix.doneGarbage(g.vol, g.key, g.version)
	}
}

// maybeMerge starts merging vol's own index into the master's index if the
// master has never merged it: that is how a master whose index was lost (or
// is new) learns every key again.
func (m *Master) maybeMerge(vol Member) {
	m.mergeMu.Lock()
	defer m.mergeMu.Unlock()
	if m.merged[vol.Name] || m.merging[vol.Name] {
		return
	}
	known, err := m.ix.isKnown(vol.Name)
	if err != nil {
		m.log.Error("index", "err", err)
		return
	}
	if known {
		m.merged[vol.Name] = true
		return
	}
	m.merging[vol.Name] = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := m.mergeVolume(vol)
		m.mergeMu.Lock()
		delete(m.merging, vol.Name)
		if err == nil {
			m.merged[vol.Name] = true
		}
		m.mergeMu.Unlock()
		if err != nil {
			m.log.Warn("merging volume index failed; retrying", "volume", vol.Name, "err", err)
			select {
			case <-m.stop:
			case <-time.After(time.Second):
				m.gossip.notify() // the next view refresh retries the merge
			}
		}
	}()
}

// mergeVolume pages through vol's index and adds what the master lacks:
// the newest version of each key wins; equal versions add a replica.
func (m *Master) mergeVolume(vol Member) error {
	start, startVer := "", ""
	entries := 0
	for {
		select {
		case <-m.stop:
			return errors.New("stopping")
		default:
		}
		u := "http://" + vol.HTTP + "/" + ReservedPrefix + "index?limit=1000&start=" + url.QueryEscape(start) + "&start_version=" + startVer
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI(m.sec.signURL(fasthttp.MethodGet, u))
		err := m.client.DoTimeout(req, resp, 60*time.Second)
		var page indexPage
		if err == nil && resp.StatusCode() != fasthttp.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode())
		}
		if err == nil {
			err = json.Unmarshal(resp.Body(), &page)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if err != nil {
			return fmt.Errorf("list index of %s: %w", vol.Name, err)
		}
		for _, e := range page.Entries {
			if err := m.mergeEntry(vol.Name, e); err != nil {
				return err
			}
			entries++
		}
		if page.Next == "" {
			break
		}
		start, startVer = page.Next, page.NextVersion
	}
	if err := m.ix.setKnown(vol.Name); err != nil {
		return err
	}
	if entries > 0 {
		m.log.Info("merged volume index", "volume", vol.Name, "entries", entries)
	}
	return nil
}

func (m *Master) mergeEntry(vol string, e indexEntry) error {
	key := []byte(e.Key)
	if ValidateKey(key) != nil {
		return nil
	}
	ver, err := parseVersion([]byte(e.Version))
	if err != nil {
		return nil
	}
	sum, err := strconv.ParseUint(e.Checksum, 16, 64)
	if err != nil {
		return nil
	}
	// A version queued for deletion on this volume was deleted or replaced
	// while the volume's listing was being read: do not bring it back.
	if has, err := m.ix.db.Has(garbageKey(vol, key, ver), nil); err != nil || has {
		return err
	}
	mu := m.lockKey(key)
	defer mu.Unlock()
	m.cache.forget(key)
	var rec Record
	found, err := m.ix.get(key, &rec)
	if err != nil {
		return err
	}
	switch {
	case !found || ver > rec.Version:
		garbage := map[string]uint64{}
		if found {
			for _, r := range rec.Replicas {
				garbage[r] = rec.Version
			}
		}
		nr := Record{Version: ver, Size: e.Size, Checksum: sum, ModTime: time.Unix(0, e.ModTime).UTC(), Replicas: []string{vol}}
		return m.ix.put(key, &nr, garbage)
	case ver == rec.Version:
		if contains(rec.Replicas, vol) || sum != rec.Checksum {
			return nil
		}
		rec.Replicas = append(rec.Replicas, vol)
		return m.ix.put(key, &rec, nil)
	default:
		return m.ix.addGarbage(vol, key, ver)
	}
}

// handleAdmin serves the admin endpoints; false when rest names none.
func (m *Master) handleAdmin(ctx *fasthttp.RequestCtx, rest []byte) bool {
	switch string(rest) {
	case "live":
		replyText(ctx, fasthttp.StatusOK, "ok")
	case "ready":
		view := m.view.Load()
		m.mergeMu.Lock()
		merging := len(m.merging)
		m.mergeMu.Unlock()
		switch {
		case view.ring.Len() < m.cfg.Replicas:
			replyText(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("%d live volumes, %d replicas needed", view.ring.Len(), m.cfg.Replicas))
		case merging > 0:
			replyText(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("merging the index of %d volumes", merging))
		default:
			replyText(ctx, fasthttp.StatusOK, "ok")
		}
	case "cluster":
		m.serveCluster(ctx)
	case "metrics":
		m.serveMetrics(ctx)
	case "status":
		m.serveStatus(ctx)
	default:
		if m.cfg.Pprof && bytes.HasPrefix(rest, []byte("debug/pprof/")) {
			servePprof(ctx, rest)
			return true
		}
		return false
	}
	return true
}

func (m *Master) clusterState() client.ClusterInfo {
	view := m.view.Load()
	c := client.ClusterInfo{
		Node:     Member{Name: m.cfg.Name, Role: RoleMaster, HTTP: m.http.addr(), Gossip: m.gossip.addr(), State: "alive"},
		Replicas: m.cfg.Replicas,
		Members:  m.gossip.snapshot(),
		Departed: m.gossip.departed(),
		Ring: client.RingInfo{
			Partitions: view.ring.Config().Partitions, Load: view.ring.Config().Load,
			MaxPartitions: view.ring.MaxPartitions(), Owned: view.ring.PartitionsOf(),
		},
		Merging:        []string{},
		PendingDeletes: map[string]int{},
	}
	c.UnderReplicated, c.RepairCopies = m.repairStatus()
	c.Rebalance = m.rebalanceStatus()
	loads := *m.loads.Load()
	m.repairMu.Lock()
	for i, mem := range c.Members {
		// The index's count (values whose record names the volume) rather
		// than the volume's own, which includes versions awaiting deletion.
		if n, ok := m.repair.keysOn[mem.Name]; ok {
			c.Members[i].Keys = n
		}
		if contains(view.draining, mem.Name) {
			c.Members[i].Draining = true
		}
		c.Members[i].Partitions = c.Ring.Owned[mem.Name]
		if l := loads[mem.Name]; l != nil {
			c.Members[i].Load = l.probed.Load()
		}
	}
	m.repairMu.Unlock()
	sort.Slice(c.Members, func(i, j int) bool { return c.Members[i].Name < c.Members[j].Name })
	sort.Slice(c.Departed, func(i, j int) bool { return c.Departed[i].Name < c.Departed[j].Name })
	m.mergeMu.Lock()
	for name := range m.merging {
		c.Merging = append(c.Merging, name)
	}
	m.mergeMu.Unlock()
	_ = m.ix.garbage(func(vol string, key []byte, version uint64) bool {
		c.PendingDeletes[vol]++
		return true
	})
	return c
}

func (m *Master) serveCluster(ctx *fasthttp.RequestCtx) {
	b, _ := json.Marshal(m.clusterState())
	replyJSON(ctx, fasthttp.StatusOK, b)
}
