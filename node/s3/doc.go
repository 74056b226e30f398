// Package s3 is kvdb's S3-compatible face: a stateless gateway that speaks
// the S3 REST API (AWS Signature V4, XML) to its clients and kvdb's own HTTP
// API to the master. Any number of gateways can run behind a load balancer;
// each is started next to a master or a volume (kvdb master|volume|dev
// --s3 HOST:PORT) or on its own.
//
// Bucket B and object K are kvdb key "B/K": both APIs see the same values.
// Object bytes go through the native API: a PutObject streams the decoded
// body into PUT /B/K, verifying the payload's signatures and checksums as
// it streams and computing the MD5 that S3 clients expect as the ETag (on
// a goroutine one buffer behind the stream); from 1 MiB it takes the
// redirected write path (Expect: 100-continue, the master's 307, the body
// to the coordinating volume), so the bytes never cross the master. A
// multipart part does the same, through the master's part endpoint. A
// GetObject asks the master where the bytes are and streams them from that
// volume itself (S3 clients do not follow kvdb's 302). What S3
// keeps beyond the bytes (buckets, Content-Type and x-amz-meta-* headers,
// the MD5) lives in the master's catalog, behind its /_kvdb/s3/ endpoints
// (node/bucket.go, node/objmeta.go).
//
// The gateway never holds a whole value in memory: bodies stream through
// fixed buffers both ways. It keeps no state of its own between requests.
//
// # Files
//
//	config.go    Config, its defaults and validation
//	server.go    Server: listen, route, request IDs, close
//	errors.go    S3 error codes and the XML error document
//	auth.go      Signature V4 (header and presigned URL) and V2 presigned URLs
//	payload.go   request bodies: aws-chunked decoding, chunk signatures,
//	             trailers, checksums, all checked before the last byte is let through
//	checksum.go  the x-amz-checksum-* algorithms (CRC32, CRC32C, CRC64NVME, SHA1, SHA256)
//	upstream.go  the client side: requests to the master and the volumes
//	bucket.go    ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation
//	list.go      ListObjects (v1) and ListObjectsV2
//	object.go    PutObject, GetObject, HeadObject, DeleteObject(s), CopyObject
//	multipart.go multipart uploads: Create, UploadPart(Copy), Complete, Abort,
//	             ListParts, ListMultipartUploads (parts and manifests on the master)
//	conn.go      connections with idle deadlines and a lingering close
package s3
