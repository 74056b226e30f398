package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"

	"github.com/kvdb/kvdb/node/client"
	"github.com/kvdb/kvdb/ring"
)

// Gossip profiles: the failure-detection timings memberlist runs with.
const (
	// ProfileLAN is memberlist's LAN preset: a dead node is noticed in about
	// 6 s, with few false alarms on a busy network. The production default.
	ProfileLAN = "lan"
	// ProfileLocal is memberlist's preset for one machine (about 5 s).
	ProfileLocal = "local"
	// ProfileTest notices a dead node within 1-2 s on loopback; it is for
	// tests, where waiting for the LAN timings would dominate the run.
	ProfileTest = "test"
)

// GossipConfig says how a node joins the cluster.
type GossipConfig struct {
	// Bind is the memberlist address, HOST:PORT, for both UDP and TCP. Port 0
	// picks a free port. Default: the HTTP host with the HTTP port + 1000.
	Bind string
	// Advertise is the HOST (or HOST:PORT) other nodes reach this one at,
	// when it is not the bind address (0.0.0.0, NAT). Empty: the bind host,
	// or the first private IP when binding to all interfaces.
	Advertise string
	// Join lists gossip addresses of existing members. A node keeps
	// re-joining them while it sees no other member, so start order does not
	// matter.
	Join []string
	// Cluster names the cluster; it is memberlist's label, so nodes of
	// another cluster on the same network are ignored. Default "kvdb"
	// (also when empty).
	Cluster string
	// Profile picks the failure-detection timings: ProfileLAN (default,
	// also when empty), ProfileLocal or ProfileTest.
	Profile string
	// Secret, when set (16, 24 or 32 bytes), encrypts and authenticates all
	// gossip with AES-GCM, and gossip without it is refused. The roles set
	// it themselves, derived from their cluster secret (MasterConfig.Secret,
	// VolumeConfig.Secret); set it directly only to run gossip alone.
	Secret []byte
}

// DefaultGossipConfig returns the gossip defaults: cluster "kvdb", the LAN
// timings, no secret, nothing to join, and Bind and Advertise empty, so
// that they follow the node's HTTP address (see Bind).
func DefaultGossipConfig() GossipConfig {
	return GossipConfig{Cluster: "kvdb", Profile: ProfileLAN}
}

// Validate reports whether the configuration can be used.
func (c GossipConfig) Validate() error {
	if c.Bind != "" {
		if _, _, err := net.SplitHostPort(c.Bind); err != nil {
			return fmt.Errorf("gossip bind %q: %w", c.Bind, err)
		}
	}
	switch c.Profile {
	case "", ProfileLAN, ProfileLocal, ProfileTest:
	default:
		return fmt.Errorf("gossip profile %q: want lan, local or test", c.Profile)
	}
	switch len(c.Secret) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("gossip secret is %d bytes: want 16, 24 or 32", len(c.Secret))
	}
	return nil
}

// Roles a node publishes in its gossip metadata: those of the cluster
// document, declared in node/client.
const (
	RoleMaster = client.RoleMaster
	RoleVolume = client.RoleVolume
)

// Member is one node as gossip reports it. It is the cluster document's
// entry, declared in node/client.
type Member = client.Member

// nodeMeta is the metadata every node gossips. memberlist panics on metadata
// over 512 bytes, so it stays small: short JSON names and a format version.
type nodeMeta struct {
	V     int    `json:"v"`
	Role  string `json:"r"`
	HTTP  string `json:"h"`
	Free  int64  `json:"f,omitempty"`
	Total int64  `json:"t,omitempty"`
	Keys  int64  `json:"k,omitempty"`
	// Weight is how many shares of the ring the volume asks for (0 is 1).
	Weight int `json:"w,omitempty"`
	// Draining asks the master to move every value off this volume.
	Draining bool `json:"d,omitempty"`
	// FS identifies the filesystem whose space Free and Total are, among
	// this host's (store.Stats.FS): volumes sharing one report the same
	// space. 0 when they are the volume's own (a capacity).
	FS uint64 `json:"fs,omitempty"`
	// A master's Raft transport address, whether it leads, and the last
	// log index it applied.
	Raft    string `json:"ra,omitempty"`
	Leader  bool   `json:"l,omitempty"`
	Applied uint64 `json:"ap,omitempty"`
}

const metaFormat = 1

var errMeta = errors.New("node: malformed gossip metadata")

func encodeMeta(m nodeMeta) ([]byte, error) {
	m.V = metaFormat
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node: gossip metadata is %d bytes, over %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) == 0 || len(b) > memberlist.MetaMaxSize {
		return m, errMeta
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: %v", errMeta, err)
	}
	if m.V != metaFormat {
		return m, fmt.Errorf("%w: format %d", errMeta, m.V)
	}
	if m.Role != RoleMaster && m.Role != RoleVolume {
		return m, fmt.Errorf("%w: role %q", errMeta, m.Role)
	}
	if _, _, err := net.SplitHostPort(m.HTTP); err != nil {
		return m, fmt.Errorf("%w: addr %q", errMeta, m.HTTP)
	}
	if m.Free < 0 || m.Total < 0 || m.Keys < 0 {
		return m, fmt.Errorf("%w: negative space", errMeta)
	}
	if m.Raft != "" {
		if _, _, err := net.SplitHostPort(m.Raft); err != nil || m.Role != RoleMaster {
			return m, fmt.Errorf("%w: raft addr %q", errMeta, m.Raft)
		}
	}
	if m.Weight < 0 || m.Weight > ring.MaxWeight {
		return m, fmt.Errorf("%w: weight %d", errMeta, m.Weight)
	}
	return m, nil
}

// membership wraps one memberlist: it publishes this node's metadata and
// keeps the table of live members that the roles read.
type membership struct {
	cfg  GossipConfig
	role string
	log  *slog.Logger
	ml   *memberlist.Memberlist
	self string // this node's gossip address
	meta atomic.Pointer[[]byte]

	mu      sync.Mutex
	members map[string]Member // alive (or suspect) nodes
	gone    map[string]Member // nodes gossip reported dead or left

	changed chan struct{} // receives (without blocking) after each change
	stop    chan struct{}
	wg      sync.WaitGroup
	closed  sync.Once
}

// advertiseHost picks the host other nodes should use for this one.
func advertiseHost(advertise, bindHost string) (string, error) {
	if advertise != "" {
		if h, _, err := net.SplitHostPort(advertise); err == nil {
			return h, nil
		}
		return advertise, nil
	}
	if ip := net.ParseIP(bindHost); bindHost != "" && (ip == nil || !ip.IsUnspecified()) {
		return bindHost, nil
	}
	ip, err := sockaddr.GetPrivateIP()
	if err != nil || ip == "" {
		return "", fmt.Errorf("node: no private IP address to advertise; set --advertise")
	}
	return ip, nil
}

func memberlistConfig(profile string) *memberlist.Config {
	switch profile {
	case ProfileLocal:
		c := memberlist.DefaultLocalConfig()
		c.DeadNodeReclaimTime = 2 * time.Second
		return c
	case ProfileTest:
		c := memberlist.DefaultLocalConfig()
		c.ProbeInterval = 250 * time.Millisecond
		c.ProbeTimeout = 200 * time.Millisecond
		// A node paused for most of a second by a loaded machine (tests
		// run with -race, packages in parallel, on 2 cores) must not be
		// declared dead: about 1.5 s of suspicion before that.
		c.SuspicionMult = 6
		c.GossipInterval = 20 * time.Millisecond
		c.PushPullInterval = time.Second
		c.GossipToTheDeadTime = 2 * time.Second
		c.DeadNodeReclaimTime = 100 * time.Millisecond
		return c
	default:
		c := memberlist.DefaultLANConfig()
		// A node restarted at a new address under its old name would be
		// ignored until the dead entry is reaped (memberlist #157) without
		// this (#189).
		c.DeadNodeReclaimTime = 10 * time.Second
		return c
	}
}

// startMembership creates the memberlist, publishes meta and starts joining.
func startMembership(name string, cfg GossipConfig, meta nodeMeta, logger *slog.Logger) (*membership, error) {
	if cfg.Cluster == "" {
		cfg.Cluster = "kvdb"
	}
	host, portStr, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("node: gossip bind %q: %w", cfg.Bind, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("node: gossip port %q: %w", portStr, err)
	}
	adv, err := advertiseHost(cfg.Advertise, host)
	if err != nil {
		return nil, err
	}
	m := &membership{
		cfg:     cfg,
		role:    meta.Role,
		log:     logger,
		members: make(map[string]Member),
		gone:    make(map[string]Member),
		changed: make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	b, err := encodeMeta(meta)
	if err != nil {
		return nil, err
	}
	m.meta.Store(&b)

	c := memberlistConfig(cfg.Profile)
	c.Name = name
	c.Label = cfg.Cluster
	if host == "" {
		host = "0.0.0.0"
	}
	c.BindAddr = host
	c.BindPort = port
	c.AdvertiseAddr = adv
	// The presets advertise port 7946 whatever the bind port; memberlist
	// fills in the real port itself only when binding to port 0.
	c.AdvertisePort = port
	if _, p, err := net.SplitHostPort(cfg.Advertise); err == nil {
		if c.AdvertisePort, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("node: gossip advertise port %q: %w", p, err)
		}
	}
	c.Delegate = (*gossipDelegate)(m)
	c.Events = (*gossipEvents)(m)
	c.Logger = log.New(slogWriter{log: logger}, "", 0)
	if len(cfg.Secret) > 0 {
		c.SecretKey = cfg.Secret
		c.GossipVerifyIncoming = true
		c.GossipVerifyOutgoing = true
	}
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("node: start gossip on %s: %w", cfg.Bind, err)
	}
	m.ml = ml
	// Read once: LocalNode's fields are rewritten by UpdateNode when the
	// metadata changes (memberlist #238), and the address never does.
	n := ml.LocalNode()
	m.self = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	m.wg.Add(1)
	go func() {
		// Joining may wait on a seed that does not answer: in the
		// background, so the node serves (and answers its probes) meanwhile.
		if len(cfg.Join) > 0 {
			if _, err := ml.Join(cfg.Join); err != nil {
				logger.Warn("gossip join failed; retrying in the background", "join", cfg.Join, "err", oneLine(err))
			}
		}
		m.rejoinLoop(c.ProbeInterval * 4)
	}()
	return m, nil
}

// oneLine is err's message on one line (memberlist's join errors list
// one line per seed).
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// addr is the gossip address this node advertises.
func (m *membership) addr() string { return m.self }

// rejoinLoop re-dials the seed addresses while this node is alone, or is a
// volume that sees no master: a node that lost every peer never dials them
// again by itself, and volumes that only see each other (the master left
// and came back) would otherwise stay a cluster of their own.
func (m *membership) rejoinLoop(every time.Duration) {
	defer m.wg.Done()
	if len(m.cfg.Join) == 0 {
		return
	}
	if every < 200*time.Millisecond {
		every = 200 * time.Millisecond
	}
	runEvery(m.stop, every, nil, func() {
		if m.ml.NumMembers() > 1 && (m.role != RoleVolume || m.seesRole(RoleMaster)) {
			return
		}
		if n, err := m.ml.Join(m.cfg.Join); err == nil && n > 0 {
			m.log.Info("gossip rejoined", "join", m.cfg.Join)
		}
	})
}

// httpOf returns the HTTP address of a live member with role; of masters,
// the one that says it leads when one does.
func (m *membership) httpOf(role string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	found := ""
	for _, mem := range m.members {
		if mem.Role == role && mem.HTTP != "" {
			if mem.Leader || role != RoleMaster {
				return mem.HTTP, true
			}
			if found == "" || mem.HTTP < found {
				found = mem.HTTP
			}
		}
	}
	return found, found != ""
}

// member returns the live member called name.
func (m *membership) member(name string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem, ok := m.members[name]
	return mem, ok
}

func (m *membership) seesRole(role string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mem := range m.members {
		if mem.Role == role {
			return true
		}
	}
	return false
}

// setMeta publishes new metadata. Callers limit how often (every few seconds).
func (m *membership) setMeta(meta nodeMeta) error {
	b, err := encodeMeta(meta)
	if err != nil {
		return err
	}
	old := m.meta.Swap(&b)
	if old != nil && bytes.Equal(*old, b) {
		return nil
	}
	return m.ml.UpdateNode(2 * time.Second)
}

// snapshot returns the live members (sorted by nothing in particular).
func (m *membership) snapshot() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.AppendSeq(make([]Member, 0, len(m.members)), maps.Values(m.members))
}

// departed returns the members gossip reported dead or gone.
func (m *membership) departed() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.AppendSeq(make([]Member, 0, len(m.gone)), maps.Values(m.gone))
}

// leave announces a graceful departure, then stops.
func (m *membership) leave(timeout time.Duration) {
	if err := m.ml.Leave(timeout); err != nil {
		m.log.Warn("gossip leave", "err", err)
	}
	m.shutdown()
}

// shutdown stops without a goodbye: to the others it looks like a crash.
func (m *membership) shutdown() {
	m.closed.Do(func() {
		close(m.stop)
		m.wg.Wait()
		if err := m.ml.Shutdown(); err != nil {
			m.log.Warn("gossip shutdown", "err", err)
		}
	})
}

func (m *membership) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// upsert records node as alive. It copies what it needs out of node, whose
// fields gossip goroutines rewrite (memberlist #238, #255).
func (m *membership) upsert(node *memberlist.Node, event string) {
	meta, err := decodeMeta(node.Meta)
	mem := Member{
		Name:   node.Name,
		Gossip: net.JoinHostPort(node.Addr.String(), strconv.Itoa(int(node.Port))),
		State:  "alive",
	}
	if err != nil {
		m.log.Warn("gossip member with bad metadata ignored", "member", mem.Name, "err", err)
		return
	}
	mem.Role, mem.HTTP, mem.Free, mem.Total = meta.Role, meta.HTTP, meta.Free, meta.Total
	mem.Keys, mem.Weight, mem.Draining = meta.Keys, max(meta.Weight, 1), meta.Draining
	mem.FS = meta.FS
	mem.Raft, mem.Leader, mem.Applied = meta.Raft, meta.Leader, meta.Applied
	m.mu.Lock()
	_, known := m.members[mem.Name]
	m.members[mem.Name] = mem
	delete(m.gone, mem.Name)
	m.mu.Unlock()
	if !known || event != "update" {
		m.log.Info("gossip member "+event, "member", mem.Name, "role", mem.Role, "addr", mem.HTTP)
	}
	m.notify()
}

func (m *membership) remove(node *memberlist.Node) {
	name, state := node.Name, "dead"
	if node.State == memberlist.StateLeft {
		state = "left"
	}
	m.mu.Lock()
	mem, ok := m.members[name]
	delete(m.members, name)
	if ok {
		mem.State = state
		m.gone[name] = mem
	}
	m.mu.Unlock()
	m.log.Info("gossip member "+state, "member", name)
	m.notify()
}

// gossipDelegate gives memberlist this node's metadata. Its methods must not
// block: memberlist calls them from its packet loops.
type gossipDelegate membership

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	b := *(*membership)(d).meta.Load()
	if len(b) > limit {
		return nil
	}
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// gossipEvents receives membership changes; memberlist never calls these
// concurrently, so their order holds.
type gossipEvents membership

func (e *gossipEvents) NotifyJoin(n *memberlist.Node)   { (*membership)(e).upsert(n, "joined") }
func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) { (*membership)(e).upsert(n, "update") }
func (e *gossipEvents) NotifyLeave(n *memberlist.Node)  { (*membership)(e).remove(n) }

// slogWriter bridges memberlist's log.Logger lines ("[WARN] memberlist: …")
// into slog at the matching level.
// slogWriter writes a library's log lines (memberlist's, or with
// component set, another's) to slog, at the level their tag names.
type slogWriter struct {
	log       *slog.Logger
	component string
}

func (w slogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range []struct {
		tag   string
		level slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}} {
		if bytes.HasPrefix(line, []byte(l.tag)) {
			level = l.level
			line = bytes.TrimSpace(line[len(l.tag):])
			break
		}
	}
	comp := w.component
	if comp == "" {
		comp = "memberlist"
	}
	line = bytes.TrimPrefix(line, []byte(comp+": "))
	w.log.Log(context.Background(), level, string(line), "component", comp)
	return len(p), nil
}
