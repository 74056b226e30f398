package client

import "time"

// The JSON documents of the master's endpoints for the S3 gateway (package
// node/s3), under /_kvdb/s3/. They are internal to kvdb: the gateway speaks
// S3 to its clients and these to the master.

// Bucket is one bucket of the S3 face as the master records it.
type Bucket struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// BucketList is the answer of GET /_kvdb/s3/buckets, in name order.
type BucketList struct {
	Buckets []Bucket `json:"buckets"`
}

// ObjectMeta is what S3 keeps about an object beyond its bytes: the MD5
// that S3 clients expect as the ETag, and the headers a PutObject stores
// and a GetObject returns. The master records it per version of a key: a
// later write of the key (through either API) leaves it behind.
type ObjectMeta struct {
	// MD5 is the value's MD5 in lower-case hex (32 digits).
	MD5 string `json:"md5,omitempty"`
	// ETag is a multipart object's S3 ETag, unquoted: the MD5 of its
	// parts' binary MD5s in hex, "-", the part count. MD5 is then empty.
	ETag               string `json:"etag,omitempty"`
	ContentType        string `json:"content_type,omitempty"`
	ContentEncoding    string `json:"content_encoding,omitempty"`
	ContentDisposition string `json:"content_disposition,omitempty"`
	ContentLanguage    string `json:"content_language,omitempty"`
	CacheControl       string `json:"cache_control,omitempty"`
	Expires            string `json:"expires,omitempty"`
	// User holds the x-amz-meta-* headers, by lower-case name without the
	// prefix, with their values as sent.
	User map[string]string `json:"user,omitempty"`
}

// MaxObjectMetaSize bounds an ObjectMeta document, in bytes of JSON. S3
// allows 2 KB of user metadata; the rest are short headers.
const MaxObjectMetaSize = 8 << 10

// ObjectInfo is one object: the answer of GET /_kvdb/s3/object/BUCKET/KEY
// and of the PUT that records its metadata.
type ObjectInfo struct {
	// Key is the object's key within its bucket.
	Key string `json:"key"`
	// Size in bytes, ETag (kvdb's: the quoted xxHash) and Modified are the
	// stored value's, as HEAD /BUCKET/KEY on the native API reports them.
	Size     int64     `json:"size"`
	ETag     string    `json:"etag"`
	Modified time.Time `json:"modified"`
	// Meta is the S3 metadata recorded for this very version; nil when
	// none was (a value written through the native API, or an S3 write
	// cut off between storing the bytes and recording the metadata).
	Meta *ObjectMeta `json:"meta,omitempty"`
	// Location, asked for with ?locate on a GET, is the URL of a volume
	// that serves this version's bytes (what GET /KEY would redirect to,
	// except that ?near=VOLUME makes that volume the first choice when it
	// holds a copy). Volume is that volume's name and Version the
	// version's number, for a gateway beside it that reads its own copy
	// from disk.
	Location string `json:"location,omitempty"`
	Volume   string `json:"volume,omitempty"`
	Version  uint64 `json:"version,omitempty"`
	// Parts is a multipart object's part count (0: one blob).
	Parts int `json:"parts,omitempty"`
	// PartStart and PartSize are where part ?part=N lies in the value.
	PartStart int64 `json:"part_start,omitempty"`
	PartSize  int64 `json:"part_size,omitempty"`
	// PartSums, with ?locate on a multipart object, are its parts' sizes
	// and xxHashes in order: a reader checks each part as it passes.
	PartSums []PartSum `json:"part_sums,omitempty"`
}

// PartSum is the size and xxHash (kvdb's checksum) of one part.
type PartSum struct {
	Size int64  `json:"size"`
	Sum  uint64 `json:"sum"`
}

// S3ETag is the ETag the S3 face shows for the object: the MD5 when its
// metadata records one, else kvdb's own ETag.
func (o *ObjectInfo) S3ETag() string {
	return S3ETagOf(o.Meta, o.ETag)
}

// S3ETagOf is the S3 ETag of a value with metadata meta (nil: none) and
// kvdb ETag tag.
func S3ETagOf(meta *ObjectMeta, tag string) string {
	switch {
	case meta == nil:
	case len(meta.MD5) == 32:
		return `"` + meta.MD5 + `"`
	case meta.ETag != "":
		return `"` + meta.ETag + `"`
	}
	return tag
}

// ObjectEntry is one object of an ObjectListing.
type ObjectEntry struct {
	Key      string    `json:"key"`
	Size     int64     `json:"size"`
	ETag     string    `json:"etag"` // as ObjectInfo.S3ETag
	Modified time.Time `json:"modified"`
}

// ObjectListing is the answer of GET /_kvdb/s3/list/BUCKET?prefix=P&
// delimiter=D&after=A&limit=N: the objects of the bucket whose key starts
// with P and sorts after A, in byte order, with keys that hold D after P
// rolled up into Prefixes (each counted once against N).
type ObjectListing struct {
	Objects  []ObjectEntry `json:"objects"`
	Prefixes []string      `json:"prefixes"`
	// Truncated says more follow; Next is then the last key or prefix of
	// this page, the after= of the next.
	Truncated bool   `json:"truncated"`
	Next      string `json:"next,omitempty"`
}

// S3Error is the body of an error from the /_kvdb/s3/ endpoints: Code is
// the S3 error code the gateway answers with (NoSuchBucket, NoSuchKey,
// BucketAlreadyOwnedByYou, BucketNotEmpty, InvalidBucketName,
// PreconditionFailed).
type S3Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
