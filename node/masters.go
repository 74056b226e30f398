package node

// Several masters, one catalog: masters find each other by gossip (each
// publishes its Raft address), bootstrap one Raft configuration once
// BootstrapExpect of them see each other, and from then on the leader adds
// masters that join and removes those gone for longer than
// RemoveDeadMasterAfter. The leader alone serves clients and runs the
// background work; a follower redirects every client request to it.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
)

// leads reports whether this master leads and has caught up with the log:
// it serves clients and runs the background work only then.
func (m *Master) leads() bool { return m.leading.Load() }

// watchLeadership follows Raft's leadership notifications: on winning, the
// master catches up (leaderInit) before it serves; on losing, it stops at
// once.
func (m *Master) watchLeadership() {
	defer m.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var lead bool
		select {
		case <-m.stop:
			return
		case lead = <-m.raftNotify:
		case <-t.C:
			// Notifications only say what changed; this catches an init
			// that failed (it is tried again) and is cheap.
			lead = m.raft.r.State() == raft.Leader
			if lead == m.leading.Load() {
				m.publishMeta()
				continue
			}
		}
		if lead {
			m.leaderInit()
		} else if m.leading.Swap(false) {
			m.log.Info("this master no longer leads")
			m.publishMeta()
		}
	}
}

// leaderInit brings a new leader up to date before it serves: every entry
// of earlier terms applied (barrier), a cold cache, the version counter
// above every version handed out, the previous leader's writes in flight
// abandoned, then serving.
func (m *Master) leaderInit() {
	if m.leading.Load() {
		return
	}
	if err := m.raft.r.Barrier(30 * time.Second).Error(); err != nil {
		m.log.Warn("leadership won, but the log could not be caught up; not serving", "err", err)
		return
	}
	c := m.cat
	c.cache.clear()
	if err := c.resetVersions(); err != nil {
		m.log.Error("leadership won, but the version ceiling could not be read; not serving", "err", err)
		return
	}
	// The intents this master holds come from its previous run (or from
	// before it last started) until it first leads: those writes are cut
	// off, and their copies become garbage. Once it has led in this run,
	// they may belong to its own writes still in flight from an earlier
	// term, which may yet commit: they are left alone (those that failed
	// when the leadership was lost leave orphans that verify reports).
	if !m.promoted.Load() {
		if err := c.promotePending(); err != nil {
			m.log.Warn("leadership won, but the previous run's writes in flight could not be abandoned; not serving", "err", err)
			return
		}
		m.promoted.Store(true)
	}
	if carry, err := c.hasCarry(); err == nil && carry {
		if err := c.carryOver(m.log); err != nil {
			m.log.Error("leadership won, but the index could not be carried into the Raft log; not serving", "err", err)
			return
		}
	}
	drains, err := c.drains()
	if err != nil {
		m.log.Error("leadership won, but the drains could not be read; not serving", "err", err)
		return
	}
	m.drains.Store(&drains)
	m.mergeMu.Lock()
	clear(m.merged)
	m.mergeMu.Unlock()
	m.lease.expire()
	if f := m.raft.r.GetConfiguration(); f.Error() == nil {
		m.votersN.Store(int64(countVoters(f.Configuration())))
	}
	if m.raft.r.State() != raft.Leader {
		return
	}
	m.ledFrom.Store(c.lastIssued())
	m.leading.Store(true)
	_, term := m.raftTerm()
	m.log.Info("this master leads", "term", term, "applied", c.applied.Load())
	m.publishMeta()
	m.refreshView()
	m.kickRepair()
	m.kickGC()
}

// countVoters is how many voters conf has.
func countVoters(conf raft.Configuration) int {
	n := 0
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// raftTerm returns the current leader's ID and this master's term.
func (m *Master) raftTerm() (raft.ServerID, uint64) {
	_, id := m.raft.r.LeaderWithID()
	var term uint64
	fmt.Sscan(m.raft.r.Stats()["term"], &term)
	return id, term
}

// publishMeta gossips this master's Raft address, leadership and applied
// index (volumes send their writes' commits to the leader).
func (m *Master) publishMeta() {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	meta := m.meta
	meta.Leader = m.leading.Load()
	meta.Applied = m.cat.applied.Load()
	if err := m.gossip.setMeta(meta); err != nil {
		m.log.Warn("publishing the master's metadata", "err", err)
	}
}

// gossipMasters returns the masters gossip sees alive that publish a Raft
// address, this one included.
func (m *Master) gossipMasters() map[string]Member {
	out := map[string]Member{}
	for _, mem := range m.gossip.snapshot() {
		if mem.Role == RoleMaster && mem.Raft != "" {
			out[mem.Name] = mem
		}
	}
	return out
}

// bootstrap forms the first Raft configuration: at once for a single
// master, else once BootstrapExpect masters see each other and none of
// them leads already (a master that joins an existing cluster waits to be
// added by its leader). A master with Raft state never bootstraps.
func (m *Master) bootstrap() {
	defer m.wg.Done()
	if !m.raft.fresh {
		return
	}
	expect := m.cfg.BootstrapExpect
	runEvery(m.stop, 200*time.Millisecond, m.bootKick, func() {
		if !m.raft.fresh {
			return
		}
		if m.raft.r.LastIndex() > 0 {
			m.raft.fresh = false // added by a leader
			return
		}
		var servers []raft.Server
		if expect <= 1 {
			servers = []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(m.cfg.Name), Address: raft.ServerAddress(m.raft.addr)}}
		} else {
			masters := m.gossipMasters()
			for _, mem := range masters {
				if mem.Leader {
					return
				}
				servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(mem.Name), Address: raft.ServerAddress(mem.Raft)})
			}
			if len(servers) < expect {
				return
			}
		}
		sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
		err := m.raft.r.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
		if err != nil && err != raft.ErrCantBootstrap {
			m.log.Warn("raft bootstrap failed; retrying", "err", err)
			return
		}
		m.raft.fresh = false
		m.log.Info("raft configuration bootstrapped", "masters", len(servers))
	})
}

// reconcileMasters, on the leader, adds the masters gossip sees that the
// configuration lacks (or whose address changed), and removes those gone
// for longer than RemoveDeadMasterAfter, never leaving fewer voters than
// BootstrapExpect.
func (m *Master) reconcileMasters() {
	if !m.leads() {
		return
	}
	f := m.raft.r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	conf := f.Configuration()
	in := map[string]raft.Server{}
	for _, s := range conf.Servers {
		in[string(s.ID)] = s
	}
	voters := countVoters(conf)
	m.votersN.Store(int64(voters))
	live := m.gossipMasters()
	for name, mem := range live {
		if s, ok := in[name]; ok && string(s.Address) == mem.Raft {
			continue
		}
		if mem.Leader {
			// It leads a Raft of its own (a master started with another
			// --bootstrap-expect): two histories cannot be merged.
			m.log.Error("a master that leads another raft configuration is in this cluster's gossip; not adding it (start it with an empty directory and the same --bootstrap-expect)", "master", name)
			continue
		}
		if err := m.raft.r.AddVoter(raft.ServerID(name), raft.ServerAddress(mem.Raft), 0, 10*time.Second).Error(); err != nil {
			m.log.Warn("adding a master to the raft configuration", "master", name, "err", err)
			continue
		}
		m.log.Info("master added to the raft configuration", "master", name, "raft", mem.Raft)
	}
	now := time.Now()
	m.goneMu.Lock()
	defer m.goneMu.Unlock()
	for name := range m.goneSince {
		if _, ok := live[name]; ok {
			delete(m.goneSince, name)
		}
	}
	for name := range in {
		if _, ok := live[name]; ok || name == m.cfg.Name {
			continue
		}
		since, ok := m.goneSince[name]
		if !ok {
			m.goneSince[name] = now
			continue
		}
		if now.Sub(since) < m.cfg.RemoveDeadMasterAfter || voters-1 < max(m.cfg.BootstrapExpect, 1) {
			continue
		}
		if err := m.raft.r.RemoveServer(raft.ServerID(name), 0, 10*time.Second).Error(); err != nil {
			m.log.Warn("removing a dead master from the raft configuration", "master", name, "err", err)
			continue
		}
		voters--
		delete(m.goneSince, name)
		m.log.Warn("dead master removed from the raft configuration", "master", name, "gone_for", now.Sub(since).Round(time.Second))
	}
}

// mastersLoop keeps the configuration in step with gossip, on the leader.
func (m *Master) mastersLoop() {
	defer m.wg.Done()
	runEvery(m.stop, time.Second, nil, m.reconcileMasters)
}

// leaderHTTP returns the leader's HTTP address, as gossip reports it.
func (m *Master) leaderHTTP() (string, bool) {
	_, id := m.raft.r.LeaderWithID()
	if id == "" {
		return "", false
	}
	mem, ok := m.gossip.member(string(id))
	if !ok || mem.HTTP == "" {
		return "", false
	}
	return mem.HTTP, true
}

// headerNotLeader marks a 503 of a master that does not lead (nothing was
// done: the request may be sent again, to the leader once there is one).
const headerNotLeader = "X-Kvdb-Not-Leader"

// localAdmin lists the endpoints every master answers itself, leader or
// not.
var localAdmin = [][]byte{
	[]byte("/" + ReservedPrefix + "live"),
	[]byte("/" + ReservedPrefix + "ready"),
	[]byte("/" + ReservedPrefix + "cluster"),
	[]byte("/" + ReservedPrefix + "metrics"),
	[]byte("/" + ReservedPrefix + "status"),
	[]byte("/" + ReservedPrefix + "debug/pprof/"),
}

// serveHere reports whether this master answers the request itself; when
// not, it has answered: a redirect to the leader (307 for a write, 302 for
// a read, so curl -L works against any master), or 503 with no leader.
// A read on the leader needs the lease (a deposed leader that does not
// know it yet must not answer from stale state).
func (m *Master) serveHere(ctx *fasthttp.RequestCtx, path []byte) bool {
	read := ctx.IsGet() || ctx.IsHead()
	if m.leading.Load() {
		if !read || m.votersN.Load() <= 1 || m.lease.fresh() {
			return true
		}
		if err := m.lease.renew(m.raft.r); err == nil {
			return true
		}
		ctx.Response.Header.Set("Retry-After", "1")
		replyText(ctx, fasthttp.StatusServiceUnavailable, "this master could not confirm that it still leads the cluster; retry")
		return false
	}
	for _, p := range localAdmin {
		if bytes.Equal(path, p) || (p[len(p)-1] == '/' && bytes.HasPrefix(path, p)) {
			return true
		}
	}
	leader, ok := m.otherLeader(ctx)
	if !ok {
		replyError(ctx, errNoLeader)
		return false
	}
	status := fasthttp.StatusTemporaryRedirect
	if read {
		status = fasthttp.StatusFound
	}
	loc := make([]byte, 0, 8+len(leader)+len(ctx.RequestURI()))
	loc = append(loc, "http://"...)
	loc = append(loc, leader...)
	loc = append(loc, ctx.RequestURI()...)
	ctx.Response.Header.SetBytesV("Location", loc)
	replyText(ctx, status, "this master follows; the leader is "+leader)
	if !read {
		// The body of a write was not read: the connection cannot carry
		// another request.
		ctx.SetConnectionClose()
	}
	return false
}

// otherLeader returns the HTTP address of the master that leads, when it
// is another one; when there is none to send the request to, it marks the
// response as from a master that does not lead (Retry-After,
// X-Kvdb-Not-Leader) for the caller's 503.
func (m *Master) otherLeader(ctx *fasthttp.RequestCtx) (string, bool) {
	leader, ok := m.leaderHTTP()
	if ok && leader != m.meta.HTTP {
		return leader, true
	}
	ctx.Response.Header.Set("Retry-After", "1")
	ctx.Response.Header.Set(headerNotLeader, "1")
	return "", false
}

// followerExpect answers, on a follower, a write that waits for 100
// Continue: 307 to the leader, before the body is sent, or 503 with no
// leader.
func (m *Master) followerExpect(ctx *fasthttp.RequestCtx) int {
	leader, ok := m.otherLeader(ctx)
	if !ok {
		ctx.Response.SetBodyString(errNoLeader.Error() + "\n")
		return fasthttp.StatusServiceUnavailable
	}
	ctx.Response.Header.Set("Location", "http://"+leader+string(ctx.RequestURI()))
	ctx.Response.SetBodyString("this master follows; the leader is " + leader + "\n")
	return fasthttp.StatusTemporaryRedirect
}

// readLease lets the leader answer reads from its own state: it holds
// while a quorum confirmed the leadership (VerifyLeader) less than half a
// heartbeat timeout ago, counted from when the confirmation was asked for;
// no other master can have been elected within that time.
type readLease struct {
	dur time.Duration
	// at is the monotonic time (ns) the last confirmed round was asked
	// for; 0 when none holds.
	at atomic.Int64
	mu sync.Mutex
}

var monoStart = time.Now()

func monoNow() int64 { return int64(time.Since(monoStart)) }

func (l *readLease) fresh() bool {
	at := l.at.Load()
	return at > 0 && monoNow()-at < int64(l.dur)
}

func (l *readLease) expire() { l.at.Store(0) }

// renew confirms the leadership with a quorum; readers waiting at once
// share one round.
func (l *readLease) renew(r *raft.Raft) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fresh() {
		return nil
	}
	start := monoNow()
	if err := r.VerifyLeader().Error(); err != nil {
		return err
	}
	l.at.Store(start)
	return nil
}

// leaseLoop keeps the read lease fresh on the leader, so that reads seldom
// wait for a round.
func (m *Master) leaseLoop() {
	defer m.wg.Done()
	runEvery(m.stop, m.lease.dur/3, nil, func() {
		if m.leading.Load() && m.votersN.Load() > 1 {
			_ = m.lease.renew(m.raft.r)
		}
	})
}

// mastersInfo describes the masters' Raft for /_kvdb/cluster.
func (m *Master) mastersInfo() *client.MastersInfo {
	r := m.raft.r
	info := &client.MastersInfo{State: r.State().String(), Applied: m.cat.applied.Load()}
	_, id := r.LeaderWithID()
	info.Leader = string(id)
	info.LeaderAddr, _ = m.leaderHTTP()
	st := r.Stats()
	fmt.Sscan(st["term"], &info.Term)
	fmt.Sscan(st["commit_index"], &info.Commit)
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			mi := client.MasterInfo{Name: string(s.ID), Raft: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: s.ID == id}
			if mem, ok := m.gossip.member(mi.Name); ok {
				mi.Addr, mi.Alive, mi.Applied = mem.HTTP, true, mem.Applied
			}
			if mi.Name == m.cfg.Name {
				mi.Addr, mi.Alive, mi.Applied = m.meta.HTTP, true, info.Applied
			}
			info.Servers = append(info.Servers, mi)
		}
	}
	return info
}

// awaitLeadership waits until this master serves, or for at most d.
func (m *Master) awaitLeadership(d time.Duration) {
	deadline := time.Now().Add(d)
	for !m.leading.Load() && time.Now().Before(deadline) {
		select {
		case <-m.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// markCarry marks, before Raft first starts over it, an index kept by a
// single master before Raft: the first leader carries it into the log.
func (m *Master) markCarry() error {
	applied, err := m.cat.appliedIndex()
	if err != nil || applied > 0 {
		return err
	}
	if _, err := os.Stat(filepath.Join(m.cfg.Dir, "raft")); err == nil {
		return nil // Raft ran here before
	}
	empty, err := m.cat.isEmpty()
	if err != nil || empty {
		return err
	}
	return m.cat.writeLocal(putOne([]byte{pfxCarry}, nil), true)
}

// afterRestore reloads what the master keeps beside the catalog after a
// snapshot replaced it.
func (m *Master) afterRestore() {
	if drains, err := m.cat.drains(); err == nil {
		m.drains.Store(&drains)
	}
}

// Leads reports whether this master leads the cluster and serves clients.
func (m *Master) Leads() bool { return m.leads() }

// LeaderAddr is the HTTP address of the master that leads (this one's own
// while none is known).
func (m *Master) LeaderAddr() string {
	if m.leads() {
		return m.Addr()
	}
	if addr, ok := m.leaderHTTP(); ok {
		return addr
	}
	return m.Addr()
}
