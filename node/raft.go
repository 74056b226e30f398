package node

// The masters replicate the catalog with Raft (hashicorp/raft). Every
// change of the catalog is one goleveldb batch (catalog.write); the leader
// appends the batch to the Raft log, and once a quorum of masters holds it,
// every master applies it to its own goleveldb (catalogFSM). A change is
// decided on the leader alone, under the key's lock, against state the log
// has brought up to date (the leader waits for a barrier before it serves):
// the log carries outcomes, never conditions, so applying it needs no
// judgement and cannot diverge.
//
// The log lives in raft-wal (one fsync per append, where bbolt takes two;
// old segments are dropped whole), snapshots in raft's file store. The
// goleveldb database is itself the state: the index of the last entry
// applied is written with every applied batch (entry a), and a master that
// restarts applies only the entries after it, without loading its snapshot
// again (NoSnapshotRestoreOnStart). A snapshot is a goleveldb snapshot
// streamed out; before one is taken, everything applied is synced, so the
// log it truncates is never needed again here.

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/valyala/fasthttp"
)

// cmdBatch is the first byte of a log entry that carries a goleveldb batch
// (leveldb.Batch.Dump), the only command there is.
const cmdBatch byte = 1

// snapMagic begins every snapshot; then come the database's entries, each
// as uvarint key length, uvarint value length, key, value.
const snapMagic = "kvdb-catalog-snapshot-1\n"

// raftSegment is the size of the log's segment files (allocated whole
// when created; a catalog entry is a few hundred bytes).
const raftSegment = 4 << 20

// maxSnapEntry bounds one key or value read back from a snapshot.
const maxSnapEntry = 64 << 20

// raftApplier hands the catalog's writes to Raft.
type raftApplier struct {
	r       *raft.Raft
	timeout time.Duration
	// stopped is closed once Raft has shut down.
	stopped <-chan struct{}
}

// apply appends b to the log and waits until this master has applied it
// (after a quorum stored it).
func (p *raftApplier) apply(b *leveldb.Batch) error {
	data := b.Dump()
	cmd := make([]byte, 1+len(data))
	cmd[0] = cmdBatch
	copy(cmd[1:], data)
	f := p.r.Apply(cmd, p.timeout)
	// Raft may drop a future it has committed but not yet applied when it
	// shuts down: wait for the answer or the shutdown, whichever comes.
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-p.stopped:
		return raftError(raft.ErrRaftShutdown)
	}
	if err != nil {
		return raftError(err)
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return err
	}
	return nil
}

// errNoLeader answers a request no master can take now.
var errNoLeader = withStatus(fasthttp.StatusServiceUnavailable, errors.New("no master leads the cluster now (an election is under way, or too few masters are up); retry"))

// raftError maps a failed append to what the client is told: nothing was
// changed (not the leader, queue full), or the change may still take effect
// (the leadership was lost after the entry was sent).
func raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrEnqueueTimeout):
		return withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("this master does not lead the cluster now; nothing was changed, retry (%v)", err))
	default:
		return withStatus(fasthttp.StatusServiceUnavailable, fmt.Errorf("this master lost the leadership during the change: it may or may not take effect (%v)", err))
	}
}

// catalogFSM applies the log to the catalog.
type catalogFSM struct {
	c   *catalog
	log *slog.Logger
	// restored, when set, is called after a snapshot replaced the state.
	restored func()
}

func (f *catalogFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch writes the batches of logs, with the index of the last, in
// one goleveldb write (not synced: the log is the durable copy, and a
// restart applies again what this write lost). Entries at or below the
// applied index were applied before a restart and are skipped.
func (f *catalogFSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	c := f.c
	applied := c.applied.Load()
	last := applied
	var all leveldb.Batch
	rp := batchCollector{dst: &all}
	for i, l := range logs {
		if l.Index <= applied {
			continue
		}
		last = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		if len(l.Data) == 0 || l.Data[0] != cmdBatch {
			out[i] = fmt.Errorf("node: unknown catalog command at log index %d", l.Index)
			f.log.Error("unknown catalog command in the Raft log; skipped", "index", l.Index)
			continue
		}
		var one leveldb.Batch
		if err := one.Load(l.Data[1:]); err != nil {
			out[i] = fmt.Errorf("node: malformed catalog batch at log index %d: %w", l.Index, err)
			f.log.Error("malformed catalog batch in the Raft log; skipped", "index", l.Index, "err", err)
			continue
		}
		_ = one.Replay(&rp)
	}
	if last == applied {
		return out
	}
	all.Put([]byte{pfxApplied}, binary.BigEndian.AppendUint64(nil, last))
	err := c.writeLocal(&all, false)
	for _, k := range rp.records {
		c.cache.forget(k)
	}
	if err != nil {
		f.log.Error("applying the Raft log to the catalog failed", "index", last, "err", err)
		for i := range out {
			if out[i] == nil {
				out[i] = fmt.Errorf("node: index write: %w", err)
			}
		}
		return out
	}
	c.applied.Store(last)
	return out
}

// batchCollector copies replayed batch records into dst and notes the
// record keys (without their prefix) whose cached copies go stale.
type batchCollector struct {
	dst     *leveldb.Batch
	records [][]byte
}

func (b *batchCollector) Put(k, v []byte) {
	b.dst.Put(k, v)
	b.note(k)
}

func (b *batchCollector) Delete(k []byte) {
	b.dst.Delete(k)
	b.note(k)
}

func (b *batchCollector) note(k []byte) {
	if len(k) > 1 && k[0] == pfxKey {
		b.records = append(b.records, k[1:])
	}
}

// Snapshot syncs everything applied, then takes a goleveldb snapshot;
// Persist streams it. Raft calls it from the goroutine that applies the
// log, so the snapshot is exactly the state at the applied index.
func (f *catalogFSM) Snapshot() (raft.FSMSnapshot, error) {
	c := f.c
	if err := c.writeLocal(putOne([]byte{pfxApplied}, binary.BigEndian.AppendUint64(nil, c.applied.Load())), true); err != nil {
		return nil, fmt.Errorf("node: sync catalog for a snapshot: %w", err)
	}
	snap, err := c.db().GetSnapshot()
	if err != nil {
		return nil, fmt.Errorf("node: catalog snapshot: %w", err)
	}
	return &catalogSnapshot{snap: snap}, nil
}

// Restore replaces the catalog with a snapshot's contents (a master too
// far behind for the leader's log, or whose database was lost).
func (f *catalogFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	c := f.c
	r := bufio.NewReaderSize(rc, 256<<10)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapMagic {
		return fmt.Errorf("node: not a catalog snapshot")
	}
	if err := c.wipe(); err != nil {
		return err
	}
	var b leveldb.Batch
	n := 0
	for {
		k, v, err := readSnapEntry(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("node: restore catalog snapshot: %w", err)
		}
		b.Put(k, v)
		n++
		if len(b.Dump()) >= 4<<20 {
			if err := c.writeLocal(&b, false); err != nil {
				return fmt.Errorf("node: restore catalog snapshot: %w", err)
			}
			b.Reset()
		}
	}
	if err := c.writeLocal(&b, true); err != nil {
		return fmt.Errorf("node: restore catalog snapshot: %w", err)
	}
	idx, err := c.appliedIndex()
	if err != nil {
		return err
	}
	c.applied.Store(idx)
	c.cache.clear()
	f.log.Info("catalog restored from a snapshot", "entries", n, "applied", idx)
	if f.restored != nil {
		f.restored()
	}
	return nil
}

// readSnapEntry reads one key and value of a snapshot; io.EOF at a clean end.
func readSnapEntry(r *bufio.Reader) (k, v []byte, err error) {
	kl, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, nil, err
	}
	vl, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, nil, io.ErrUnexpectedEOF
	}
	if kl == 0 || kl > maxSnapEntry || vl > maxSnapEntry {
		return nil, nil, fmt.Errorf("entry of %d+%d bytes", kl, vl)
	}
	buf := make([]byte, kl+vl)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, nil, io.ErrUnexpectedEOF
	}
	return buf[:kl], buf[kl:], nil
}

type catalogSnapshot struct{ snap *leveldb.Snapshot }

// Persist streams every entry but this master's own carry-over mark.
func (s *catalogSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 256<<10)
	_, err := w.WriteString(snapMagic)
	it := s.snap.NewIterator(nil, nil)
	var hdr [2 * binary.MaxVarintLen64]byte
	for err == nil && it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) == 1 && k[0] == pfxCarry {
			continue
		}
		n := binary.PutUvarint(hdr[:], uint64(len(k)))
		n += binary.PutUvarint(hdr[n:], uint64(len(v)))
		if _, err = w.Write(hdr[:n]); err == nil {
			if _, err = w.Write(k); err == nil {
				_, err = w.Write(v)
			}
		}
	}
	it.Release()
	if err == nil {
		err = it.Error()
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("node: write catalog snapshot: %w", err)
	}
	return sink.Close()
}

func (s *catalogSnapshot) Release() { s.snap.Release() }

// wipe deletes every entry but the carry-over mark (before a restore).
func (c *catalog) wipe() error {
	it := c.db().NewIterator(nil, nil)
	defer it.Release()
	var b leveldb.Batch
	for it.Next() {
		if k := it.Key(); len(k) != 1 || k[0] != pfxCarry {
			b.Delete(append([]byte(nil), k...))
		}
		if b.Len() >= 10000 {
			if err := c.writeLocal(&b, false); err != nil {
				return fmt.Errorf("node: clear catalog for a restore: %w", err)
			}
			b.Reset()
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("node: clear catalog for a restore: %w", err)
	}
	return c.writeLocal(&b, false)
}

// appliedIndex reads the index of the last log entry applied (0: none).
func (c *catalog) appliedIndex() (uint64, error) {
	v, err := c.db().Get([]byte{pfxApplied}, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("node: index applied mark: %w", err)
	case len(v) != 8:
		return 0, fmt.Errorf("node: index applied mark: %d bytes", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// isEmpty reports whether the catalog holds no entry at all.
func (c *catalog) isEmpty() (bool, error) {
	it := c.db().NewIterator(nil, nil)
	defer it.Release()
	return !it.Next(), it.Error()
}

// hasCarry reports whether this master's pre-Raft index still has to be
// carried into the log.
func (c *catalog) hasCarry() (bool, error) {
	return c.db().Has([]byte{pfxCarry}, nil)
}

// carryOver appends the whole catalog to the log, in batches, so that every
// master gets the index a single master kept before Raft: the log begins
// empty, and a master added later learns only what the log (or a snapshot)
// holds. Entries are written again as they are: applying them here changes
// nothing. The mark goes last, local: a crash midway carries it all again.
func (c *catalog) carryOver(log *slog.Logger) error {
	var b leveldb.Batch
	n := 0
	err := func() error {
		snap, err := c.db().GetSnapshot()
		if err != nil {
			return err
		}
		defer snap.Release()
		it := snap.NewIterator(nil, nil)
		defer it.Release()
		for it.Next() {
			k := it.Key()
			if k[0] == pfxApplied || k[0] == pfxCarry {
				continue
			}
			b.Put(k, it.Value())
			n++
			if len(b.Dump()) >= 1<<20 {
				if err := c.write(&b, true); err != nil {
					return err
				}
				b.Reset()
			}
		}
		if err := it.Error(); err != nil {
			return err
		}
		if b.Len() > 0 {
			return c.write(&b, true)
		}
		return nil
	}()
	if err != nil {
		return fmt.Errorf("node: carry the index into the Raft log: %w", err)
	}
	if err := c.writeLocal(deleteOne([]byte{pfxCarry}), true); err != nil {
		return err
	}
	log.Info("the index kept before Raft was carried into its log", "entries", n)
	return nil
}

func putOne(k, v []byte) *leveldb.Batch {
	var b leveldb.Batch
	b.Put(k, v)
	return &b
}

func deleteOne(k []byte) *leveldb.Batch {
	var b leveldb.Batch
	b.Delete(k)
	return &b
}

// raftTimings are the election timings for a gossip profile: a leader's
// death is noticed within one to two heartbeat timeouts, then one round
// elects the next.
func raftTimings(profile string) (heartbeat, lease time.Duration) {
	switch profile {
	case ProfileLocal:
		return 200 * time.Millisecond, 100 * time.Millisecond
	case ProfileTest:
		// Tests run with -race on a loaded machine: a little slack.
		return 400 * time.Millisecond, 200 * time.Millisecond
	default:
		return 500 * time.Millisecond, 250 * time.Millisecond
	}
}

// raftNode is a master's Raft: its stores, transport and the Raft itself.
type raftNode struct {
	r     *raft.Raft
	trans *raft.NetworkTransport
	logs  *wal.WAL
	meta  *metadb.BoltMetaDB
	snaps *raft.FileSnapshotStore
	addr  string // advertised transport address
	// stopped is closed when close has shut Raft down.
	stopped   chan struct{}
	closeOnce sync.Once
	// fresh is true when this master had no Raft state at start.
	fresh     bool
	heartbeat time.Duration
}

// raftStream is the transport's stream layer: a TCP listener that
// advertises a given address (the bind address may be unspecified or
// port 0). With a cluster secret, every connection opens with a
// challenge: the accepting master sends a random nonce, the dialling one
// answers with its HMAC under a key derived from the secret, and a wrong
// answer closes the connection before any Raft message is read (the
// messages themselves travel in the clear: keep the Raft port on the
// private network).
type raftStream struct {
	net.Listener
	adv net.Addr
	key []byte // nil: no secret
}

const raftNonceLen = 32

func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil || s.key == nil {
		return c, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	nonce := make([]byte, raftNonceLen)
	if _, err := io.ReadFull(c, nonce); err != nil {
		c.Close()
		return nil, fmt.Errorf("node: raft handshake with %s: %w", addr, err)
	}
	if _, err := c.Write(raftMAC(s.key, nonce)); err != nil {
		c.Close()
		return nil, fmt.Errorf("node: raft handshake with %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// Accept returns connections whose first read checks the peer's answer
// to the challenge (so a slow peer never holds up the accept loop).
func (s *raftStream) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil || s.key == nil {
		return c, err
	}
	return &raftServerConn{Conn: c, key: s.key}, nil
}

// raftServerConn is an accepted connection that runs the challenge before
// its first read.
type raftServerConn struct {
	net.Conn
	key  []byte
	once sync.Once
	err  error
}

func (c *raftServerConn) Read(p []byte) (int, error) {
	c.once.Do(func() {
		_ = c.Conn.SetDeadline(time.Now().Add(10 * time.Second))
		defer c.Conn.SetDeadline(time.Time{})
		nonce := make([]byte, raftNonceLen)
		if _, err := rand.Read(nonce); err != nil {
			c.err = err
			return
		}
		if _, err := c.Conn.Write(nonce); err != nil {
			c.err = err
			return
		}
		got := make([]byte, sha256.Size)
		if _, err := io.ReadFull(c.Conn, got); err != nil {
			c.err = err
			return
		}
		if !hmac.Equal(got, raftMAC(c.key, nonce)) {
			c.err = errors.New("node: raft connection without the cluster secret refused")
		}
	})
	if c.err != nil {
		c.Conn.Close()
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// raftMAC answers a challenge.
func raftMAC(key, nonce []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(nonce)
	return h.Sum(nil)
}

// raftKey derives the transport's key from the cluster secret (nil
// without one).
func raftKey(secret []byte) []byte {
	if len(secret) == 0 {
		return nil
	}
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("kvdb raft transport v1"))
	return h.Sum(nil)
}

func (s *raftStream) Addr() net.Addr { return s.adv }

// listenRaft binds the Raft transport's address and works out the address
// the other masters dial.
func listenRaft(bind, advHost string, secret []byte) (*raftStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("node: raft listen %s: %w", bind, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	adv, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(advHost, strconv.Itoa(port)))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("node: raft advertise: %w", err)
	}
	return &raftStream{Listener: ln, adv: adv, key: raftKey(secret)}, nil
}

// openRaft starts this master's Raft over the catalog: the log and
// snapshots under dir, the transport on stream.
// A single master (alone) with no state forms its configuration of one
// before Raft starts.
func openRaft(dir, name, profile string, alone bool, stream *raftStream, fsm *catalogFSM, notify chan bool, log *slog.Logger) (*raftNode, error) {
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{log: log, component: "raft"}, DisableTime: true})
	if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o755); err != nil {
		return nil, fmt.Errorf("node: raft dir: %w", err)
	}
	// The log's metadata store is ours to close: WAL.Close leaves it
	// open (and its file locked), so a master restarted in the same
	// process could not open it again.
	meta := &metadb.BoltMetaDB{}
	logs, err := wal.Open(filepath.Join(dir, "wal"), wal.WithLogger(hl), wal.WithMetaStore(meta), wal.WithSegmentSize(raftSegment))
	if err != nil {
		_ = meta.Close()
		return nil, fmt.Errorf("node: open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl)
	if err != nil {
		logs.Close()
		meta.Close()
		return nil, fmt.Errorf("node: open raft snapshots: %w", err)
	}
	fresh, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		logs.Close()
		meta.Close()
		return nil, fmt.Errorf("node: raft state: %w", err)
	}
	fresh = !fresh
	// The database is the state: restore a snapshot at start only when it
	// is behind the newest one (it was lost or damaged).
	restore := false
	if list, err := snaps.List(); err == nil && len(list) > 0 && list[0].Index > fsm.c.applied.Load() {
		restore = true
	}
	hb, lease := raftTimings(profile)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(name)
	rc.Logger = hl
	rc.HeartbeatTimeout = hb
	rc.ElectionTimeout = hb
	rc.LeaderLeaseTimeout = lease
	rc.NotifyCh = notify
	// A snapshot streams the whole catalog (every record): take one per
	// quarter million entries (tens of MB of log), not every 8192.
	rc.SnapshotThreshold = 1 << 18
	rc.SnapshotInterval = 5 * time.Minute
	rc.NoSnapshotRestoreOnStart = !restore
	if restore {
		if err := fsm.c.wipe(); err != nil {
			logs.Close()
			meta.Close()
			return nil, err
		}
		fsm.c.applied.Store(0)
	}
	trans := raft.NewNetworkTransportWithLogger(stream, 4, 10*time.Second, hl)
	if fresh && alone {
		self := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: trans.LocalAddr()}}}
		if err := raft.BootstrapCluster(rc, logs, logs, snaps, trans, self); err != nil {
			trans.Close()
			logs.Close()
			meta.Close()
			return nil, fmt.Errorf("node: raft bootstrap: %w", err)
		}
		fresh = false
		log.Info("raft configuration bootstrapped", "masters", 1)
	}
	r, err := raft.NewRaft(rc, fsm, logs, logs, snaps, trans)
	if err != nil {
		trans.Close()
		logs.Close()
		meta.Close()
		return nil, fmt.Errorf("node: start raft: %w", err)
	}
	return &raftNode{stopped: make(chan struct{}), r: r, trans: trans, logs: logs, meta: meta, snaps: snaps, addr: stream.adv.String(), fresh: fresh, heartbeat: hb}, nil
}

// close stops Raft, releases the writes waiting for it, and closes its
// stores.
func (n *raftNode) close() {
	n.closeOnce.Do(func() {
		_ = n.r.Shutdown().Error()
		close(n.stopped)
		_ = n.trans.Close()
		_ = n.logs.Close()
		_ = n.meta.Close()
	})
}
