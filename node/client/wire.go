package client

import "encoding/json"

// The JSON documents of the HTTP API. The servers marshal these very types
// and the client unmarshals them, so a field is named once for both sides.
// Changing a JSON name or the order of fields changes what the servers send.

// WriteReply is the body of the master's answer to a write (PUT /KEY).
// The fields are in the order the master has always sent them.
type WriteReply struct {
	// ETag is the stored value's entity tag, as in the ETag header.
	ETag string `json:"etag"`
	Key  string `json:"key"`
	// Size is the stored value's length in bytes.
	Size int64 `json:"size"`
}

// ListPage is one page of a listing: the answer to GET /PREFIX?list.
type ListPage struct {
	// Keys in byte order, decoded.
	Keys []string `json:"keys"`
	// Next is the start of the next page; empty on the last page.
	Next string `json:"next"`
}

// Roles a node has, in Member.Role (and in its gossip metadata).
const (
	RoleMaster = "master"
	RoleVolume = "volume"
)

// Member is one node of the cluster, as gossip reports it.
type Member struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	HTTP   string `json:"addr"`
	Gossip string `json:"gossip"`
	State  string `json:"state"`
	Free   int64  `json:"free"`
	Total  int64  `json:"total"`
	// Keys is how many values the volume holds, as it last published.
	Keys int64 `json:"keys"`
	// Weight is the volume's share of the ring relative to others (its
	// capacity class); Draining says it is handing its values off before
	// it leaves.
	Weight   int  `json:"weight,omitempty"`
	Draining bool `json:"draining,omitempty"`
	// Partitions (the volume's load on the ring) and Load (requests and
	// transfers in progress at the last probe) are filled in by the
	// master's cluster view.
	Partitions int   `json:"partitions,omitempty"`
	Load       int64 `json:"load,omitempty"`
	// FS identifies the filesystem whose space a volume's Free and Total
	// are, among those of its host (the device number of its data
	// directory): volumes on one host with the same FS report the same
	// space, to be counted once. 0 when they are the volume's own (it has
	// a capacity) or it does not say.
	FS uint64 `json:"fs,omitempty"`
	// Raft is a master's Raft transport address; Leader says whether it
	// leads the masters, and Applied is the last Raft log index it applied
	// (as it last published them).
	Raft    string `json:"raft,omitempty"`
	Leader  bool   `json:"leader,omitempty"`
	Applied uint64 `json:"applied,omitempty"`
}

// ClusterInfo is the master's view of the cluster, from /_kvdb/cluster.
// Fields the server adds later are ignored; Raw keeps the whole answer.
type ClusterInfo struct {
	// Node is the node that answered.
	Node Member `json:"node"`
	// Replicas is how many volumes hold each value.
	Replicas int `json:"replicas"`
	// Members are the nodes gossip sees alive, by name.
	Members []Member `json:"members"`
	// Departed are the nodes gossip saw die or leave.
	Departed []Member `json:"departed"`
	Ring     RingInfo `json:"ring"`
	// Merging names the volumes whose index the master is merging in.
	Merging []string `json:"merging"`
	// PendingDeletes counts, per volume, deleted or replaced values still
	// to be removed from it.
	PendingDeletes map[string]int `json:"pending_deletes"`
	// UnderReplicated counts keys with fewer live replicas than Replicas
	// at the last repair scan; RepairCopies the copies repair has made.
	UnderReplicated int   `json:"under_replicated"`
	RepairCopies    int64 `json:"repair_copies"`
	// Rebalance is the progress of moving values to where the ring places
	// them.
	Rebalance RebalanceInfo `json:"rebalance"`
	// RepairStartsIn gives, for each volume that is gone but that records
	// still name as a replica, the seconds until repair stops waiting for
	// it to come back and copies its replicas elsewhere (the master's
	// repair delay after the placement pass that found it gone). Its keys
	// count in UnderReplicated meanwhile. A volume whose wait is over is
	// not listed.
	RepairStartsIn map[string]float64 `json:"repair_starts_in"`
	// Masters describes the masters' Raft: the leader, the term, and each
	// master of the configuration.
	Masters *MastersInfo `json:"masters,omitempty"`

	// Raw is the answer as the master sent it (Client.Cluster fills it
	// in; it is never marshalled).
	Raw json.RawMessage `json:"-"`
}

// RingInfo describes the placement ring.
type RingInfo struct {
	Partitions    int     `json:"partitions"`
	Load          float64 `json:"load"`
	MaxPartitions int     `json:"max_partitions"`
	// Owned is how many partitions each volume owns.
	Owned map[string]int `json:"owned"`
}

// RebalanceInfo is the progress of the master's rebalancing, in the cluster
// document and its metrics.
type RebalanceInfo struct {
	// State is idle (placement matches the ring), settling (membership
	// changed less than RebalanceDelay ago), scanning (a pass is walking
	// the index), moving (the last pass left keys to move), or blocked
	// (fewer volumes outside those draining than replicas).
	State string `json:"state"`
	// Misplaced is the number of keys whose replicas differed from the
	// ring's placement at the last complete pass.
	Misplaced int `json:"misplaced"`
	// Moved, Bytes and Failed count moves since the master started.
	Moved  int64 `json:"moved_total"`
	Bytes  int64 `json:"bytes_total"`
	Failed int64 `json:"failed_total"`
	// PassMoved and PassBytes count the moves of the current pass.
	PassMoved int64 `json:"moved"`
	PassBytes int64 `json:"bytes"`
	// Total is Misplaced as the current pass started (for a progress bar
	// with moved).
	Total int `json:"total"`
	// Rate is the byte budget per second of moves (0: unlimited) and
	// Concurrency how many run at once.
	Rate        int64 `json:"rate_limit"`
	Concurrency int   `json:"concurrency"`
	// Draining names the volumes being drained.
	Draining []string `json:"draining"`
}

// VerifyLimit caps each list of a VerifyReport; its Counts go on counting.
const VerifyLimit = 1000

// VerifyReport is the answer of POST /_kvdb/verify?repair=0|1&deep=0|1.
type VerifyReport struct {
	// Keys is the number of keys in the master's index.
	Keys int64 `json:"keys"`
	// Volumes are the live volumes that were checked, by name.
	Volumes map[string]*VerifyVolume `json:"volumes"`
	// Missing lists replicas the index names that the volume does not hold.
	Missing []VerifyFinding `json:"missing"`
	// Extra lists versions a volume holds that no record references and
	// that are not queued for deletion.
	Extra []VerifyFinding `json:"extra"`
	// Mismatch lists replicas whose checksum in the volume's index differs
	// from the record's (Want is the record's, Got the volume's).
	Mismatch []VerifyFinding `json:"mismatch"`
	// Corrupt lists (deep only) versions whose file fails its checksum,
	// trailer or length check (Error says which).
	Corrupt []VerifyFinding `json:"corrupt"`
	// Orphans lists disagreements between a volume's files and its own
	// index: files no entry describes, entries whose file is missing.
	Orphans []VerifyOrphan `json:"orphans"`
	// UnderReplicated counts keys with fewer live replicas than the
	// replica count, as the index records them.
	UnderReplicated int64 `json:"under_replicated"`
	// Counts are the full counts of the lists above, which stop at
	// VerifyLimit entries, and of Errors.
	Counts VerifyCounts `json:"counts"`
	// Repaired counts, with repair, the findings that were fixed.
	Repaired *VerifyCounts `json:"repaired,omitempty"`
	// Errors are what kept parts of the check from completing (a volume
	// that did not answer, ...): the report is then incomplete.
	Errors  []string `json:"errors"`
	Deep    bool     `json:"deep"`
	Repair  bool     `json:"repair"`
	Seconds float64  `json:"seconds"`
	// Clean is true when nothing was found and nothing failed: every count
	// and UnderReplicated are 0.
	Clean bool `json:"clean"`
}

// VerifyVolume is what verify saw of one volume.
type VerifyVolume struct {
	// Versions is the number of versions in the volume's index.
	Versions int64 `json:"versions"`
	// ScrubbedFiles and ScrubbedBytes are what a deep verify read.
	ScrubbedFiles int64 `json:"scrubbed_files,omitempty"`
	ScrubbedBytes int64 `json:"scrubbed_bytes,omitempty"`
	// Error is why the volume was not checked completely.
	Error string `json:"error,omitempty"`
}

// VerifyFinding is one replica or version that is not as it should be.
type VerifyFinding struct {
	Key      string `json:"key"`
	Version  string `json:"version"` // hex, as in volume URLs
	Volume   string `json:"volume"`
	Want     string `json:"want,omitempty"`  // mismatch: the record's checksum
	Got      string `json:"got,omitempty"`   // mismatch: the volume's
	Error    string `json:"error,omitempty"` // corrupt: what is wrong
	Repaired bool   `json:"repaired,omitempty"`
}

// VerifyOrphan is one disagreement between a volume's files and its index.
type VerifyOrphan struct {
	Volume string `json:"volume"`
	// Path is the file's path on the volume's host.
	Path string `json:"path"`
	// Kind is "unindexed file" (a file no index entry describes: reported
	// only, never removed) or "missing file" (an entry whose file is gone:
	// repair removes the entry and replaces the copy).
	Kind     string `json:"kind"`
	Key      string `json:"key,omitempty"`
	Version  string `json:"version,omitempty"`
	Error    string `json:"error,omitempty"`
	Repaired bool   `json:"repaired,omitempty"`
}

// VerifyCounts counts findings by category.
type VerifyCounts struct {
	Missing  int64 `json:"missing"`
	Extra    int64 `json:"extra"`
	Mismatch int64 `json:"mismatch"`
	Corrupt  int64 `json:"corrupt"`
	Orphans  int64 `json:"orphans"`
	Errors   int64 `json:"errors,omitempty"`
}

// DrainStatus is the answer of /_kvdb/drain/VOLUME: POST starts draining
// the volume (moving every value off it), DELETE stops, GET reports.
type DrainStatus struct {
	Volume   string `json:"volume"`
	Draining bool   `json:"draining"`
	// Keys is how many keys name the volume as a replica at the last
	// complete pass; Done is true once that is 0 by a pass that began
	// after the drain did.
	Keys int64 `json:"keys"`
	Done bool  `json:"done"`
	// Blocked explains why nothing can move, if nothing can.
	Blocked string `json:"blocked,omitempty"`
}

// MastersInfo is the masters' Raft as the answering master sees it.
type MastersInfo struct {
	// Leader and LeaderAddr name the leader and its HTTP address (empty
	// while there is none).
	Leader     string `json:"leader"`
	LeaderAddr string `json:"leader_addr"`
	// State is the answering master's Raft state (Leader, Follower,
	// Candidate), Term its current term, Applied and Commit its last
	// applied and committed log indexes.
	State   string `json:"state"`
	Term    uint64 `json:"term"`
	Applied uint64 `json:"applied"`
	Commit  uint64 `json:"commit"`
	// Servers are the masters of the Raft configuration.
	Servers []MasterInfo `json:"servers"`
}

// MasterInfo is one master of the Raft configuration.
type MasterInfo struct {
	Name string `json:"name"`
	// Addr is its HTTP address as gossip reports it (empty when gossip
	// does not see it), Raft its transport address.
	Addr  string `json:"addr"`
	Raft  string `json:"raft"`
	Voter bool   `json:"voter"`
	// Alive says whether gossip sees it; Leader whether it leads;
	// Applied is the last log index it published as applied.
	Alive   bool   `json:"alive"`
	Leader  bool   `json:"leader"`
	Applied uint64 `json:"applied"`
}
