package s3

import (
	"encoding/base64"
	"encoding/xml"
	"net/url"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
)

type listEntry struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
	Owner        *owner `xml:"Owner,omitempty"`
	StorageClass string `xml:"StorageClass"`
}

type commonPrefix struct {
	Prefix string `xml:"Prefix"`
}

// listBucketResult is both listings' document; the pointer fields are
// present (possibly empty) exactly when the request had the parameter,
// as S3 answers (s3-tests check that).
type listBucketResult struct {
	XMLName               xml.Name       `xml:"ListBucketResult"`
	Xmlns                 string         `xml:"xmlns,attr"`
	Name                  string         `xml:"Name"`
	Prefix                string         `xml:"Prefix"`
	Marker                *string        `xml:"Marker"`
	ContinuationToken     *string        `xml:"ContinuationToken"`
	StartAfter            *string        `xml:"StartAfter"`
	KeyCount              *int           `xml:"KeyCount"`
	MaxKeys               int            `xml:"MaxKeys"`
	Delimiter             *string        `xml:"Delimiter"`
	EncodingType          string         `xml:"EncodingType,omitempty"`
	IsTruncated           bool           `xml:"IsTruncated"`
	NextMarker            string         `xml:"NextMarker,omitempty"`
	NextContinuationToken string         `xml:"NextContinuationToken,omitempty"`
	Contents              []listEntry    `xml:"Contents"`
	CommonPrefixes        []commonPrefix `xml:"CommonPrefixes"`
}

// listParams are the parameters both listings share.
type listParams struct {
	prefix, delimiter string
	maxKeys           int
	encode            bool
}

func parseListParams(args *fasthttp.Args) (listParams, *apiError) {
	p := listParams{prefix: string(args.Peek("prefix")), delimiter: string(args.Peek("delimiter")), maxKeys: 1000}
	if v := args.Peek("max-keys"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			return p, newError(fasthttp.StatusBadRequest, "InvalidArgument", "max-keys must be a number from 0")
		}
		p.maxKeys = min(n, 1000)
	}
	switch string(args.Peek("encoding-type")) {
	case "":
	case "url":
		p.encode = true
	default:
		return p, newError(fasthttp.StatusBadRequest, "InvalidArgument", "Invalid Encoding Method specified in Request")
	}
	return p, nil
}

// enc applies encoding-type=url: keys and prefixes percent-encoded (RFC
// 3986, '/' kept), so that keys holding characters XML 1.0 cannot carry
// survive.
func (p *listParams) enc(s string) string {
	if !p.encode {
		return s
	}
	return uriEncode(s, true)
}

func optional(args *fasthttp.Args, name string, p *listParams) *string {
	if !args.Has(name) {
		return nil
	}
	v := p.enc(string(args.Peek(name)))
	return &v
}

// page asks the master for one page of the bucket's listing.
func (s *Server) page(r *request, p *listParams, after string) (client.ObjectListing, *apiError) {
	q := url.Values{}
	q.Set("prefix", p.prefix)
	q.Set("delimiter", p.delimiter)
	q.Set("after", after)
	q.Set("limit", strconv.Itoa(p.maxKeys))
	var l client.ObjectListing
	aerr := s.masterJSON(&r.id, "GET", "/_kvdb/s3/list/"+r.bucket+"?"+q.Encode(), nil, &l)
	return l, aerr
}

func (s *Server) fill(out *listBucketResult, l *client.ObjectListing, p *listParams, withOwner bool) {
	out.IsTruncated = l.Truncated
	out.Contents = make([]listEntry, 0, len(l.Objects))
	for _, o := range l.Objects {
		e := listEntry{Key: p.enc(o.Key), LastModified: s3Time(o.Modified), ETag: o.ETag, Size: o.Size, StorageClass: "STANDARD"}
		if withOwner {
			ow := theOwner
			e.Owner = &ow
		}
		out.Contents = append(out.Contents, e)
	}
	for _, cp := range l.Prefixes {
		out.CommonPrefixes = append(out.CommonPrefixes, commonPrefix{Prefix: p.enc(cp)})
	}
	if p.encode {
		out.EncodingType = "url"
	}
}

func (s *Server) listObjectsV2(r *request) *apiError {
	args := r.ctx.QueryArgs()
	p, aerr := parseListParams(args)
	if aerr != nil {
		return aerr
	}
	after := string(args.Peek("start-after"))
	if args.Has("continuation-token") {
		tok, err := base64.RawURLEncoding.DecodeString(string(args.Peek("continuation-token")))
		if err != nil || len(tok) == 0 {
			return newError(fasthttp.StatusBadRequest, "InvalidArgument", "The continuation token provided is incorrect")
		}
		after = string(tok)
	}
	l, aerr := s.page(r, &p, after)
	if aerr != nil {
		return aerr
	}
	out := listBucketResult{Xmlns: xmlns, Name: r.bucket, Prefix: p.enc(p.prefix), MaxKeys: p.maxKeys,
		Delimiter: optional(args, "delimiter", &p), StartAfter: optional(args, "start-after", &p)}
	if args.Has("continuation-token") {
		v := string(args.Peek("continuation-token"))
		out.ContinuationToken = &v
	}
	s.fill(&out, &l, &p, string(args.Peek("fetch-owner")) == "true")
	n := len(l.Objects) + len(l.Prefixes)
	out.KeyCount = &n
	if l.Truncated {
		out.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(l.Next))
	}
	writeXML(r.ctx, out)
	return nil
}

func (s *Server) listObjectsV1(r *request) *apiError {
	args := r.ctx.QueryArgs()
	p, aerr := parseListParams(args)
	if aerr != nil {
		return aerr
	}
	marker := string(args.Peek("marker"))
	l, aerr := s.page(r, &p, marker)
	if aerr != nil {
		return aerr
	}
	m := p.enc(marker)
	out := listBucketResult{Xmlns: xmlns, Name: r.bucket, Prefix: p.enc(p.prefix), MaxKeys: p.maxKeys,
		Marker: &m, Delimiter: optional(args, "delimiter", &p)}
	s.fill(&out, &l, &p, true)
	if l.Truncated {
		out.NextMarker = p.enc(l.Next)
	}
	writeXML(r.ctx, out)
	return nil
}
