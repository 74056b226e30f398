// Package node runs kvdb's two server roles on fasthttp: the master, which
// keeps every key's metadata and answers clients, and the volume, which holds
// the bytes on local disk (through package store) and serves them. Both join
// one cluster by gossip (memberlist); placement comes from package ring. The
// Go client and the JSON documents it shares with the servers live in
// node/client, which must not import this package.
//
// This package does no placement arithmetic (ring does) and no disk layout
// (store does); it must never hold a whole value in memory: bodies stream
// through pooled buffers. The one exception is bounded by design: a value of
// at most 16 KiB written through the master, smaller than one streaming
// chunk, is read whole to share a request with others (putq.go).
//
// # Where things are
//
// Both roles:
//
//	doc.go            this map
//	key.go            the key rules, from node/client (parsing, validation, escaping)
//	record.go         the master's per-key Record and its encoding; ETags
//	http.go           the fasthttp server both roles run; replies and error → status mapping
//	gossip.go         membership: memberlist, node metadata, profiles, Member
//	security.go       the cluster secret: signed internal requests and read redirects
//	apikeys.go        client API keys (bearer tokens, read-only or read-write)
//	metrics.go        Prometheus-format metrics of both roles
//	byterange.go      Range header parsing
//	fanout.go         one body streamed to several writers with bounded buffering
//
// The master:
//
//	master.go         the Master type, start and stop, the cluster view, request routing
//	master_config.go  MasterConfig, its presets, defaults and validation
//	read.go           GET (302 to the least-loaded live replica), HEAD and ?list
//	write.go          PUT and POST: admission, and the write through the master (proxy path)
//	redirect_write.go the redirected write path: 307 with a ticket, and the volume's commit
//	ticket.go         write tickets: format and signature
//	replicate.go      the fan-out of a body to N volumes and replacement of failed ones (both roles)
//	catalog_ops.go    the catalog's named operations (commit a write, remove, merge, switch, drop a replica)
//	version.go        the catalog's version counter and its persisted ceiling
//	raft.go           the catalog replicated by Raft: log entries, the FSM, snapshots, stores
//	masters.go        several masters: bootstrap by gossip, configuration changes, the
//	                  leader's init, follower redirects, the read lease
//	delete.go         DELETE
//	batchq.go         per-volume queues that share requests: deletions (deleteq.go) and
//	                  small writes (putq.go, values of at most 16 KiB through the master)
//	volclient.go      the node→volume wire protocol: blob, pull, delete and streamed requests
//	peers.go          the volumes the master saw last, re-dialled at start
//	master_disk.go    a full disk under the catalog: 507, not ready, reopen when there is room
//	gc.go             deleting queued blob versions from volumes
//	merge.go          merging a volume's own index into the master's (rebuilds), and
//	                  reading manifest blobs to rebuild multipart values
//	admin.go          /_kvdb/live, ready, cluster (JSON) and the admin routing
//	status.go         the embedded status page (status.html)
//	probe.go          liveness and load probes of every volume
//	placement.go      the placement loop: one pass over the catalog drives repairs and moves
//	placement_decide.go  what to do with one key (pure: table-tested in placement_test.go)
//	repair.go         carrying out a repair (copy a lost replica)
//	rebalance.go      carrying out a move, the grace period, the rate limit
//	drain.go          operator drains (/_kvdb/drain/VOLUME)
//	conditions.go     RFC 9110 preconditions (If-Match and the rest) of both roles
//	verify.go         kvdb verify: master index against each volume's, and lost-copy reports
//	catalog.go        the master's catalog: goleveldb (layout below), the per-key locks,
//	                  the record cache (kept right by every record write) and the version counter
//	reccache.go       the in-memory cache of hot Records
//	bucket.go         the S3 gateway's endpoints (/_kvdb/s3/): buckets
//	objmeta.go        the S3 gateway's endpoints: object metadata, detailed listing
//	s3keys.go         S3 credentials in the API keys file, and their master tokens
//	multipart.go      the S3 gateway's endpoints: multipart uploads (parts as values under
//	                  _kvdb/mp/, their redirected writes, manifests and manifest blobs),
//	                  the redirect of a multipart value's GET, the upload sweep
//	catalog_multipart.go  the catalog's multipart entries and operations (uploads, manifests, releases)
//
// The volume:
//
//	volume.go         the Volume type, start and stop, blob reads (sendfile, Range) and writes
//	coordinate.go     a redirected write: the body from the client, to every replica, commit
//	scrub.go          background scrubbing for bit rot, quarantine, orphan listing
//	volume_parts.go   streaming a multipart value: its parts in order, local ones by sendfile
//
// # Internal endpoints
//
// Every node serves /_kvdb/live, /_kvdb/ready, /_kvdb/cluster and
// /_kvdb/metrics (and /_kvdb/debug/pprof/ with Pprof). The master also
// serves /_kvdb/status, /_kvdb/drain/VOLUME, /_kvdb/verify,
// /_kvdb/lost/KEY?v=VER (a volume's report of a lost or corrupt copy), and to
// the volume coordinating a redirected write POST /_kvdb/intent/KEY?v=&vol=
// (a spare is about to get a copy) and POST /_kvdb/commit/KEY?v=&size=&sum=
// &r=&tried=[&abort=1],
// and the endpoints of the S3 gateway (package node/s3), authorized like the
// client API:
//
//	GET    /_kvdb/s3/buckets                  every bucket (client.BucketList)
//	PUT    /_kvdb/s3/bucket/NAME              create (409 if it exists)
//	GET    /_kvdb/s3/bucket/NAME              the bucket (404 if absent); HEAD too
//	DELETE /_kvdb/s3/bucket/NAME              delete when empty (409 BucketNotEmpty)
//	GET    /_kvdb/s3/object/BUCKET/KEY        size, ETag, S3 metadata (?locate: a volume URL, &near=VOL preferred)
//	PUT    /_kvdb/s3/object/BUCKET/KEY        record S3 metadata (If-Match: the kvdb ETag)
//	DELETE /_kvdb/s3/object/BUCKET/KEY        delete the value and its metadata
//	GET    /_kvdb/s3/list/BUCKET?prefix=&delimiter=&after=&limit=   detailed listing
//	POST   /_kvdb/s3/mp/BUCKET/KEY            start a multipart upload (body: ObjectMeta)
//	PUT    /_kvdb/s3/mp/BUCKET/KEY?id=&part=N store part N (the body); with
//	                                          Expect: 100-continue, 307 to a volume with
//	                                          a ticket for the part's key, as a value's write
//	POST   /_kvdb/s3/mp/BUCKET/KEY?id=&part=N&md5=  record part N's MD5 (If-Match: its kvdb ETag)
//	POST   /_kvdb/s3/mp/BUCKET/KEY?id=&complete     complete (body: []client.CompletePart)
//	GET    /_kvdb/s3/mp/BUCKET/KEY?id=&after=&limit= list the parts
//	DELETE /_kvdb/s3/mp/BUCKET/KEY?id=        abort: the parts are deleted
//	GET    /_kvdb/s3/uploads/BUCKET?prefix=&delimiter=&key=&id=&limit=  uploads under way
//
// and to a volume streaming a multipart value, GET /_kvdb/manifest/KEY?v=VER
// (signed like a commit): the parts and the live volumes holding each.
//
// A volume serves, to the master only (signed when the cluster has a secret):
//
//	PUT    /_kvdb/blob/KEY?v=VER        store one version of KEY (the body)
//	DELETE /_kvdb/blob/KEY?v=VER        delete one version
//	POST   /_kvdb/put?b=SHA256          store the listed small values (body: for each,
//	                                    a line "VER SIZE /KEY" and SIZE bytes; one
//	                                    outcome line each: "201 SIZE SUM" or the refusal)
//	POST   /_kvdb/delete?b=SHA256       delete the listed versions lazily (body:
//	                                    lines of "VER /KEY"; one outcome line each)
//	POST   /_kvdb/sync                  make the lazy deletions answered so far durable
//	POST   /_kvdb/pull/KEY?v=VER&from=  copy one version from another volume
//	GET    /_kvdb/index?start=&limit=   page through the volume's own index
//	GET    /_kvdb/check/KEY?v=VER       re-hash one copy (verify --deep)
//	POST   /_kvdb/quarantine/KEY?v=VER  stop serving a corrupt copy
//	POST   /_kvdb/scrub                 scrub now
//	GET    /_kvdb/orphans               blob files the volume's index lacks
//
// Clients read a value from a volume at GET /KEY?v=VER[&m=META] (signed and
// expiring with a secret; m= carries the value's S3 response headers,
// objmeta.go), the URL of the master's 302 (for a multipart value GET
// /_kvdb/parts/KEY?v=VER, signed like an internal request), and send the body of a
// redirected write to PUT|POST /_kvdb/write/KEY?t=TICKET&s=SIG, the URL of
// the master's 307 (ticket.go); KEY is a part's key (_kvdb/mp/UPLOAD/NNNNN)
// when the write is a multipart part's.
// A merge reads a manifest blob as a client reads a value (GET
// /%5Fkvdb/mf/KEY?v=VER: a reserved key's "_" is escaped in paths).
//
// # The master's catalog
//
// The master's goleveldb (catalog.go) holds several kinds of entries, told apart
// by the first byte of the key:
//
//	k KEY                       -> Record: the current version of KEY
//	g VOL 0x00 KEY 0x00 VER(8)  -> empty: a blob version VOL must delete
//	p VER(8) VOL 0x00 KEY       -> empty: a write in progress (an intent)
//	v VOL                       -> empty: VOL's own index has been merged
//	d VOL                       -> empty: VOL is being drained by an operator
//	b BUCKET                    -> a bucket of the S3 face: its creation time
//	m KEY                       -> S3 metadata (MD5, Content-Type, x-amz-meta-*) of one version of KEY
//	u KEY 0x00 UPLOAD           -> a multipart upload to KEY under way
//	x KEY                       -> the manifest of KEY's multipart value (its parts)
//	z UPLOAD                    -> a finished upload whose parts are to be deleted
//	h                           -> VER(8): no version at or above it was handed out
//	w VER(8) KEY                -> a redirected write's ticket, until its commit
//	a                           -> INDEX(8): the last Raft log entry applied
//	c                           -> empty: an index kept before Raft, to be carried into its log
//
// Every write of the catalog is a goleveldb batch appended to the masters'
// Raft log and applied by each master (raft.go); only the leader decides
// and appends. Entries a and c are each master's own.
//
// A multipart value's record has Parts > 0 and no replicas; its parts are
// ordinary records under the reserved prefix _kvdb/mp/UPLOAD/ (multipart.go),
// which the client API refuses and listings skip. So is its manifest blob,
// _kvdb/mf/KEY at the value's version: a small value on the volumes that
// holds the value's record, manifest and S3 metadata (catalog_multipart.go
// manifestBlob), written by Complete before its commit and recorded in the
// same batch, and dropped (queued for deletion) by the batch that replaces
// or removes the value. Its key shares the value's lock stripe. The merge
// of a volume's index (merge.go) takes parts and manifest blobs; a blob
// whose value the catalog lacks, or holds at an older version, is read
// from the volume and makes the value's k, x and m entries again
// (catalog.mergeManifest). The upload sweep's pass for unowned parts waits
// until every live volume is merged, and drops blobs whose value is gone.
//
// The master's catalog, a volume's own index (package store) and the
// client's listing (GET /PREFIX?list) are three things; only the volume's
// is called an index. A volume's index (package store) maps each key to the versions it holds
// and is rebuilt from the blob files' trailers when lost.
package node
