package client

import "time"

// The JSON documents of the master's multipart endpoints for the S3
// gateway (/_kvdb/s3/mp/BUCKET/KEY and /_kvdb/s3/uploads/BUCKET). Like the
// rest of s3.go they are internal to kvdb.

// Upload is a multipart upload under way.
type Upload struct {
	// Key is the object's key within its bucket.
	Key       string    `json:"key"`
	ID        string    `json:"id"`
	Initiated time.Time `json:"initiated"`
	// Meta is what CreateMultipartUpload's headers asked the object to keep.
	Meta *ObjectMeta `json:"meta,omitempty"`
}

// Part is one part of an upload.
type Part struct {
	Number   int       `json:"n"`
	Size     int64     `json:"size"`
	MD5      string    `json:"md5"` // lower-case hex: the part's S3 ETag
	Modified time.Time `json:"modified"`
}

// PartList is the answer of GET /_kvdb/s3/mp/BUCKET/KEY?id=ID&after=N&
// limit=M: the upload and its parts numbered above N, in order.
type PartList struct {
	Upload    Upload `json:"upload"`
	Parts     []Part `json:"parts"`
	Truncated bool   `json:"truncated"`
	// Next is the last part number of this page when Truncated.
	Next int `json:"next,omitempty"`
}

// UploadList is the answer of GET /_kvdb/s3/uploads/BUCKET?prefix=&
// delimiter=&key=&id=&limit=: the uploads under way, by key then ID, after
// (key, id); keys that hold the delimiter after the prefix are rolled up
// into Prefixes.
type UploadList struct {
	Uploads   []Upload `json:"uploads"`
	Prefixes  []string `json:"prefixes"`
	Truncated bool     `json:"truncated"`
	NextKey   string   `json:"next_key,omitempty"`
	NextID    string   `json:"next_id,omitempty"`
}

// CompletePart is one entry of the part list a CompleteMultipartUpload
// names, the body of POST /_kvdb/s3/mp/BUCKET/KEY?id=ID&complete as a JSON
// array.
type CompletePart struct {
	Number int    `json:"n"`
	ETag   string `json:"etag"` // as the client sent it, quoted or not
}
