package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/ring"
	"github.com/kvdb/kvdb/store"
)

// VolumeConfig configures a volume server.
//
// Start from DefaultVolumeConfig and change what differs; as with
// MasterConfig, a field left zero in a config built from scratch takes the
// same default (but for the connection caps).
type VolumeConfig struct {
	// Name is the volume's stable identity in the cluster; the master records
	// key locations by name, so a volume may change address and keep its
	// data. Empty: the name saved in DIR/NAME, or a new random one.
	Name string
	// Addr is the HTTP listen address. Default ":3001".
	Addr string
	// Advertise is the HOST[:PORT] clients are redirected to. Empty: the
	// listen host if it is specific, else the gossip advertise host.
	Advertise string
	// Dir is the data directory (blobs and the volume's index).
	// DefaultVolumeConfig sets "./data/volume"; a config built from scratch
	// must name one.
	Dir string
	// Gossip says how to join the cluster. Default DefaultGossipConfig().
	Gossip GossipConfig
	// Secret is the cluster secret (see MasterConfig.Secret): when set,
	// gossip is encrypted with a key derived from it, and the volume serves
	// only reads and internal requests signed with it (403 otherwise).
	Secret []byte
	// Capacity caps the bytes this volume holds (0: the filesystem's size).
	Capacity int64
	// Reserve is disk space, in bytes, writes must leave free.
	Reserve int64
	// Weight is the volume's share of the ring relative to the others: a
	// volume of weight 2 is given about twice the keys of one of weight 1.
	// 0 derives it from the capacity: one share per TiB, at least 1.
	Weight int
	// IdleTimeout cuts a connection that moves no byte for this long.
	// Default 60 s.
	IdleTimeout time.Duration
	// MetaInterval is how often free space is re-published by gossip.
	// Default 2 s.
	MetaInterval time.Duration
	// ScrubInterval is how often a scrub pass starts: every value on disk
	// is read again and checked against its checksum; a corrupt copy is
	// quarantined (never served again) and the master makes a new one from
	// a healthy replica (see scrub.go). An interrupted pass resumes after a
	// restart. Default 24 h; Never disables scrubbing.
	ScrubInterval time.Duration
	// ScrubRate caps the bytes per second a scrub pass reads, so that it
	// leaves the disk to clients: a pass over D bytes takes D/ScrubRate
	// (1 TB at 50 MiB/s: about 5.3 hours). Default 50 MiB/s; Unlimited
	// means no cap.
	ScrubRate int64
	// Pprof serves Go's profiles under /_kvdb/debug/pprof/ (off by default).
	Pprof bool
	// MaxConns and MaxConnsPerIP cap the connections open at once, in
	// all and from one address; 0 means no cap (a config built from
	// scratch has none). Over the caps, 503 or 429 and the connection
	// closed. DefaultVolumeConfig sets MaxConns to DefaultMaxConns and
	// leaves MaxConnsPerIP 0: the master's many connections come from one
	// address, and so do the clients behind one proxy.
	MaxConns      int
	MaxConnsPerIP int
	// Logger receives the volume's logs. Default: discard.
	Logger *slog.Logger

	// lacks names internal endpoints (the path after /_kvdb/) that this
	// volume answers as a build older than them does: 404 "no such admin
	// endpoint". Tests of a cluster that mixes builds set it.
	lacks []string
}

// noAdminEndpoint is a volume's answer (404) to an internal endpoint it
// does not have; lacksEndpoint recognises it, so it must not change.
const noAdminEndpoint = "no such admin endpoint"

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate reports whether the configuration can be used.
func (c VolumeConfig) Validate() error {
	if c.Dir == "" {
		return errors.New("volume: no data directory")
	}
	if c.Name != "" && !nameRE.MatchString(c.Name) {
		return fmt.Errorf("volume: name %q: want 1-63 of [A-Za-z0-9._-]", c.Name)
	}
	if c.Capacity < 0 || c.Reserve < 0 {
		return errors.New("volume: capacity and reserve must not be negative")
	}
	if c.Weight < 0 || c.Weight > ring.MaxWeight {
		return fmt.Errorf("volume: weight %d: want 0 to %d", c.Weight, ring.MaxWeight)
	}
	if c.MaxConns < 0 || c.MaxConnsPerIP < 0 {
		return errors.New("volume: connection caps must not be negative (0: no cap)")
	}
	if err := validateSecret("volume", c.Secret, c.Gossip.Secret); err != nil {
		return err
	}
	return c.Gossip.Validate()
}

// DefaultVolumeConfig returns a volume's defaults, every field filled:
// what kvdb volume runs with when no flag says otherwise. Name, Advertise
// and Weight stay empty on purpose: each is derived at start (the name
// saved in Dir, the listen or gossip host, one share per TiB).
func DefaultVolumeConfig() VolumeConfig {
	return VolumeConfig{
		Addr:          ":3001",
		Dir:           "./data/volume",
		Gossip:        DefaultGossipConfig(),
		IdleTimeout:   60 * time.Second,
		MetaInterval:  2 * time.Second,
		ScrubInterval: 24 * time.Hour,
		ScrubRate:     50 << 20,
		MaxConns:      DefaultMaxConns,
		MaxConnsPerIP: 0,
		Logger:        slog.New(slog.DiscardHandler),
	}
}

// withDefaults fills the fields a config built from scratch left zero
// with DefaultVolumeConfig's values (Dir and the connection caps stay as
// they are), then derives the gossip bind address and key.
func (c VolumeConfig) withDefaults() VolumeConfig {
	d := DefaultVolumeConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MetaInterval <= 0 {
		c.MetaInterval = d.MetaInterval
	}
	if c.ScrubInterval == 0 {
		c.ScrubInterval = d.ScrubInterval
	}
	if c.ScrubRate == 0 {
		c.ScrubRate = d.ScrubRate
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Gossip.Bind == "" {
		c.Gossip.Bind = defaultGossipBind(c.Addr)
	}
	if len(c.Secret) > 0 {
		c.Gossip.Secret = gossipKey(c.Secret)
	}
	return c
}

// defaultGossipBind is the HTTP host with the HTTP port + 1000 (port 0 stays 0).
func defaultGossipBind(httpAddr string) string { return defaultPortPlus(httpAddr, 1000) }

// defaultPortPlus is httpAddr's host with its port plus delta (port 0
// stays 0: picked at bind).
func defaultPortPlus(httpAddr string, delta int) string {
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return ":0"
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return net.JoinHostPort(host, "0")
	}
	return net.JoinHostPort(host, strconv.Itoa(p+delta))
}

// Volume is a volume server: it keeps values on local disk and serves them.
type Volume struct {
	cfg      VolumeConfig
	log      *slog.Logger
	name     string
	httpAddr string // advertised
	store    *store.Store
	http     *httpServer
	gossip   *membership
	client   *fasthttp.Client
	vc       *volumeClient // client, speaking other volumes' internal API
	// tickets are the write tickets this volume has taken (coordinate.go).
	tickets usedTickets
	sec     *signer // nil without a cluster secret
	// metrics counts requests, blob writes and scrubs (metrics.go).
	metrics *volumeMetrics

	draining atomic.Bool
	metaKick chan struct{}
	// forceMeta makes the next meta loop round publish even a small change.
	forceMeta atomic.Bool
	scrub     scrubState

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewVolume opens the store, starts serving HTTP and joins the cluster.
func NewVolume(cfg VolumeConfig) (*Volume, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	v := &Volume{cfg: cfg, stop: make(chan struct{}), metaKick: make(chan struct{}, 1), client: newClient(cfg.IdleTimeout), sec: newSigner(cfg.Secret)}
	v.vc = &volumeClient{hc: v.client, sec: v.sec}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	name, err := volumeName(cfg.Dir, cfg.Name)
	if err != nil {
		return nil, err
	}
	v.name = name
	v.log = cfg.Logger.With("node", name)
	v.store, err = store.Open(store.Config{Dir: cfg.Dir, Capacity: cfg.Capacity, Reserve: cfg.Reserve, Logger: v.log})
	if err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	v.metrics = newVolumeMetrics()
	// Listen now (gossip advertises the port), serve only once everything
	// the handlers touch exists.
	v.http, err = listenHTTP(cfg.Addr, v.metrics.instrument(v.handle), v.expectWrite, cfg.IdleTimeout, httpLimits{MaxConns: cfg.MaxConns, MaxConnsPerIP: cfg.MaxConnsPerIP}, v.log)
	if err != nil {
		v.store.Close()
		return nil, fmt.Errorf("volume: listen %s: %w", cfg.Addr, err)
	}
	gcfg := cfg.Gossip
	if gcfg.Advertise == "" && cfg.Advertise != "" {
		h, _, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			h = cfg.Advertise
		}
		gcfg.Advertise = h
	}
	ghost, _, _ := net.SplitHostPort(gcfg.Bind)
	host, err := v.advertiseHTTPHost(gcfg.Advertise, ghost)
	if err != nil {
		v.http.kill()
		v.store.Close()
		return nil, err
	}
	_, port, _ := net.SplitHostPort(v.http.addr())
	if _, p, err := net.SplitHostPort(cfg.Advertise); err == nil {
		port = p
	}
	v.httpAddr = net.JoinHostPort(host, port)
	v.sec.setSelf(v.httpAddr)
	v.gossip, err = startMembership(name, gcfg, v.meta(), v.log)
	if err != nil {
		v.http.kill()
		v.store.Close()
		return nil, fmt.Errorf("volume: %w", err)
	}
	v.wg.Add(1)
	go v.metaLoop()
	v.startScrub()
	v.http.serve()
	v.log.Info("volume started", "http", v.http.addr(), "advertise", v.httpAddr, "gossip", v.gossip.addr(), "dir", cfg.Dir)
	return v, nil
}

func (v *Volume) advertiseHTTPHost(gossipAdvertise, gossipHost string) (string, error) {
	if v.cfg.Advertise != "" {
		if h, _, err := net.SplitHostPort(v.cfg.Advertise); err == nil {
			return h, nil
		}
		return v.cfg.Advertise, nil
	}
	h, _, _ := net.SplitHostPort(v.cfg.Addr)
	if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
		return h, nil
	}
	return advertiseHost(gossipAdvertise, gossipHost)
}

// volumeName returns the name saved in dir, saving want (or a new one) on
// first start. A different name for existing data is refused: the master
// knows the data by the old name.
func volumeName(dir, want string) (string, error) {
	path := filepath.Join(dir, "NAME")
	b, err := os.ReadFile(path)
	if err == nil {
		saved := string(bytes.TrimSpace(b))
		if want != "" && want != saved {
			return "", fmt.Errorf("volume: %s belongs to volume %q, not %q", dir, saved, want)
		}
		return saved, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("volume: %w", err)
	}
	if want == "" {
		var r [4]byte
		_, _ = rand.Read(r[:])
		want = "vol-" + hex.EncodeToString(r[:])
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(want+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("volume: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("volume: %w", err)
	}
	return want, nil
}

func (v *Volume) meta() nodeMeta {
	st := v.store.Stats()
	w := v.cfg.Weight
	if w == 0 {
		w = int(min(max((st.Total+1<<39)>>40, 1), ring.MaxWeight))
	}
	return nodeMeta{Role: RoleVolume, HTTP: v.httpAddr, Free: st.Free, Total: st.Total, Keys: st.Keys, Weight: w, Draining: v.draining.Load(), FS: st.FS}
}

// metaLoop re-publishes free space when it has moved noticeably, and the
// key count when it changed; memberlist should not be asked to re-gossip
// metadata more than every few seconds. A change of draining state is
// published at once.
func (v *Volume) metaLoop() {
	defer v.wg.Done()
	last := v.meta()
	runEvery(v.stop, v.cfg.MetaInterval, v.metaKick, func() {
		m := v.meta()
		diff := m.Free - last.Free
		if diff < 0 {
			diff = -diff
		}
		force := v.forceMeta.Swap(false)
		if !force && diff < 16<<20 && diff*100 < last.Total && m.Total == last.Total && m.Keys == last.Keys && m.Draining == last.Draining {
			return
		}
		if err := v.gossip.setMeta(m); err != nil {
			v.log.Warn("publish free space", "err", err)
			return
		}
		last = m
	})
}

// Drain asks the master to move every value off this volume, and waits
// until the volume holds none or ctx ends. The volume keeps serving reads
// (and the master's copies) meanwhile; new values are placed elsewhere. It
// is what a graceful leave does before Close, so that no key drops below
// its replica count.
func (v *Volume) Drain(ctx context.Context) error {
	if !v.draining.Swap(true) {
		v.log.Info("draining: the master moves this volume's values elsewhere", "keys", v.store.Stats().Keys)
		v.kickMeta()
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		n := v.store.Stats().Keys
		if n == 0 {
			v.log.Info("drained")
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("volume: drain: %d values still here: %w", n, ctx.Err())
		case <-v.stop:
			return errors.New("volume: drain: closed")
		case <-t.C:
		}
	}
}

// kickMeta makes the meta loop look at (and publish) the metadata now.
func (v *Volume) kickMeta() {
	select {
	case v.metaKick <- struct{}{}:
	default:
	}
}

// Name is the volume's stable name.
func (v *Volume) Name() string { return v.name }

// Addr is the address the HTTP server listens on.
func (v *Volume) Addr() string { return v.http.addr() }

// GossipAddr is the gossip address others can join through.
func (v *Volume) GossipAddr() string { return v.gossip.addr() }

// Close leaves the cluster gracefully, finishes running requests and closes
// the store. It is safe to call more than once.
func (v *Volume) Close() error {
	var err error
	v.closeOnce.Do(func() {
		close(v.stop)
		v.gossip.leave(2 * time.Second)
		v.http.shutdown(10 * time.Second)
		v.wg.Wait()
		err = v.store.Close()
		v.log.Info("volume stopped")
	})
	return err
}

// Kill stops the volume as a crash would: no goodbye to the cluster, every
// connection cut. The store is closed so the directory can be reopened.
func (v *Volume) Kill() {
	v.closeOnce.Do(func() {
		close(v.stop)
		v.gossip.shutdown()
		v.http.kill()
		v.wg.Wait()
		_ = v.store.Close()
	})
}

func (v *Volume) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.URI().PathOriginal()
	if rest, ok := bytes.CutPrefix(path, []byte("/"+ReservedPrefix)); ok {
		v.handleInternal(ctx, rest)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed on a volume; write through the master")
		return
	}
	v.serveBlob(ctx, path)
}

// handleInternal serves the master-facing API under /_kvdb/, and the
// client-facing write endpoint (a ticket, not a signature, admits those).
func (v *Volume) handleInternal(ctx *fasthttp.RequestCtx, rest []byte) {
	if k, ok := bytes.CutPrefix(rest, []byte("write")); ok {
		// A value's key, or a multipart part's (the ticket names it).
		key, err := parseStoredKey(nil, k)
		if err != nil {
			replyError(ctx, err)
			return
		}
		v.coordinateWrite(ctx, key)
		return
	}
	if !v.sec.allowInternal(ctx, rest) {
		return
	}
	if v.handleVerifyInternal(ctx, rest) {
		return
	}
	if len(v.cfg.lacks) > 0 && slices.Contains(v.cfg.lacks, string(rest)) {
		replyText(ctx, fasthttp.StatusNotFound, noAdminEndpoint)
		return
	}
	switch {
	case bytes.HasPrefix(rest, []byte("blob/")):
		key, err := parseStoredKey(nil, rest[len("blob"):])
		if err != nil {
			replyError(ctx, err)
			return
		}
		switch {
		case ctx.IsPut():
			v.writeBlob(ctx, key)
		case ctx.IsDelete():
			v.deleteBlob(ctx, key)
		default:
			ctx.Response.Header.Set("Allow", "PUT, DELETE")
			replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
		}
	case bytes.HasPrefix(rest, []byte("parts/")) && (ctx.IsGet() || ctx.IsHead()):
		v.serveParts(ctx, rest[len("parts"):]) // volume_parts.go
	case bytes.HasPrefix(rest, []byte("pull/")):
		key, err := parseStoredKey(nil, rest[len("pull"):])
		if err != nil {
			replyError(ctx, err)
			return
		}
		if !ctx.IsPost() {
			replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
			return
		}
		v.pullBlob(ctx, key)
	case string(rest) == "index":
		v.listIndex(ctx)
	case string(rest) == "sync":
		v.syncLog(ctx)
	case string(rest) == "delete":
		v.deleteMany(ctx)
	case string(rest) == "put":
		v.putMany(ctx) // putq.go
	case string(rest) == "live":
		// The master's probes read the load to pick the least busy replica
		// for a redirect (the probe itself counts as 1).
		ctx.Response.Header.Set(loadHeader, strconv.FormatInt(v.http.load(), 10))
		replyText(ctx, fasthttp.StatusOK, "ok")
	case string(rest) == "ready":
		if v.gossip.ml.NumMembers() < 2 {
			replyText(ctx, fasthttp.StatusServiceUnavailable, "not joined to a cluster yet")
			return
		}
		replyText(ctx, fasthttp.StatusOK, "ok")
	case string(rest) == "cluster":
		v.serveCluster(ctx)
	case string(rest) == "metrics":
		v.serveMetrics(ctx)
	case v.cfg.Pprof && bytes.HasPrefix(rest, []byte("debug/pprof/")):
		servePprof(ctx, rest)
	default:
		replyText(ctx, fasthttp.StatusNotFound, noAdminEndpoint)
	}
}

// version reads the v= query argument.
func versionArg(ctx *fasthttp.RequestCtx) (uint64, bool, error) {
	b := ctx.QueryArgs().Peek("v")
	if len(b) == 0 {
		return 0, false, nil
	}
	ver, err := parseVersion(b)
	if err != nil {
		return 0, false, withStatus(fasthttp.StatusBadRequest, fmt.Errorf("bad version %q", b))
	}
	return ver, true, nil
}

// requiredVersion reads the v= argument the internal API requires.
func requiredVersion(ctx *fasthttp.RequestCtx) (uint64, error) {
	ver, ok, err := versionArg(ctx)
	if err == nil && !ok {
		err = withStatus(fasthttp.StatusBadRequest, errors.New("missing version"))
	}
	return ver, err
}

// smallRead is the largest value a read takes whole into memory from its
// segment (ReadOrOpen) rather than sending it by sendfile from a file
// opened for it: below it, opening and closing the file costs more
// syscalls than the copy.
const smallRead = 16 << 10

// serveBlob answers GET and HEAD for a value, straight from disk: the file
// goes out by sendfile (a packed value up to smallRead is copied from its
// segment), with Range, ETag and Last-Modified honoured.
func (v *Volume) serveBlob(ctx *fasthttp.RequestCtx, path []byte) {
	var kb [128]byte
	key, err := parseStoredKey(kb[:0], path)
	if err != nil {
		replyError(ctx, err)
		return
	}
	ver, ok, err := versionArg(ctx)
	if err != nil {
		replyError(ctx, err)
		return
	}
	if !v.sec.allowRead(ctx, key, ver) {
		return
	}
	if !ok {
		m, err := v.store.Latest(key)
		if err != nil {
			replyStoreError(ctx, key, err)
			return
		}
		ver = m.Version
	}
	// A small packed value is read whole from its segment's kept
	// descriptor (no file opened per read); others go out by sendfile.
	meta, small, f, err := v.store.ReadOrOpen(key, ver, smallRead, nil)
	isSmall := err == nil && f == nil
	if err != nil {
		if ok && errors.Is(err, store.ErrNotFound) && v.sendBack(ctx, key, ver) {
			return
		}
		replyStoreError(ctx, key, err)
		return
	}
	closeFile := func() {
		if f != nil {
			f.Close()
		}
	}
	h := &ctx.Response.Header
	// Not kb: it holds the key, which the errors below still name.
	var hb [64]byte
	tag := appendETag(hb[:0], meta.Checksum)
	h.SetBytesV("ETag", tag)
	// The version is the master's write time: every replica, and the
	// master's HEAD, report the same Last-Modified.
	mtime := versionTime(meta.Version)
	h.SetBytesV("Last-Modified", appendLastModified(hb[len(tag):len(tag)], mtime))
	h.Set("Accept-Ranges", "bytes")
	h.SetContentType("application/octet-stream")
	if arg := ctx.QueryArgs().Peek("m"); len(arg) > 0 {
		// The value's S3 metadata, from the master's redirect (covered by
		// its signature when the cluster has a secret).
		if meta := decodeMetaArg(arg); meta != nil {
			setMetaHeaders(h, meta)
		}
	}
	if cond, any := readConditions(&ctx.Request.Header); any {
		if st := cond.check(true, true, tag, mtime); st != 0 {
			closeFile()
			if st == fasthttp.StatusNotModified {
				ctx.SetStatusCode(st)
			} else {
				replyText(ctx, st, conditionReason(st))
			}
			return
		}
	}
	start, length := int64(0), meta.Size
	if rh := ctx.Request.Header.Peek("Range"); len(rh) > 0 && ifRangeMatches(ctx, tag, mtime) {
		s, e, err := parseRange(rh, meta.Size)
		switch {
		case errors.Is(err, errRangeUnsatisfiable):
			closeFile()
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(meta.Size, 10))
			replyText(ctx, fasthttp.StatusRequestedRangeNotSatisfiable, "range not satisfiable")
			return
		case err == nil:
			start, length = s, e-s+1
			h.SetContentRange(int(s), int(e), int(meta.Size))
			ctx.SetStatusCode(fasthttp.StatusPartialContent)
		}
	}
	if ctx.IsHead() {
		closeFile()
		ctx.Response.SkipBody = true
		h.SetContentLength(int(length))
		return
	}
	if isSmall {
		ctx.SetBody(small[start : start+length])
		return
	}
	if start > 0 {
		// OpenBlob leaves f at the value's first byte, which for a value
		// packed into a segment file is not the file's start.
		if _, err := f.Seek(start, io.SeekCurrent); err != nil {
			closeFile()
			replyError(ctx, fmt.Errorf("seek %q: %w", key, err))
			return
		}
	}
	// fasthttp sends an *os.File by sendfile and closes it afterwards.
	ctx.SetBodyStream(f, int(length))
}

// OpenCopy opens this volume's copy of version of key, positioned at the
// value's first byte, and reports its size: an S3 gateway beside the
// volume (s3.Config.Local) serves it by sendfile. The caller closes it.
func (v *Volume) OpenCopy(key []byte, version uint64) (*os.File, int64, error) {
	f, meta, err := v.store.OpenBlob(key, version)
	if err != nil {
		return nil, 0, err
	}
	return f, meta.Size, nil
}

// sendBack answers a read of a version this volume does not hold (the key
// was overwritten since the master's redirect and the old version deleted,
// or the copy was lost) with a redirect back to a master for a fresh answer:
// never a 404 for a key that may well exist. The URL names the volumes that
// failed the reader so far (this one included) and the version they lacked,
// so the master sends it to another replica and repairs a lost copy at
// once. It reports false when there is nowhere to send the reader: no
// master known, or the reader has been sent back too often already.
func (v *Volume) sendBack(ctx *fasthttp.RequestCtx, key []byte, ver uint64) bool {
	master, ok := v.gossip.httpOf(RoleMaster)
	if !ok {
		return false
	}
	tried := ctx.QueryArgs().Peek("tried")
	if len(tried) > 0 && !validTried(tried) || bytes.Count(tried, []byte(",")) >= maxTried-1 {
		return false
	}
	loc := make([]byte, 0, 64+3*len(key)+len(tried))
	loc = append(loc, "http://"...)
	loc = append(loc, master...)
	loc = append(loc, '/')
	loc = AppendEscapedKey(loc, key)
	loc = append(loc, "?tried="...)
	if len(tried) > 0 {
		loc = append(loc, tried...)
		loc = append(loc, ',')
	}
	loc = append(loc, v.cfg.Name...)
	loc = append(loc, "&missing="...)
	loc = appendVersion(loc, ver)
	loc = append(loc, "&back="...)
	loc = strconv.AppendInt(loc, int64(sentBackCount(ctx)+1), 10)
	ctx.Response.Header.SetBytesV("Location", loc)
	replyText(ctx, fasthttp.StatusFound, "this volume does not hold that version; ask the master again")
	return true
}

// storeStatus is the HTTP status of a store error.
func storeStatus(err error) int {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fasthttp.StatusNotFound
	case errors.Is(err, store.ErrNoSpace):
		return fasthttp.StatusInsufficientStorage
	case errors.Is(err, store.ErrExists):
		return fasthttp.StatusConflict
	case errors.Is(err, store.ErrSizeMismatch), errors.Is(err, store.ErrBadKey):
		return fasthttp.StatusBadRequest
	case errors.Is(err, store.ErrClosed):
		return fasthttp.StatusServiceUnavailable
	}
	return statusOf(err)
}

func replyStoreError(ctx *fasthttp.RequestCtx, key []byte, err error) {
	st := storeStatus(err)
	if st == fasthttp.StatusNotFound {
		replyText(ctx, st, fmt.Sprintf("key %q not found", key))
		return
	}
	replyText(ctx, st, err.Error())
}

// blobReply is a volume's answer to a write.
type blobReply struct {
	Size     int64  `json:"size"`
	Checksum string `json:"checksum"`
	Version  string `json:"version"`
}

func replyBlob(ctx *fasthttp.RequestCtx, m store.Meta) {
	b, _ := json.Marshal(blobReply{Size: m.Size, Checksum: strconv.FormatUint(m.Checksum, 16), Version: formatVersion(m.Version)})
	ctx.Response.Header.Set("ETag", m.ETag())
	replyJSON(ctx, fasthttp.StatusCreated, b)
}

// bodySize turns fasthttp's Content-Length (-1 chunked, -2 absent) into
// the declared size, -1 meaning unknown.
func bodySize(h *fasthttp.RequestHeader) int64 {
	switch n := h.ContentLength(); {
	case n >= 0:
		return int64(n)
	case n == -1:
		return -1
	default:
		return 0
	}
}

func (v *Volume) writeBlob(ctx *fasthttp.RequestCtx, key []byte) {
	ver, err := requiredVersion(ctx)
	if err != nil {
		replyError(ctx, err)
		return
	}
	size := bodySize(&ctx.Request.Header)
	if st, msg := v.admitBlobWrite(ctx, key, ver, size); st != 0 {
		replyText(ctx, st, msg)
		return
	}
	var body io.Reader = ctx.RequestBodyStream()
	if size == 0 {
		body = bytes.NewReader(nil)
	}
	m, err := v.store.Put(key, ver, body, size)
	if err != nil {
		v.log.Warn("write failed", "key", string(key), "err", err)
		if errors.Is(err, store.ErrNoSpace) {
			// The store refuses before reading much of the body. The
			// master's client (fasthttp) reads the answer only after
			// sending the whole body, and fasthttp's server cuts a
			// connection with more than 256 KiB unread: the master would
			// see a reset, not 507, and answer its client 503. Read the
			// rest (it only happens when the master's view of this
			// volume's free space was stale, or the length unknown).
			_, _ = io.Copy(io.Discard, body)
			// The master's view was stale: publish the free space now.
			v.forceMeta.Store(true)
			v.kickMeta()
		}
		replyStoreError(ctx, key, err)
		return
	}
	v.metrics.wroteBlob(m.Size)
	replyBlob(ctx, m)
}

// admitBlobWrite refuses, before any byte of the body is read, a write of
// a version this volume already holds (versions are immutable: 409), one
// whose length differs from the size the signed URL names (n=), and, with a
// cluster secret, one whose version is older than a signature lives: the
// master hands out a fresh version for every write and streams it at once,
// so such a request can only be a replay of a captured one (after the
// version was deleted, it would bring the value back).
func (v *Volume) admitBlobWrite(ctx *fasthttp.RequestCtx, key []byte, ver uint64, size int64) (int, string) {
	if n := ctx.QueryArgs().Peek("n"); len(n) > 0 {
		want, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || want != size {
			return fasthttp.StatusBadRequest, fmt.Sprintf("body of %d bytes, the signed request names %s", size, n)
		}
	}
	return v.admitVersion(key, ver)
}

// admitVersion refuses a write of a version this volume already holds, or,
// with a cluster secret, one older than a signature lives (see
// admitBlobWrite).
func (v *Volume) admitVersion(key []byte, ver uint64) (int, string) {
	if st, msg := v.freshVersion(ver); st != 0 {
		return st, msg
	}
	if _, err := v.store.Get(key, ver); err == nil {
		return fasthttp.StatusConflict, fmt.Sprintf("version %s of %q is already held; a version is never replaced", formatVersion(ver), key)
	}
	return 0, ""
}

// freshVersion refuses, with a cluster secret, a write of a version older
// than a signature lives (see admitBlobWrite).
func (v *Volume) freshVersion(ver uint64) (int, string) {
	if v.sec != nil && versionTime(ver).Before(time.Now().Add(-internalTTL-clockSkew)) {
		return fasthttp.StatusConflict, fmt.Sprintf("version %s is too old for a new write", formatVersion(ver))
	}
	return 0, ""
}

func (v *Volume) deleteBlob(ctx *fasthttp.RequestCtx, key []byte) {
	ver, err := requiredVersion(ctx)
	if err != nil {
		replyError(ctx, err)
		return
	}
	if err := v.store.Delete(key, ver); err != nil {
		replyStoreError(ctx, key, err)
		return
	}
	replyJSON(ctx, fasthttp.StatusOK, []byte(`{"deleted":true}`))
}

// syncLog answers once every lazy deletion answered before (deleteMany)
// is durable.
func (v *Volume) syncLog(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if err := v.store.Sync(); err != nil {
		replyStoreError(ctx, nil, err)
		return
	}
	replyText(ctx, fasthttp.StatusOK, "synced")
}

// pullBlob copies one version of a key from another volume (from=HOST:PORT)
// into this one, streaming: the master uses it to replace a replica without
// the bytes passing through the master. The answer is an NDJSON stream (see
// streamLines): a tick every second while the copy runs, so that a slow
// copy of a large value outlives the master's idle timeout, then one "done"
// line with the stored size and checksum, or the error and its status. A
// version already held is not copied again: the held copy's size and
// checksum are the answer (the master compares them with the source's).
func (v *Volume) pullBlob(ctx *fasthttp.RequestCtx, key []byte) {
	ver, err := requiredVersion(ctx)
	from := string(ctx.QueryArgs().Peek("from"))
	if err == nil && from == "" {
		err = withStatus(fasthttp.StatusBadRequest, errors.New("missing from="))
	}
	if err != nil {
		replyError(ctx, err)
		return
	}
	key = bytes.Clone(key) // the copy outlives the handler
	v.streamLines(ctx, func(context.Context, func(streamLine)) streamLine {
		m, status, err := v.pull(key, ver, from)
		if err != nil {
			return streamLine{T: "done", Error: err.Error(), Status: status}
		}
		v.metrics.wroteBlob(m.Size)
		return streamLine{T: "done", Size: m.Size, Checksum: strconv.FormatUint(m.Checksum, 16)}
	})
}

// pull copies version of key from the volume at from; on failure it returns
// the HTTP status that explains it.
func (v *Volume) pull(key []byte, ver uint64, from string) (store.Meta, int, error) {
	if m, err := v.store.Get(key, ver); err == nil {
		return m, 0, nil
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURIBytes(v.sec.appendReadSig(appendBlobURL(nil, from, key, ver), key, ver, time.Now().Add(internalTTL).Unix()))
	req.URI().DisablePathNormalizing = true
	resp.StreamBody = true
	if err := v.client.Do(req, resp); err != nil {
		return store.Meta{}, fasthttp.StatusBadGateway, fmt.Errorf("pull %q from %s: %w", key, from, err)
	}
	defer resp.CloseBodyStream()
	if resp.StatusCode() != fasthttp.StatusOK {
		return store.Meta{}, fasthttp.StatusBadGateway, fmt.Errorf("pull %q from %s: status %d", key, from, resp.StatusCode())
	}
	size := int64(resp.Header.ContentLength())
	if size < 0 {
		size = -1
	}
	m, err := v.store.Put(key, ver, resp.BodyStream(), size)
	if errors.Is(err, store.ErrExists) {
		// A concurrent pull of the same version got there first.
		if m, err := v.store.Get(key, ver); err == nil {
			return m, 0, nil
		}
	}
	if err != nil {
		if errors.Is(err, store.ErrNoSpace) {
			// As for a write: the master's view of this volume's room
			// was stale, and it would keep moving values here.
			v.forceMeta.Store(true)
			v.kickMeta()
		}
		return store.Meta{}, storeStatus(err), err
	}
	return m, 0, nil
}

// indexEntry is one (key, version) in a volume's index listing.
type indexEntry struct {
	Key      string `json:"key"`
	Version  string `json:"version"`
	Size     int64  `json:"size"`
	Checksum string `json:"checksum"`
	ModTime  int64  `json:"mtime"`
}

type indexPage struct {
	Entries     []indexEntry `json:"entries"`
	Next        string       `json:"next"`
	NextVersion string       `json:"next_version,omitempty"`
}

// listIndex pages through the volume's index in (key, version) order, for
// the master's rebuild: start= and start_version= resume where next left.
func (v *Volume) listIndex(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	limit := 1000
	if n, err := strconv.Atoi(string(args.Peek("limit"))); err == nil && n > 0 && n <= 10000 {
		limit = n
	}
	start := append([]byte(nil), args.Peek("start")...)
	var startVer uint64
	if b := args.Peek("start_version"); len(b) > 0 {
		startVer, _ = parseVersion(b)
	}
	page := indexPage{Entries: []indexEntry{}}
	err := v.store.Iterate(start, func(m store.Meta) bool {
		if bytes.Equal(m.Key, start) && m.Version < startVer {
			return true
		}
		if len(page.Entries) == limit {
			page.Next, page.NextVersion = string(m.Key), formatVersion(m.Version)
			return false
		}
		page.Entries = append(page.Entries, indexEntry{
			Key: string(m.Key), Version: formatVersion(m.Version), Size: m.Size,
			Checksum: strconv.FormatUint(m.Checksum, 16), ModTime: m.ModTime.UnixNano(),
		})
		return true
	})
	if err != nil {
		replyError(ctx, err)
		return
	}
	b, _ := json.Marshal(page)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

func (v *Volume) serveCluster(ctx *fasthttp.RequestCtx) {
	st := v.store.Stats()
	b, _ := json.Marshal(map[string]any{
		"node": map[string]any{
			"name": v.name, "role": RoleVolume, "addr": v.httpAddr, "gossip": v.gossip.addr(),
			"free": st.Free, "total": st.Total, "keys": st.Keys, "bytes": st.Bytes,
		},
		"members":  v.gossip.snapshot(),
		"departed": v.gossip.departed(),
	})
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// blobURL is the volume URL serving one version of key.
func blobURL(addr string, key []byte, version uint64) string {
	b := make([]byte, 0, len("http://")+len(addr)+1+len(key)*3+4+16)
	b = appendBlobURL(b, addr, key, version)
	return string(b)
}

func appendBlobURL(dst []byte, addr string, key []byte, version uint64) []byte {
	dst = append(dst, "http://"...)
	dst = append(dst, addr...)
	dst = append(dst, '/')
	dst = AppendEscapedKey(dst, key)
	dst = append(dst, "?v="...)
	return appendVersion(dst, version)
}
