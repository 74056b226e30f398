package s3

import (
	"encoding/xml"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node"
	"github.com/kvdb/kvdb/node/client"
)

const xmlns = "http://s3.amazonaws.com/doc/2006-03-01/"

// owner is the one owner of everything: kvdb has no accounts.
type owner struct {
	ID          string `xml:"ID"`
	DisplayName string `xml:"DisplayName"`
}

var theOwner = owner{ID: "kvdb", DisplayName: "kvdb"}

// writeXML answers 200 with v as an XML document.
func writeXML(ctx *fasthttp.RequestCtx, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		panic(err) // the documents are the package's own types
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/xml")
	ctx.Response.SetBodyRaw(append([]byte(xml.Header), b...))
}

// s3Time renders a time as S3's XML documents do (millisecond ISO 8601).
func s3Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

type listAllMyBucketsResult struct {
	XMLName xml.Name       `xml:"ListAllMyBucketsResult"`
	Xmlns   string         `xml:"xmlns,attr"`
	Owner   owner          `xml:"Owner"`
	Buckets []bucketResult `xml:"Buckets>Bucket"`
}

type bucketResult struct {
	Name         string `xml:"Name"`
	CreationDate string `xml:"CreationDate"`
}

func (s *Server) listBuckets(r *request) *apiError {
	var list client.BucketList
	if aerr := s.masterJSON(&r.id, "GET", "/_kvdb/s3/buckets", nil, &list); aerr != nil {
		return aerr
	}
	out := listAllMyBucketsResult{Xmlns: xmlns, Owner: theOwner, Buckets: []bucketResult{}}
	for _, b := range list.Buckets {
		out.Buckets = append(out.Buckets, bucketResult{Name: b.Name, CreationDate: s3Time(b.Created)})
	}
	writeXML(r.ctx, out)
	return nil
}

// bucketSubresources are the bucket configurations kvdb does not have: a
// request for one is answered NotImplemented.
var bucketSubresources = []string{
	"accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory",
	"lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls",
	"policy", "policyStatus", "publicAccessBlock", "replication", "requestPayment",
	"tagging", "versions", "website",
}

func (s *Server) serveBucket(r *request) *apiError {
	ctx := r.ctx
	args := ctx.QueryArgs()
	if node.ValidateBucketName(r.bucket) != nil {
		if ctx.IsPut() {
			return errBucketName
		}
		return errNoSuchBucket
	}
	for _, sub := range bucketSubresources {
		if args.Has(sub) {
			return errNotImplemented
		}
	}
	switch {
	case ctx.IsGet() && args.Has("location"):
		return s.bucketLocation(r)
	case ctx.IsGet() && args.Has("versioning"):
		if aerr := s.checkBucket(&r.id, r.bucket); aerr != nil {
			return aerr
		}
		writeXML(ctx, struct {
			XMLName xml.Name `xml:"VersioningConfiguration"`
			Xmlns   string   `xml:"xmlns,attr"`
		}{Xmlns: xmlns})
		return nil
	case ctx.IsGet() && args.Has("acl"):
		if aerr := s.checkBucket(&r.id, r.bucket); aerr != nil {
			return aerr
		}
		writeXML(ctx, ownerACL())
		return nil
	case ctx.IsGet() && args.Has("uploads"):
		return s.listUploads(r) // multipart.go
	case ctx.IsGet() && string(args.Peek("list-type")) == "2":
		return s.listObjectsV2(r)
	case ctx.IsGet():
		return s.listObjectsV1(r)
	case ctx.IsHead():
		if aerr := s.checkBucket(&r.id, r.bucket); aerr != nil {
			return aerr
		}
		ctx.Response.Header.Set("X-Amz-Bucket-Region", s.cfg.Region)
		ctx.SetStatusCode(fasthttp.StatusOK)
		return nil
	case ctx.IsPut():
		if args.Has("acl") || args.Has("versioning") {
			return errNotImplemented
		}
		return s.createBucket(r)
	case ctx.IsDelete():
		if aerr := s.masterJSON(&r.id, "DELETE", "/_kvdb/s3/bucket/"+r.bucket, nil, nil); aerr != nil {
			return aerr
		}
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return nil
	case ctx.IsPost() && args.Has("delete"):
		return s.deleteObjects(r)
	}
	return errMethodNotAllowed
}

// checkBucket answers NoSuchBucket unless the bucket exists.
func (s *Server) checkBucket(id *identity, bucket string) *apiError {
	return s.masterJSON(id, "GET", "/_kvdb/s3/bucket/"+bucket, nil, nil)
}

func (s *Server) bucketLocation(r *request) *apiError {
	if aerr := s.checkBucket(&r.id, r.bucket); aerr != nil {
		return aerr
	}
	region := s.cfg.Region
	if region == "us-east-1" {
		region = "" // as S3 answers for us-east-1
	}
	writeXML(r.ctx, struct {
		XMLName xml.Name `xml:"LocationConstraint"`
		Xmlns   string   `xml:"xmlns,attr"`
		Region  string   `xml:",chardata"`
	}{Xmlns: xmlns, Region: region})
	return nil
}

func (s *Server) createBucket(r *request) *apiError {
	// The body, if any, is a CreateBucketConfiguration (a location
	// constraint): read and checked like any signed payload, then ignored.
	b, aerr := s.newBody(r.ctx, &r.id)
	if aerr != nil {
		return aerr
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(b, 64<<10)); err != nil {
		if f := b.failure(); f != nil {
			return f
		}
		return errIncompleteBody
	}
	if aerr := s.masterJSON(&r.id, "PUT", "/_kvdb/s3/bucket/"+r.bucket, nil, nil); aerr != nil {
		return aerr
	}
	r.ctx.Response.Header.Set("Location", "/"+r.bucket)
	r.ctx.SetStatusCode(fasthttp.StatusOK)
	return nil
}

type accessControlPolicy struct {
	XMLName xml.Name `xml:"AccessControlPolicy"`
	Xmlns   string   `xml:"xmlns,attr"`
	Owner   owner    `xml:"Owner"`
	Grants  []grant  `xml:"AccessControlList>Grant"`
}

type grant struct {
	Grantee struct {
		XMLNS       string `xml:"xmlns:xsi,attr"`
		Type        string `xml:"xsi:type,attr"`
		ID          string `xml:"ID"`
		DisplayName string `xml:"DisplayName"`
	} `xml:"Grantee"`
	Permission string `xml:"Permission"`
}

// ownerACL is the ACL of every bucket and object: the owner has full
// control (kvdb's access is by key, not by ACL).
func ownerACL() accessControlPolicy {
	var g grant
	g.Grantee.XMLNS = "http://www.w3.org/2001/XMLSchema-instance"
	g.Grantee.Type = "CanonicalUser"
	g.Grantee.ID, g.Grantee.DisplayName = theOwner.ID, theOwner.DisplayName
	g.Permission = "FULL_CONTROL"
	return accessControlPolicy{Xmlns: xmlns, Owner: theOwner, Grants: []grant{g}}
}
