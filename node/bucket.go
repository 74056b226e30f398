package node

// The master's side of the S3 gateway (package node/s3): bucket records
// here, object metadata and the detailed listing in objmeta.go. The gateway
// is a stateless process that speaks S3 to its clients and kvdb's HTTP API
// to the master: values go through the native PUT /KEY and GET /KEY, and
// what S3 needs beyond them goes through these endpoints under /_kvdb/s3/,
// authorized like the rest of the client API (apikeys.go). S3 bucket B and
// object K are kvdb key "B/K".

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
)

// ErrBucketName refuses a bucket name outside S3's rules.
var ErrBucketName = errors.New("bucket names are 3 to 63 characters of a-z 0-9 . -, begin and end with a letter or digit, hold no .. and are not an IP address")

// ValidateBucketName checks a bucket name against S3's rules for new
// buckets (which also make it a valid first segment of a kvdb key).
func ValidateBucketName(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return ErrBucketName
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		switch {
		case alnum:
		case (c == '.' || c == '-') && i > 0 && i < len(name)-1:
			if c == '.' && (name[i-1] == '.' || name[i+1] == '.') {
				return ErrBucketName
			}
		default:
			return ErrBucketName
		}
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return ErrBucketName
	}
	return nil
}

func bucketKey(name string) []byte { return append([]byte{pfxBucket}, name...) }

// bucketFormat is the first byte of an encoded bucket record, then the
// creation time as a varint of Unix nanoseconds.
const bucketFormat = 1

// bucketLock serializes changes to one bucket: the name, after a NUL no key
// can hold, picks a stripe of the key locks.
func (m *Master) bucketLock(name string) interface{ Unlock() } {
	return m.cat.lock(append([]byte{0}, name...))
}

// bucket reads a bucket record; found is false when there is none.
func (m *Master) bucket(name string) (b client.Bucket, found bool, err error) {
	v, err := m.cat.db().Get(bucketKey(name), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return b, false, nil
	}
	if err != nil {
		return b, false, fmt.Errorf("node: bucket %q: %w", name, err)
	}
	b, err = decodeBucket(name, v)
	return b, err == nil, err
}

func decodeBucket(name string, v []byte) (client.Bucket, error) {
	if len(v) < 2 || v[0] != bucketFormat {
		return client.Bucket{}, fmt.Errorf("node: bucket %q: malformed record", name)
	}
	ns, n := binary.Varint(v[1:])
	if n <= 0 {
		return client.Bucket{}, fmt.Errorf("node: bucket %q: malformed record", name)
	}
	return client.Bucket{Name: name, Created: time.Unix(0, ns).UTC()}, nil
}

// replyS3Error answers an S3 endpoint's error with its S3 code.
func replyS3Error(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	b, _ := json.Marshal(client.S3Error{Code: code, Message: msg})
	replyJSON(ctx, status, b)
}

// handleS3 routes /_kvdb/s3/... (rest is the path after "/_kvdb/s3/").
func (m *Master) handleS3(ctx *fasthttp.RequestCtx, rest []byte) {
	switch {
	case string(rest) == "buckets" && (ctx.IsGet() || ctx.IsHead()):
		m.s3ListBuckets(ctx)
	case bytes.HasPrefix(rest, []byte("bucket/")):
		m.s3Bucket(ctx, string(rest[len("bucket/"):]))
	case bytes.HasPrefix(rest, []byte("object/")):
		key, err := ParseKey(nil, rest[len("object"):])
		if err != nil {
			replyError(ctx, err)
			return
		}
		bucket, obj, ok := bytes.Cut(key, []byte("/"))
		if !ok || len(obj) == 0 {
			replyText(ctx, fasthttp.StatusBadRequest, "want /_kvdb/s3/object/BUCKET/KEY")
			return
		}
		m.s3Object(ctx, key, string(bucket))
	case bytes.HasPrefix(rest, []byte("list/")) && (ctx.IsGet() || ctx.IsHead()):
		m.s3List(ctx, string(rest[len("list/"):]))
	case bytes.HasPrefix(rest, []byte("mp/")):
		key, err := ParseKey(nil, rest[len("mp"):])
		if err != nil {
			replyError(ctx, err)
			return
		}
		bucket, obj, ok := bytes.Cut(key, []byte("/"))
		if !ok || len(obj) == 0 {
			replyText(ctx, fasthttp.StatusBadRequest, "want /_kvdb/s3/mp/BUCKET/KEY")
			return
		}
		m.s3Multipart(ctx, key, string(bucket)) // multipart.go
	case bytes.HasPrefix(rest, []byte("uploads/")) && (ctx.IsGet() || ctx.IsHead()):
		m.s3ListUploads(ctx, string(rest[len("uploads/"):]))
	default:
		replyText(ctx, fasthttp.StatusNotFound, "no such S3 endpoint")
	}
}

// s3ListBuckets answers every bucket, in name order.
func (m *Master) s3ListBuckets(ctx *fasthttp.RequestCtx) {
	out := client.BucketList{Buckets: []client.Bucket{}}
	it := m.cat.db().NewIterator(util.BytesPrefix([]byte{pfxBucket}), nil)
	for it.Next() {
		name := string(it.Key()[1:])
		b, err := decodeBucket(name, it.Value())
		if err != nil {
			m.log.Warn("skipping a malformed bucket record", "bucket", name)
			continue
		}
		out.Buckets = append(out.Buckets, b)
	}
	it.Release()
	if err := it.Error(); err != nil {
		replyError(ctx, fmt.Errorf("node: list buckets: %w", err))
		return
	}
	b, _ := json.Marshal(out)
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// s3Bucket creates, reads or deletes one bucket.
func (m *Master) s3Bucket(ctx *fasthttp.RequestCtx, name string) {
	if err := ValidateBucketName(name); err != nil {
		replyS3Error(ctx, fasthttp.StatusBadRequest, "InvalidBucketName", err.Error())
		return
	}
	switch {
	case ctx.IsGet() || ctx.IsHead():
		b, found, err := m.bucket(name)
		switch {
		case err != nil:
			replyError(ctx, err)
		case !found:
			replyS3Error(ctx, fasthttp.StatusNotFound, "NoSuchBucket", "the bucket does not exist")
		default:
			out, _ := json.Marshal(b)
			replyJSON(ctx, fasthttp.StatusOK, out)
		}
	case ctx.IsPut():
		mu := m.bucketLock(name)
		defer mu.Unlock()
		_, found, err := m.bucket(name)
		if err == nil && found {
			replyS3Error(ctx, fasthttp.StatusConflict, "BucketAlreadyOwnedByYou", "the bucket exists already")
			return
		}
		b := client.Bucket{Name: name, Created: m.cfg.clock().UTC()}
		if err == nil {
			v := binary.AppendVarint([]byte{bucketFormat}, b.Created.UnixNano())
			err = m.cat.put1(bucketKey(name), v, true)
		}
		if err != nil {
			replyError(ctx, err)
			return
		}
		out, _ := json.Marshal(b)
		replyJSON(ctx, fasthttp.StatusCreated, out)
	case ctx.IsDelete():
		// A write into the bucket that checked for it just before may still
		// land after the deletion; its object reappears if the bucket is
		// created again.
		mu := m.bucketLock(name)
		defer mu.Unlock()
		_, found, err := m.bucket(name)
		if err != nil {
			replyError(ctx, err)
			return
		}
		if !found {
			replyS3Error(ctx, fasthttp.StatusNotFound, "NoSuchBucket", "the bucket does not exist")
			return
		}
		it := m.cat.db().NewIterator(util.BytesPrefix(recordKey(nil, []byte(name+"/"))), nil)
		empty := !it.First()
		it.Release()
		if err := it.Error(); err != nil {
			replyError(ctx, fmt.Errorf("node: bucket %q: %w", name, err))
			return
		}
		if !empty {
			replyS3Error(ctx, fasthttp.StatusConflict, "BucketNotEmpty", "the bucket holds objects")
			return
		}
		if err := m.cat.del1(bucketKey(name), true); err != nil {
			replyError(ctx, err)
			return
		}
		replyJSON(ctx, fasthttp.StatusOK, []byte(`{"deleted":`+string(mustJSON(name))+`}`))
	default:
		ctx.Response.Header.Set("Allow", "GET, HEAD, PUT, DELETE")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
