package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/ring"
)

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
	cfg MasterConfig
	log *slog.Logger
	// cat is the master's catalog: every key's record, intents and the
	// garbage queue (catalog.go).
	cat    *catalog
	http   *httpServer
	gossip *membership
	client *fasthttp.Client
	vc     *volumeClient // client, speaking the volumes' internal API
	// dialed tracks client's connections: those to a volume the probes
	// find unreachable are cut, failing the requests in flight to it.
	dialed *dialTracker
	sec    *signer  // nil without a cluster secret
	keys   []apiKey // empty: the client API is open
	// metrics counts requests; scrapes add the cluster's state (metrics.go).
	metrics *nodeMetrics
	view    atomic.Pointer[clusterView]
	// unreachable holds the volumes that failed their last probes.
	unreachable atomic.Pointer[map[string]bool]
	// loads holds each live volume's load, from probes.
	loads atomic.Pointer[map[string]*volumeLoad]

	// copyLocks order copies to a volume against the deletion of queued
	// versions there (gc.go); apart from locks, so a slow deletion never
	// holds up a write's commit.
	copyLocks [64]sync.Mutex

	mergeMu sync.Mutex
	merging map[string]bool // volumes whose index is being merged
	merged  map[string]bool // volumes known to be merged (cache of the index)
	// mergeStarts counts the merges started (the upload sweep's check
	// that none ran while it read the catalog).
	mergeStarts uint64

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
	// later queues the held copies, oldest first, for deletion once their
	// grace is over (laterLoop); laterKick wakes the loop when the queue
	// was empty.
	later     []laterDeletion
	laterKick chan struct{}
	// dels batches the deletions for each volume; settler clears their
	// catalog entries once the volumes synced them (deleteq.go).
	dels    *deleteQueues
	puts    *putQueues
	settler settler

	// drains holds the volumes an operator asked to drain (persisted in
	// the index); drainSince is when, for the drain endpoint's Done.
	drains     atomic.Pointer[map[string]bool]
	drainMu    sync.Mutex
	drainSince map[string]time.Time
	// viewMu serializes rebuilds of the view.
	viewMu sync.Mutex
	// verifier runs verify and handles volumes' lost-copy reports.
	verifier verifyState
	// uploads orders S3 multipart completes and aborts (multipart.go).
	uploads uploadState

	// raft replicates the catalog among the masters (raft.go); the
	// leader alone serves (masters.go). leading is set once this master
	// leads and has caught up with the log.
	raft       *raftNode
	raftNotify chan bool
	leading    atomic.Bool
	// ledFrom is the highest version any master had handed out when this
	// master last began to lead: a write ticket at or below it was issued
	// before (by another master, or by this one before a restart).
	ledFrom atomic.Uint64
	lease   readLease
	// votersN is how many voters the Raft configuration has (1: reads
	// need no lease).
	votersN  atomic.Int64
	bootKick chan struct{}
	// promoted is set once this run's first leadership turned the
	// intents left from before into garbage (leaderInit).
	promoted atomic.Bool
	// meta is what this master gossips, but for the fields publishMeta
	// fills in.
	metaMu    sync.Mutex
	meta      nodeMeta
	goneMu    sync.Mutex
	goneSince map[string]time.Time

	// missingSem bounds the checks of copies readers did not find.
	missingSem chan struct{}
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
		sec:     newSigner(cfg.Secret),
		keys:    newAPIKeys(cfg.APIKeys),
		merging: make(map[string]bool),
		merged:  make(map[string]bool),
		gcKick:  make(chan struct{}, 1),

		laterKick: make(chan struct{}, 1),

		missingSem: make(chan struct{}, maxRestoring),

		repairKick: make(chan struct{}, 1),
		stop:       make(chan struct{}),
		grace:      make(map[string]time.Time),

		drainSince: make(map[string]time.Time),
		raftNotify: make(chan bool, 16),
		bootKick:   make(chan struct{}, 1),
		goneSince:  make(map[string]time.Time),
	}
	m.votersN.Store(1)
	m.client, m.dialed = newTrackedClient(cfg.IdleTimeout)
	m.vc = &volumeClient{hc: m.client, sec: m.sec}
	m.dels = newDeleteQueues(m.vc)
	m.puts = newPutQueues(m.vc)
	m.settler.kick = make(chan struct{}, 1)
	m.moves = newRateLimiter(cfg.RebalanceRate, m.stop)
	empty, err := ring.New(cfg.Ring, nil)
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	m.view.Store(&clusterView{ring: empty, vols: map[string]Member{}, changed: time.Now()})
	cat, recovered, err := openCatalog(filepath.Join(cfg.Dir, "index"), cfg.Rebuild, cfg.CacheEntries, cfg.clock)
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	if recovered {
		m.log.Warn("index was corrupt and has been recovered; merging every volume's index again")
	}
	m.cat = cat
	drains, err := cat.drains()
	if err != nil {
		cat.close()
		return nil, fmt.Errorf("master: %w", err)
	}
	m.drains.Store(&drains)
	m.metrics = newNodeMetrics(RoleMaster)
	m.repair.missingSince = map[string]time.Time{}
	m.unreachable.Store(&map[string]bool{})
	m.loads.Store(&map[string]*volumeLoad{})
	// Listen now (gossip advertises the port), serve only once everything
	// the handlers touch exists.
	m.http, err = listenHTTP(cfg.Addr, m.metrics.instrument(m.handle), m.expect, cfg.IdleTimeout, cfg.httpLimits(), m.log)
	if err != nil {
		cat.close()
		return nil, fmt.Errorf("master: listen %s: %w", cfg.Addr, err)
	}
	ghost, _, _ := net.SplitHostPort(cfg.Gossip.Bind)
	host, err := advertiseHost(cfg.Gossip.Advertise, ghost)
	if err != nil {
		m.http.kill()
		cat.close()
		return nil, err
	}
	_, port, _ := net.SplitHostPort(m.http.addr())
	// Volumes sign the commits of the writes they coordinate for this
	// address.
	m.sec.setSelf(net.JoinHostPort(host, port))
	stream, err := listenRaft(cfg.raftBind(), host, cfg.Secret)
	if err != nil {
		m.http.kill()
		cat.close()
		return nil, fmt.Errorf("master: %w", err)
	}
	if err := m.markCarry(); err != nil {
		stream.Close()
		m.http.kill()
		cat.close()
		return nil, fmt.Errorf("master: %w", err)
	}
	fsm := &catalogFSM{c: cat, log: m.log, restored: m.afterRestore}
	m.raft, err = openRaft(filepath.Join(cfg.Dir, "raft"), cfg.Name, cfg.Gossip.Profile, cfg.BootstrapExpect <= 1, stream, fsm, m.raftNotify, m.log)
	if err != nil {
		stream.Close()
		m.http.kill()
		cat.close()
		return nil, fmt.Errorf("master: %w", err)
	}
	_, lease := raftTimings(cfg.Gossip.Profile)
	m.lease.dur = lease
	cat.repl.Store(&raftApplier{r: m.raft.r, timeout: 10 * time.Second, stopped: m.raft.stopped})
	gcfg := cfg.Gossip
	// The volumes seen last time are dialed too: a restarted master finds
	// its cluster again at once rather than when the volumes next re-dial.
	gcfg.Join = appendNew(slices.Clone(gcfg.Join), loadPeers(cfg.Dir)...)
	m.meta = nodeMeta{Role: RoleMaster, HTTP: net.JoinHostPort(host, port), Raft: m.raft.addr}
	m.gossip, err = startMembership(cfg.Name, gcfg, m.meta, m.log)
	if err != nil {
		m.raft.close()
		m.http.kill()
		cat.close()
		return nil, fmt.Errorf("master: %w", err)
	}
	m.wg.Add(11)
	go m.settleLoop()
	go m.watchLeadership()
	go m.bootstrap()
	go m.mastersLoop()
	go m.leaseLoop()
	go m.catalogLoop()
	go m.probeLoop()
	go m.watchMembers()
	go m.gcLoop()
	go m.laterLoop()
	go m.placementLoop()
	m.http.serve()
	if cfg.BootstrapExpect <= 1 {
		// A single master serves as soon as it returns (it elects itself
		// within a heartbeat timeout or two).
		m.awaitLeadership(10 * time.Second)
	}
	m.log.Info("master started", "http", m.http.addr(), "gossip", m.gossip.addr(), "raft", m.raft.addr, "dir", cfg.Dir, "replicas", cfg.Replicas)
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
		if m.leading.Load() && m.votersN.Load() > 1 {
			// Hand the leadership over rather than leave the others to
			// notice the silence.
			_ = m.raft.r.LeadershipTransfer().Error()
		}
		m.leading.Store(false)
		close(m.stop)
		m.http.shutdown(10 * time.Second)
		m.gossip.leave(2 * time.Second)
		m.wg.Wait()
		m.raft.close()
		err = m.cat.close()
		m.log.Info("master stopped")
	})
	return err
}

// Kill stops as a crash would (no goodbye, connections cut). The index is
// closed so that the directory can be opened again.
func (m *Master) Kill() {
	m.closeOnce.Do(func() {
		m.leading.Store(false)
		close(m.stop)
		m.gossip.shutdown()
		m.http.kill()
		m.raft.close()
		m.wg.Wait()
		_ = m.cat.close()
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
	joined := false
	for name := range vols {
		if _, ok := old.vols[name]; !ok {
			joined = true
			break
		}
	}
	if joined || len(vols) != len(old.vols) {
		changed = time.Now()
	}
	m.view.Store(&clusterView{ring: r, vols: vols, draining: draining, changed: changed})
	if !changed.Equal(old.changed) {
		m.savePeers(vols)
	}
	for name, mem := range old.vols {
		if _, live := vols[name]; !live {
			// Gossip gave up on it: requests in flight to it (a paused
			// process keeps its sockets open) fail now and are failed over.
			if cut := m.dialed.cut(mem.HTTP); cut > 0 {
				m.log.Info("cut connections to a volume that left", "volume", name, "connections_cut", cut)
			}
		}
	}
	for _, mem := range vols {
		m.maybeMerge(mem)
	}
	// A volume that joined (or came back) may have deletions queued for
	// it; the GC loop's own interval covers the rest.
	if joined {
		m.kickGC()
	}
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

func (m *Master) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.URI().PathOriginal()
	if !m.serveHere(ctx, path) {
		return
	}
	// Volumes report lost copies without an API key; see verify.go. And
	// they commit the writes they coordinate (signed, when the cluster has
	// a secret); see redirect_write.go. And they ask for the parts of the
	// multipart values they stream (signed too); see multipart.go.
	if m.serveLost(ctx, path) || m.serveWriteInternal(ctx, path) || m.serveManifest(ctx, path) {
		return
	}
	if !m.authorize(ctx, path) {
		return
	}
	if rest, ok := bytes.CutPrefix(path, []byte("/"+ReservedPrefix)); ok {
		if s3, ok := bytes.CutPrefix(rest, []byte("s3/")); ok {
			m.handleS3(ctx, s3) // bucket.go: the S3 gateway's endpoints
			return
		}
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
	if q := ctx.URI().QueryString(); len(q) > 0 {
		// No query argument is defined on writes: "DELETE /dir/?list" must
		// not delete the key "dir/", nor "PUT /k?x=y" store "k".
		replyText(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("%s takes no query string (got %q)", ctx.Method(), truncate(q, 64)))
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

func (m *Master) kickRepair() {
	select {
	case m.repairKick <- struct{}{}:
	default:
	}
}

// truncate cuts b to at most n bytes, for quoting client input in a reason.
func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
