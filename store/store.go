package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Errors returned by the store, always wrapped with what failed on what:
// check them with errors.Is.
var (
	ErrNotFound     = errors.New("store: not found")
	ErrBadKey       = errors.New("store: bad key")
	ErrSizeMismatch = errors.New("store: body length does not match the declared size")
	// ErrNoSpace is returned when Capacity or Reserve would be exceeded, and
	// wraps ENOSPC and EDQUOT from the filesystem (the original error stays
	// in the chain too).
	ErrNoSpace = errors.New("store: no space left")
	ErrClosed  = errors.New("store: closed")
	// ErrExists: Put of a (key, version) the store already holds. A
	// version is immutable: its bytes are never replaced.
	ErrExists = errors.New("store: version already held")
	// ErrCorrupt means a blob file disagrees with itself or with the index:
	// a checksum, trailer or length mismatch.
	ErrCorrupt = errors.New("store: corrupt")
)

// Config configures a Store. The zero value is not usable: Dir is required.
type Config struct {
	// Dir is the data directory of this volume. It is created if absent.
	// One Store at a time may use it, even within one process: Open fails
	// while DIR/LOCK is held.
	Dir string

	// Capacity optionally caps the bytes of values this volume may hold, in
	// bytes. 0 means the filesystem's size. Set it to reserve room for other
	// uses of the disk, or to test a full disk. Trailers and the index are
	// not counted.
	Capacity int64

	// Reserve is the number of bytes kept free on the filesystem: a Put that
	// would leave less fails with ErrNoSpace. 0 (the default) lets writes fill
	// the filesystem. The check is made before writing and is best effort
	// under concurrent writes.
	Reserve int64

	// NoSync skips every fsync (blob files, directories and the index). A
	// crash then loses acknowledged writes. Only for benchmarks that compare
	// costs; never set it in production.
	NoSync bool

	// SmallValueMax is the largest value, in bytes, that is packed into the
	// volume's log of segment files instead of getting a blob file of its
	// own (see segment.go). Packed values share fsyncs with concurrent
	// writes and need no file creation, rename or directory fsync, but
	// their space comes back only when compaction rewrites their segment.
	// A value is staged whole in memory before it is appended, so a body
	// of unknown length is packed only if it ends within 64 KiB, and at
	// most 16 values over 64 KiB are staged at once; others get blob
	// files. 0 means DefaultSmallValueMax; -1 turns packing off. At most
	// MaxSmallValueMax.
	SmallValueMax int64

	// SegmentSize is the size at which a log segment is sealed and a new
	// one started, in bytes. Larger segments mean fewer files but coarser
	// compaction. 0 means DefaultSegmentSize; between 1 MiB and 1 GiB.
	SegmentSize int64

	// CompactRate caps the bytes per second that compaction reads and
	// writes while it rewrites segments whose records are mostly deleted.
	// 0 means DefaultCompactRate; -1 turns background compaction off (the
	// space of deleted packed values is then never reclaimed).
	CompactRate int64

	// Logger receives Rebuild progress and the blob files it skips, the only
	// things the store reports on its own. nil discards them.
	Logger *slog.Logger

	// compactEvery is how often the compactor looks for work; 0 means
	// defaultCompactEvery. Tests shorten it.
	compactEvery time.Duration
}

// Defaults of Config. DefaultSmallValueMax was chosen by measurement (see
// store_bench_test.go, BenchmarkPutSizes): from 16 writers at once, a
// packed Put of 64 KiB costs half a blob file's, one of 256 KiB 60 %, one
// of 1 MiB as much as a file; at 4 MiB the file is twice as fast (the
// log's one writer copies every byte into the segment, where blob files
// are written by their own goroutines). In a cluster a 1 MiB value packed
// saves each replica a file's creation, rename and three flushes of the
// disk's cache: PUT 1 MiB at concurrency 16 went from about 145 to 193
// MB/s (alternating runs, README "Values up to 1 MiB packed into the log").
const (
	DefaultSmallValueMax = 1 << 20
	DefaultSegmentSize   = 64 << 20
	DefaultCompactRate   = 32 << 20
	defaultCompactEvery  = 10 * time.Second
)

// withDefaults returns c with the zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.SmallValueMax == 0 {
		c.SmallValueMax = DefaultSmallValueMax
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = DefaultSegmentSize
	}
	if c.CompactRate == 0 {
		c.CompactRate = DefaultCompactRate
	}
	if c.compactEvery == 0 {
		c.compactEvery = defaultCompactEvery
	}
	return c
}

// Validate reports whether the configuration can be used.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("store: config: Dir is empty")
	case c.Capacity < 0:
		return fmt.Errorf("store: config: Capacity %d is negative", c.Capacity)
	case c.Reserve < 0:
		return fmt.Errorf("store: config: Reserve %d is negative", c.Reserve)
	case c.SmallValueMax < -1 || c.SmallValueMax > MaxSmallValueMax:
		return fmt.Errorf("store: config: SmallValueMax %d is not -1 or between 0 and %d", c.SmallValueMax, MaxSmallValueMax)
	case c.SegmentSize != 0 && (c.SegmentSize < minSegmentSize || c.SegmentSize > maxSegmentSize):
		return fmt.Errorf("store: config: SegmentSize %d is not between %d and %d", c.SegmentSize, minSegmentSize, maxSegmentSize)
	case c.CompactRate < -1:
		return fmt.Errorf("store: config: CompactRate %d is not -1 or positive", c.CompactRate)
	}
	return nil
}

// Meta describes one stored version of a key.
type Meta struct {
	Key      []byte // a copy owned by the caller
	Version  uint64
	Size     int64     // length of the value in bytes
	Checksum uint64    // xxhash64 of the value bytes
	ModTime  time.Time // when the version was written, UTC, nanosecond precision
}

// ETag returns the checksum as a quoted HTTP entity tag: `"` + 16 lowercase
// hex digits + `"`.
func (m Meta) ETag() string {
	const digits = "0123456789abcdef"
	var b [18]byte
	b[0], b[17] = '"', '"'
	for i := range 16 {
		b[16-i] = digits[(m.Checksum>>(4*i))&0xf]
	}
	return string(b[:])
}

// Stats is a snapshot of a volume's usage.
type Stats struct {
	Keys  int64 // number of (key, version) pairs held
	Bytes int64 // sum of the sizes of the values held
	// Free is the number of bytes that can still be written: the
	// filesystem's available bytes minus Reserve, and at most
	// Capacity - Bytes when Capacity is set. Never negative.
	Free int64
	// Total is Capacity when set, else the filesystem's size.
	Total int64
	// FS identifies the filesystem whose space Free and Total are, among
	// those of this host (its device number), so that stores sharing one
	// filesystem can be told apart from stores on their own: 0 when
	// Capacity is set (Free and Total are then the store's own) or the
	// platform does not say.
	FS uint64
}

const (
	// bufSize is the streaming buffer's size (pooled). Small enough that
	// what a read from the socket brought in is still in the CPU's cache
	// when it is hashed and written: with 1 MiB, a 1 MiB PUT at
	// concurrency 16 took 5-9 % more of the volumes' CPU.
	bufSize = 64 << 10
	// writebackChunk is how many bytes of a value are written before the
	// kernel is asked to start writing them out (see startWriteback).
	writebackChunk = 8 << 20
	numStripes     = 256 // striped locks serialising commits per (key, version)
	markerName     = "REBUILDING"
)

// Store is one volume's blob files and their index. All methods are safe for
// concurrent use.
type Store struct {
	cfg                             Config // with defaults filled in
	dir, blobsDir, tmpDir, indexDir string
	quarantineDir                   string // DIR/quarantine, see Quarantine
	segsDir                         string // DIR/segments, see segment.go
	log                             *slog.Logger
	bufs                            sync.Pool // of *streamBuf, bufSize bytes
	// packBufs holds the buffers a packed value of at most stagedSmall
	// bytes is read into, with room for its record header and key
	// (putPacked); bigBufs those for larger packed values, of which at
	// most bigStaged are in use at once (bigInUse): past that, a value
	// gets a blob file, streamed, so that memory stays bounded whatever
	// the number of writers.
	packBufs sync.Pool // of *streamBuf
	bigBufs  sync.Pool // of *streamBuf
	bigInUse atomic.Int64
	lock     *os.File // DIR/LOCK, flocked while open

	// Counters for Stats; pending is what Puts in flight reserved against
	// Capacity.
	keys, bytes, pending atomic.Int64

	// Blob directories known to exist and be durable; dirsMu serialises
	// creating them.
	dirs   sync.Map
	dirsMu sync.Mutex

	// stripes serialise the commit (rename + index) of one (key, version)
	// against other Puts, Deletes and Opens of it.
	stripes [numStripes]sync.Mutex

	// mu is held shared by every index operation and exclusively by Close
	// and Rebuild. closing is set by Close before it waits for mu, to stop
	// a Rebuild.
	mu      sync.RWMutex
	idx     *levelIndex // guarded by mu; nil once closed
	closed  bool        // guarded by mu
	closing atomic.Bool

	segs segSet
	// w appends packed values and tombstones; it runs from Open until
	// Close holds mu.
	w *logWriter
	// syncs counts the fsyncs of the log (tests and benchmarks report it).
	syncs atomic.Int64
	// bg runs compaction and the removal of deleted blob files.
	bg background
	// compactMu is held by a compaction pass and by Rebuild.
	compactMu sync.Mutex
}

type streamBuf struct {
	b []byte
	h *xxhash.Digest
}

// Open opens the volume in cfg.Dir, creating it if needed. It does not
// modify cfg. A directory is used by one Store at a time: Open fails while
// another Store, in this process or another, has it open (DIR/LOCK).
//
// Open deletes whatever a killed write left in DIR/tmp, and replays the
// log records past the index's checkpoint (see log.go). It rebuilds the
// index from the blob files and segments when goleveldb reports the index
// corrupted, when a previous Rebuild did not finish, when an index record
// cannot be decoded, or when the index is empty but DIR/blobs holds files
// or there are compacted segments (the index was lost).
//
// A crash between renaming a blob into place and indexing it leaves an orphan
// file: Open does not look for orphans (that would read every file), so the
// version stays invisible until the next Rebuild, and Delete of that
// (key, version) removes the file. Orphans lists such files.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := filepath.Clean(cfg.Dir)
	s := &Store{
		cfg:           cfg.withDefaults(),
		dir:           dir,
		blobsDir:      filepath.Join(dir, "blobs"),
		tmpDir:        filepath.Join(dir, "tmp"),
		indexDir:      filepath.Join(dir, "index"),
		quarantineDir: filepath.Join(dir, "quarantine"),
		segsDir:       filepath.Join(dir, "segments"),
		log:           cfg.Logger,
		segs:          segSet{m: make(map[uint64]*segState), next: 1},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.bufs.New = func() any { return &streamBuf{b: make([]byte, bufSize), h: xxhash.New()} }
	// A staged value is hashed whole (putPacked): no digest.
	staged := func(maxValue int64) func() any {
		n := recLen(MaxKeyLen, maxValue) + recAlign
		return func() any { return &streamBuf{b: make([]byte, n)} }
	}
	s.packBufs.New = staged(s.stagedMax())
	s.bigBufs.New = staged(max(s.cfg.SmallValueMax, 0))

	if err := s.makeDirs(); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s.lock = lock
	err = s.cleanTmp()
	if err != nil {
		err = fmt.Errorf("clean tmp: %w", err)
	}
	if err == nil {
		err = s.loadSegments()
	}
	rebuild := false
	if err == nil {
		rebuild, err = s.openIndex()
	}
	if err == nil && rebuild {
		err = s.rebuildLocked()
	}
	if err == nil {
		err = s.dropUnswitched()
	}
	if err != nil {
		// Undo the partial open; the error that stopped it is the one to report.
		if s.idx != nil {
			_ = s.idx.close()
		}
		_ = s.lock.Close()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s.w = newLogWriter(s)
	s.bg.start(s)
	return s, nil
}

func (s *Store) makeDirs() error {
	_, statErr := os.Stat(s.dir)
	for _, d := range []string{s.dir, s.blobsDir, s.tmpDir, s.quarantineDir, s.segsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return noSpace(err)
		}
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		if err := s.syncDir(filepath.Dir(s.dir)); err != nil {
			return err
		}
	}
	return s.syncDir(s.dir)
}

// cleanTmp removes the leftovers of writes killed before their rename.
func (s *Store) cleanTmp() error {
	ents, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.tmpDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// openIndex opens the index and reports whether it must be rebuilt.
func (s *Store) openIndex() (rebuild bool, err error) {
	idx, corrupt, err := openIndex(s.indexDir, s.cfg.NoSync)
	if corrupt {
		// Rebuilding drops the index, so leveldb.RecoverFile would be wasted
		// work: the blob files are the truth.
		s.log.Warn("store: index corrupted, rebuilding it from blob files", "dir", s.dir, "err", err)
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("index: %w", err)
	}
	s.idx = idx
	if _, err := os.Stat(filepath.Join(s.dir, markerName)); err == nil {
		s.log.Warn("store: a previous rebuild did not finish, rebuilding", "dir", s.dir)
		return true, nil
	}
	// An index without even the store's bookkeeping keys is new, or was
	// lost.
	fresh, err := idx.fresh()
	if err != nil {
		return false, fmt.Errorf("index: %w", err)
	}
	if fresh {
		has, err := s.hasBlobs()
		if err != nil {
			return false, err
		}
		if has {
			s.log.Warn("store: index is empty but blob files exist, rebuilding", "dir", s.dir)
			return true, nil
		}
	}
	if err := s.replay(); err != nil {
		return false, err
	}
	err = s.count()
	if errors.Is(err, errRecord) {
		s.log.Warn("store: undecodable index record, rebuilding", "dir", s.dir, "err", err)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	next, err := idx.nextSeq()
	if err != nil {
		return false, fmt.Errorf("index: %w", err)
	}
	s.segs.mu.Lock()
	s.segs.next = max(s.segs.next, next)
	s.segs.mu.Unlock()
	return false, nil
}

// count sets the counters of Stats and the live bytes of every segment
// from the index.
func (s *Store) count() error {
	var keys, n int64
	live := make(map[uint64]int64)
	err := s.idx.scan(nil, nil, false, func(ik []byte, r record) bool {
		keys++
		n += r.size
		if r.packed() {
			live[r.seg] += recLen(len(ik)-versionLen-1, r.size)
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("index: count: %w", err)
	}
	s.keys.Store(keys)
	s.bytes.Store(n)
	s.segs.mu.Lock()
	for seq, g := range s.segs.m {
		g.live = live[seq]
	}
	s.segs.mu.Unlock()
	return nil
}

// Close closes the index. It is idempotent; afterwards every method returns
// ErrClosed. It waits only for index operations in flight, never for a body
// being streamed (such a Put fails with ErrClosed when it tries to commit),
// nor for an Iterate callback. A Rebuild in progress stops at the next file
// and fails with ErrClosed; the next Open starts it again.
func (s *Store) Close() error {
	s.closing.Store(true)
	s.bg.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// No Put or Delete is in flight now: they hold mu shared while the
	// writer commits them.
	err := s.w.stop()
	s.segs.closeFiles()
	if s.idx != nil {
		if cerr := s.idx.close(); err == nil {
			err = cerr
		}
		s.idx = nil
	}
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("store: close %s: %w", s.dir, err)
	}
	return nil
}

// rlock takes the shared lock, or returns ErrClosed without holding it.
func (s *Store) rlock() error {
	s.mu.RLock()
	if s.closed || s.idx == nil {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// lockVersion takes the store's read lock and the stripe lock of (key,
// version): a version's index entry and its file change only under both.
// It returns the version's index key; unlockVersion releases the locks.
func (s *Store) lockVersion(key []byte, version uint64) ([]byte, *sync.Mutex, error) {
	if err := s.rlock(); err != nil {
		return nil, nil, err
	}
	ik := indexKey(key, version)
	mu := s.stripe(ik)
	mu.Lock()
	return ik, mu, nil
}

func (s *Store) unlockVersion(mu *sync.Mutex) {
	mu.Unlock()
	s.mu.RUnlock()
}

func (s *Store) stripe(ik []byte) *sync.Mutex {
	return &s.stripes[xxhash.Sum64(ik)%numStripes]
}

// blobPath is where a new blob file of (key, version) goes.
func (s *Store) blobPath(key []byte, version uint64) string {
	return filepath.Join(s.blobsDir, blobRel(blobName(key, version)))
}

// blobFile is the path of the blob file of (key, version): blobPath, or
// the legacy two-level path if only that exists.
func (s *Store) blobFile(key []byte, version uint64) string {
	p := s.blobPath(key, version)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		lp := filepath.Join(s.blobsDir, legacyRel(blobName(key, version)))
		if _, err := os.Lstat(lp); err == nil {
			return lp
		}
	}
	return p
}

// openBlobFile opens the blob file of (key, version), wherever it is.
func (s *Store) openBlobFile(key []byte, version uint64) (*os.File, error) {
	f, err := os.Open(s.blobPath(key, version))
	if errors.Is(err, fs.ErrNotExist) {
		if lf, lerr := os.Open(filepath.Join(s.blobsDir, legacyRel(blobName(key, version)))); lerr == nil {
			return lf, nil
		}
	}
	return f, err
}

// removeBlobFile removes the blob file of (key, version), in either
// layout. A missing file is no error.
func (s *Store) removeBlobFile(key []byte, version uint64) error {
	var first error
	for _, p := range []string{s.blobPath(key, version), filepath.Join(s.blobsDir, legacyRel(blobName(key, version)))} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = err
		}
	}
	return first
}

func opErr(op string, key []byte, version uint64, err error) error {
	return fmt.Errorf("store: %s %q v%d: %w", op, key, version, err)
}

// Get returns the metadata of (key, version), or ErrNotFound.
func (s *Store) Get(key []byte, version uint64) (Meta, error) {
	if err := checkKey(key); err != nil {
		return Meta{}, opErr("get", key, version, err)
	}
	if err := s.rlock(); err != nil {
		return Meta{}, opErr("get", key, version, err)
	}
	defer s.mu.RUnlock()
	r, ok, err := s.idx.get(indexKey(key, version))
	switch {
	case err != nil:
		return Meta{}, opErr("get", key, version, fmt.Errorf("index: %w", err))
	case !ok:
		return Meta{}, opErr("get", key, version, ErrNotFound)
	}
	return r.meta(key, version), nil
}

// Latest returns the metadata of the highest version of key held, or
// ErrNotFound.
func (s *Store) Latest(key []byte) (Meta, error) {
	errf := func(err error) error { return fmt.Errorf("store: latest %q: %w", key, err) }
	if err := checkKey(key); err != nil {
		return Meta{}, errf(err)
	}
	if err := s.rlock(); err != nil {
		return Meta{}, errf(err)
	}
	defer s.mu.RUnlock()
	var m Meta
	found := false
	start, limit := keyRange(key)
	err := s.idx.scan(start, limit, true, func(ik []byte, r record) bool {
		m = r.meta(key, versionOf(ik))
		found = true
		return false
	})
	switch {
	case err != nil:
		return Meta{}, errf(fmt.Errorf("index: %w", err))
	case !found:
		return Meta{}, errf(ErrNotFound)
	}
	return m, nil
}

// Versions returns the metadata of every version of key held, in ascending
// version order. A key with no version gives an empty slice and no error.
func (s *Store) Versions(key []byte) ([]Meta, error) {
	errf := func(err error) error { return fmt.Errorf("store: versions %q: %w", key, err) }
	if err := checkKey(key); err != nil {
		return nil, errf(err)
	}
	if err := s.rlock(); err != nil {
		return nil, errf(err)
	}
	defer s.mu.RUnlock()
	var ms []Meta
	start, limit := keyRange(key)
	err := s.idx.scan(start, limit, false, func(ik []byte, r record) bool {
		ms = append(ms, r.meta(key, versionOf(ik)))
		return true
	})
	if err != nil {
		return nil, errf(fmt.Errorf("index: %w", err))
	}
	return ms, nil
}

// versionOf returns the version at the end of an index key.
func versionOf(ik []byte) uint64 {
	_, v, _ := splitIndexKey(ik) // keys come from a range of one valid key
	return v
}

// OpenBlob opens the value of (key, version) for reading and returns it
// with the version's metadata. The file is positioned at the value's first
// byte: offset 0 of its blob file, or, for a packed value (see
// Config.SmallValueMax), its offset inside a segment file. Either way
// other bytes follow the value, so callers read exactly Size bytes from
// the returned position, and seek relative to it (io.SeekCurrent) to read
// a part. The file is a plain *os.File, so it can be sent with sendfile.
// The caller closes it. It stays readable even if the version is deleted,
// or its segment compacted, meanwhile. OpenBlob returns ErrNotFound if the
// version is not held, and ErrCorrupt if its file is missing or too short.
func (s *Store) OpenBlob(key []byte, version uint64) (*os.File, Meta, error) {
	f, m, _, err := s.open(key, version)
	if err != nil {
		return nil, Meta{}, opErr("open", key, version, err)
	}
	return f, m, nil
}

// open is OpenBlob, which also returns the version's index record.
func (s *Store) open(key []byte, version uint64) (*os.File, Meta, record, error) {
	b, err := s.lookup(key, version, -1, nil, true)
	return b.f, b.m, b.r, err
}

var errSegGone = errors.New("segment file is missing")

// blob is what lookup found of a version: its metadata and record, and
// either its bytes (read, appended to out) or its file (f).
type blob struct {
	m    Meta
	r    record
	out  []byte   // the caller's dst, with the value appended if read
	read bool     // the value is in out
	f    *os.File // the value's file, positioned at it (see openFile)
}

// lookup finds (key, version) in the index. A value packed into the log
// and at most max bytes long (max < 0: none) is appended to dst with one
// pread from its segment's kept descriptor, so no file is opened; any
// other is opened (openFile) if open is set, else left (neither read nor
// f). A segment removed by compaction between the lookup and the read is
// looked up again, up to three times: the index entry has moved by then.
func (s *Store) lookup(key []byte, version uint64, max int64, dst []byte, open bool) (blob, error) {
	if err := checkKey(key); err != nil {
		return blob{out: dst}, err
	}
	for attempt := 0; ; attempt++ {
		b, err := s.lookupOnce(key, version, max, dst, open)
		if errors.Is(err, errSegGone) && attempt < 3 {
			continue
		}
		return b, err
	}
}

func (s *Store) lookupOnce(key []byte, version uint64, max int64, dst []byte, open bool) (blob, error) {
	// Hold the stripe so that the record and the bytes read (the file
	// opened) belong to the same Put, even while the same version is being
	// replaced.
	ik, mu, err := s.lockVersion(key, version)
	if err != nil {
		return blob{out: dst}, err
	}
	defer s.unlockVersion(mu)
	r, ok, err := s.idx.get(ik)
	switch {
	case err != nil:
		return blob{out: dst}, fmt.Errorf("index: %w", err)
	case !ok:
		return blob{out: dst}, ErrNotFound
	}
	b := blob{m: r.meta(key, version), r: r, out: dst}
	if r.packed() && r.size <= max {
		f, err := s.segFile(r.seg)
		if err == nil {
			n := len(dst)
			out := slices.Grow(dst, int(r.size))[:n+int(r.size)]
			if _, err = f.ReadAt(out[n:], r.valueOff(len(key))); err == nil {
				b.out, b.read = out, true
				return b, nil
			}
		}
		// A descriptor closed (compaction removed its segment, or it was
		// evicted from the kept ones) or a segment gone: openFile finds
		// out which, or the lookup is made again. A short or failing read
		// is left to openFile, which says what is wrong.
		if !open && (errors.Is(err, os.ErrClosed) || errors.Is(err, fs.ErrNotExist)) {
			return b, errSegGone
		}
	}
	if !open {
		return b, nil
	}
	if b.f, err = s.openFile(key, version, r); err != nil {
		return blob{out: dst}, err
	}
	return b, nil
}

// openFile opens the file holding the value of r, positioned at the
// value, and checks that it is long enough.
func (s *Store) openFile(key []byte, version uint64, r record) (*os.File, error) {
	start, want := int64(0), r.size+trailerLen(len(key))
	var f *os.File
	var err error
	if r.packed() {
		start = r.valueOff(len(key))
		want = start + r.size
		f, err = os.Open(s.segPath(r.seg))
	} else {
		f, err = s.openBlobFile(key, version)
	}
	if errors.Is(err, fs.ErrNotExist) {
		if r.packed() {
			return nil, fmt.Errorf("%w: indexed but its %w: %w", ErrCorrupt, errSegGone, err)
		}
		return nil, fmt.Errorf("%w: indexed but its file is missing: %w", ErrCorrupt, err)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if got := fi.Size(); got != want && !(r.packed() && got > want) {
		f.Close()
		return nil, fmt.Errorf("%w: file %s has %d bytes, want %d", ErrCorrupt, f.Name(), got, want)
	}
	if start > 0 {
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// ReadPacked appends to dst the value of (key, version) if it is packed
// into the log and at most max bytes long, read with one pread from its
// segment's kept descriptor: a small value's read opens no file. ok is
// false, with no error, when the version is held but not so (or its
// segment moved under the read four times): OpenBlob serves it. A version
// not held is ErrNotFound, as from OpenBlob.
func (s *Store) ReadPacked(key []byte, version uint64, max int64, dst []byte) (m Meta, out []byte, ok bool, err error) {
	b, err := s.lookup(key, version, max, dst, false)
	switch {
	case errors.Is(err, errSegGone):
		return Meta{}, dst, false, nil
	case err != nil:
		return Meta{}, dst, false, opErr("read", key, version, err)
	case !b.read:
		return Meta{}, dst, false, nil
	}
	return b.m, b.out, true, nil
}

// ReadOrOpen is ReadPacked and OpenBlob in one index lookup: a value
// ReadPacked would read (packed, at most max bytes) is appended to dst and
// f is nil; any other is opened as by OpenBlob, and out is dst. Errors are
// OpenBlob's.
func (s *Store) ReadOrOpen(key []byte, version uint64, max int64, dst []byte) (m Meta, out []byte, f *os.File, err error) {
	b, err := s.lookup(key, version, max, dst, true)
	if err != nil {
		return Meta{}, dst, nil, opErr("open", key, version, err)
	}
	return b.m, b.out, b.f, nil
}

// Delete removes (key, version) from the index at once, durably: it
// appends a tombstone to the log, committed with the writes and deletes
// queued with it (one fdatasync and one index write for all), so that
// neither a reopen nor a Rebuild brings the version back. The bytes go
// later: a blob file is removed in the background, soon after; a packed
// value's space comes back when compaction rewrites its segment. A crash
// before a blob file is removed leaves an orphan file (which Rebuild
// removes), never an index entry without a file. Delete returns
// ErrNotFound if the version is not indexed; an orphan file of that
// version, left by a crash, is removed all the same.
func (s *Store) Delete(key []byte, version uint64) error {
	return s.delete(key, version, false)
}

// DeleteNoSync is Delete without waiting for the disk: the version is out
// of the index (no read finds it) when DeleteNoSync returns, but a packed
// value's tombstone is durable only after the next Sync or the next
// durable write to the log, so a crash before that may bring the version
// back. A caller that keeps its own durable record of the deletion until
// Sync has returned (the master does) thus deletes many versions for one
// fdatasync, off its clients' path. A blob file's version is deleted
// durably, as by Delete.
func (s *Store) DeleteNoSync(key []byte, version uint64) error {
	return s.delete(key, version, true)
}

// Sync makes durable every deletion DeleteNoSync has answered before it
// is called. It fails if an earlier fdatasync that had such deletions to
// make durable failed: they may be lost.
func (s *Store) Sync() error {
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if err := s.w.sync(); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	return nil
}

func (s *Store) delete(key []byte, version uint64, lazy bool) error {
	if err := checkKey(key); err != nil {
		return opErr("delete", key, version, err)
	}
	ik, mu, err := s.lockVersion(key, version)
	if err != nil {
		return opErr("delete", key, version, err)
	}
	defer s.unlockVersion(mu)
	r, ok, err := s.idx.get(ik)
	if err != nil {
		return opErr("delete", key, version, fmt.Errorf("index: %w", err))
	}
	if !ok {
		if err := s.removeBlobFile(key, version); err != nil {
			return opErr("delete", key, version, fmt.Errorf("%w; removing an orphan file: %w", ErrNotFound, err))
		}
		if !lazy {
			// It may be gone by a DeleteNoSync not yet durable: make
			// "not found" as durable as a deletion.
			if err := s.w.sync(); err != nil {
				return opErr("delete", key, version, err)
			}
		}
		return opErr("delete", key, version, ErrNotFound)
	}
	if err := s.tombstone(ik, key, version, r, lazy && r.packed()); err != nil {
		return opErr("delete", key, version, err)
	}
	if !r.packed() {
		s.bg.unlink(key, version)
	}
	return nil
}

// tombstone unindexes the version r of ik through the log writer, which
// appends a tombstone first. The caller holds the version's stripe.
func (s *Store) tombstone(ik, key []byte, version uint64, r record, lazy bool) error {
	buf := make([]byte, recLen(len(key), 0))
	t := logRec{typ: recDelete, key: key, version: version, target: birthOf(r.lsn)}
	if !r.packed() {
		t.modNanos = r.modNanos
	}
	putHeader(buf, t)
	req := s.w.get()
	req.op, req.ik, req.buf, req.lazy = opDelete, ik, buf, lazy
	err := s.w.submit(req)
	s.w.put(req)
	return err
}

// iterateBatch is how many entries Iterate reads per index pass. Between
// passes no lock or iterator is held, so fn may be slow, call the Store
// (even Delete the entry it is given) and Close is never held up by it.
const iterateBatch = 256

// Iterate calls fn with the metadata of every (key, version) held whose key
// is >= start, in (key, version) byte order, until fn returns false. A nil
// or empty start means from the first key. Iterate reads the index in
// batches: it does not see a consistent snapshot, but every version that is
// held throughout the iteration is visited exactly once. It returns
// ErrClosed if the store is closed meanwhile, and ErrBadKey if start holds a
// NUL byte.
func (s *Store) Iterate(start []byte, fn func(Meta) bool) error {
	errf := func(err error) error { return fmt.Errorf("store: iterate from %q: %w", start, err) }
	if bytes.IndexByte(start, 0) >= 0 {
		return errf(fmt.Errorf("%w: contains a NUL byte", ErrBadKey))
	}
	// A key is a prefix of all its index keys and holds no NUL, so the
	// index keys >= start are exactly those of the keys >= start.
	if err := s.iterate(start, func(m Meta, _ record) bool { return fn(m) }); err != nil {
		return errf(err)
	}
	return nil
}

// iterate is Iterate over the index keys >= from, with each version's
// index record, and its errors unwrapped: ErrClosed or an index error.
func (s *Store) iterate(from []byte, fn func(Meta, record) bool) error {
	from = bytes.Clone(from)
	batch := make([]Meta, 0, iterateBatch)
	recs := make([]record, 0, iterateBatch)
	for {
		batch, recs = batch[:0], recs[:0]
		var next []byte
		var splitErr error
		if err := s.rlock(); err != nil {
			return err
		}
		err := s.idx.scan(from, nil, false, func(ik []byte, r record) bool {
			key, v, err := splitIndexKey(ik)
			if err != nil {
				splitErr = err
				return false
			}
			batch = append(batch, r.meta(key, v))
			recs = append(recs, r)
			if len(batch) == iterateBatch {
				next = after(ik)
				return false
			}
			return true
		})
		s.mu.RUnlock()
		if err == nil {
			err = splitErr
		}
		if err != nil {
			return fmt.Errorf("index: %w", err)
		}
		for i, m := range batch {
			if !fn(m, recs[i]) {
				return nil
			}
		}
		if next == nil {
			return nil
		}
		from = next
	}
}

// after returns the smallest index position after ik, in a new slice.
func after(ik []byte) []byte {
	return append(bytes.Clone(ik), 0)
}

// Stats returns the volume's usage. Keys and Bytes are kept as counters;
// Free, Total and FS come from the filesystem (statfs, stat) and Capacity.
func (s *Store) Stats() Stats {
	st := Stats{Keys: s.keys.Load(), Bytes: s.bytes.Load()}
	free, total, err := fsSpace(s.dir)
	if err == nil {
		st.Free = max(free-s.cfg.Reserve, 0)
		st.Total = total
		st.FS = fsID(s.dir)
	}
	if c := s.cfg.Capacity; c > 0 {
		room := max(c-st.Bytes, 0)
		if err != nil || room < st.Free {
			st.Free = room
		}
		st.Total = c
		st.FS = 0
	}
	return st
}

// Verify re-reads the value of (key, version) and checks it against the
// index: a blob file's length, trailer and checksum, or a packed value's
// record header (key, version, size, checksum, time and LSN, under its
// CRC) and checksum. It returns an error wrapping ErrCorrupt on any
// mismatch (including a missing file), and ErrNotFound if the version is
// not held. It reads the whole value, with a pooled buffer and without
// holding any lock. Scrub does the same for every version, in the
// background.
func (s *Store) Verify(key []byte, version uint64) error {
	f, m, r, err := s.open(key, version)
	if err != nil {
		return opErr("verify", key, version, err)
	}
	defer f.Close()
	if _, err := s.checkFile(context.Background(), f, m, r, nil); err != nil {
		return opErr("verify", key, version, err)
	}
	return nil
}

// checkFile reads the value of m whole from f, with its trailer (blob
// file) or record header (packed, r says where), in chunks of the pooled
// buffer, and checks them against m. It returns the bytes read and an
// error wrapping ErrCorrupt on any mismatch; other errors are I/O errors
// or ctx's. lim, if not nil, paces the reads.
func (s *Store) checkFile(ctx context.Context, f *os.File, m Meta, r record, lim *limiter) (read int64, err error) {
	sb := s.bufs.Get().(*streamBuf)
	defer s.bufs.Put(sb)

	base := int64(0) // where the value starts in f
	if r.packed() {
		hl := recHeaderLen + len(m.Key)
		head := sb.b[:hl]
		n, err := f.ReadAt(head, r.off)
		read += int64(n)
		if err != nil {
			return read, shortRead("read record header", err)
		}
		h, ok := decodeRecHeader(head, MaxSmallValueMax)
		if !ok || h.typ != recPut {
			return read, fmt.Errorf("%w: no valid record at %s offset %d", ErrCorrupt, f.Name(), r.off)
		}
		if !bytes.Equal(h.key, m.Key) || h.version != m.Version || h.size != m.Size || h.checksum != m.Checksum ||
			h.modNanos != m.ModTime.UnixNano() || h.lsn != r.lsn {
			return read, fmt.Errorf("%w: record (%q v%d, %d bytes, checksum %016x) disagrees with the index (%d bytes, checksum %016x)",
				ErrCorrupt, h.key, h.version, h.size, h.checksum, m.Size, m.Checksum)
		}
		if err := lim.wait(ctx, n); err != nil {
			return read, err
		}
		base = r.valueOff(len(m.Key))
	} else {
		tl := trailerLen(len(m.Key))
		tail := sb.b[:tl]
		n, err := f.ReadAt(tail, m.Size)
		read += int64(n)
		if err != nil {
			return read, shortRead("read trailer", err)
		}
		t, err := decodeTrailer(tail, m.Size+tl)
		if err != nil {
			return read, err
		}
		if !bytes.Equal(t.key, m.Key) || t.version != m.Version || t.size != m.Size ||
			t.checksum != m.Checksum || t.modNanos != m.ModTime.UnixNano() {
			return read, fmt.Errorf("%w: trailer (%q v%d, %d bytes, checksum %016x) disagrees with the index (%d bytes, checksum %016x)",
				ErrCorrupt, t.key, t.version, t.size, t.checksum, m.Size, m.Checksum)
		}
		if err := lim.wait(ctx, n); err != nil {
			return read, err
		}
	}

	buf := sb.b[:lim.chunk(len(sb.b))]
	h := sb.h
	h.Reset()
	for off := int64(0); off < m.Size; {
		if err := ctx.Err(); err != nil {
			return read, err
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), m.Size-off)], base+off)
		h.Write(buf[:n]) // never fails
		off += int64(n)
		read += int64(n)
		if err != nil {
			return read, shortRead(fmt.Sprintf("read value at offset %d", off), err)
		}
		if err := lim.wait(ctx, n); err != nil {
			return read, err
		}
	}
	if got := h.Sum64(); got != m.Checksum {
		return read, fmt.Errorf("%w: value checksum %016x, want %016x", ErrCorrupt, got, m.Checksum)
	}
	return read, nil
}

// shortRead wraps a read error. The file's length was checked when it was
// opened, so reaching its end early means it shrank since: corrupt.
func shortRead(what string, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s: file shrank: %w", ErrCorrupt, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
