// Package store is one volume's disk in kvdb: immutable, versioned blob
// files plus a goleveldb index that can always be rebuilt from those files.
//
// A value is identified by (key, version). The key is 1..1024 arbitrary bytes
// without a NUL byte; the version is a uint64 assigned by the master (larger
// is newer). Versions of one key are independent immutable blobs: writing
// (k, v2) never touches (k, v1), and the master deletes v1 later. That is how
// an overwrite stays atomic across the cluster.
//
// A value of at most Config.SmallValueMax bytes (1 MiB by default) is
// packed: appended with its key and metadata to the volume's log, a series
// of segment files, by one writer goroutine that commits every write
// waiting at that moment with one fdatasync (group commit) and only then
// indexes them; deletes append tombstones the same way. The log is also the
// index's write-ahead log: Open replays it past the index's checkpoint.
// Compaction rewrites segments that are mostly deleted values in the
// background. See segment.go, log.go and compact.go.
//
// A larger value streams the body into DIR/tmp, appends a self-describing
// trailer, fsyncs, renames the file into DIR/blobs and only then records it
// in the index (DIR/index), so nothing partial is ever visible; deleting it
// logs a tombstone and removes the file in the background. Reads hand back
// a plain *os.File, positioned at the value (inside its segment, for a
// packed one), so that callers can serve it with sendfile.
//
// On disk:
//
//	DIR/index/                      goleveldb; key = key | 0x00 | version (8 bytes, big-endian)
//	DIR/segments/<seq>.seg          the log: packed values and tombstones (segment.go)
//	DIR/blobs/ab/<name>-<ver>       value bytes, then key bytes, then a 52-byte footer
//	                                (volumes written before kept them in DIR/blobs/ab/cd/; still read)
//	DIR/tmp/                        partial writes; emptied by Open
//	DIR/quarantine/                 bad blob files taken out of service by Quarantine, as
//	                                <name>-<ver>.<time>, each with a <name>-<ver>.<time>.reason note
//	DIR/LOCK                        flock held while a Store has DIR open
//	DIR/REBUILDING                  present while the index is being rebuilt
//
// where <name> is 32 hex digits of sha256(key)[:16], ab (and cd) are its
// first two (four) hex digits and <ver> is the version in 16 hex digits. File names never
// contain the key, so no key can escape the directory.
//
// Bit rot is found by Verify (one version) and Scrub (all of them, paced in
// the background); Quarantine takes a bad version out of service, and
// Orphans lists files without index entries and entries without files.
//
// The package must not speak HTTP, know about cluster membership or log on
// its own: it returns errors and leaves reporting to the caller. The
// exceptions are rebuilding the index (by Rebuild or from Open) and
// replaying the log, which report why they run, their progress and the
// files they skip to Config.Logger, and background compaction, which
// reports its failures there, because they have no other channel.
package store
