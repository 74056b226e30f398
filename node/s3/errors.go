package s3

import (
	"encoding/xml"
	"fmt"

	"github.com/valyala/fasthttp"
)

// apiError is an S3 error: the HTTP status, the S3 code and a message.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func newError(status int, code, msg string) *apiError {
	return &apiError{status: status, code: code, msg: msg}
}

func errorf(status int, code, format string, args ...any) *apiError {
	return newError(status, code, fmt.Sprintf(format, args...))
}

// The errors answered as they are; others are made with errorf.
var (
	errAccessDenied      = newError(fasthttp.StatusForbidden, "AccessDenied", "Access Denied")
	errSignature         = newError(fasthttp.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
	errUnknownKey        = newError(fasthttp.StatusForbidden, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
	errSkew              = newError(fasthttp.StatusForbidden, "RequestTimeTooSkewed", "The difference between the request time and the server's time is too large.")
	errExpired           = newError(fasthttp.StatusForbidden, "AccessDenied", "Request has expired")
	errNoSuchBucket      = newError(fasthttp.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
	errNoSuchKey         = newError(fasthttp.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
	errBucketExists      = newError(fasthttp.StatusConflict, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.")
	errBucketNotEmpty    = newError(fasthttp.StatusConflict, "BucketNotEmpty", "The bucket you tried to delete is not empty")
	errBucketName        = newError(fasthttp.StatusBadRequest, "InvalidBucketName", "The specified bucket is not valid.")
	errPrecondition      = newError(fasthttp.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
	errBadDigest         = newError(fasthttp.StatusBadRequest, "BadDigest", "The Content-MD5 you specified did not match what we received.")
	errInvalidDigest     = newError(fasthttp.StatusBadRequest, "InvalidDigest", "The Content-MD5 you specified is not valid.")
	errSHA256Mismatch    = newError(fasthttp.StatusBadRequest, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
	errIncompleteBody    = newError(fasthttp.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
	errTooLarge          = newError(fasthttp.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
	errMalformedXML      = newError(fasthttp.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.")
	errMissingLength     = newError(fasthttp.StatusLengthRequired, "MissingContentLength", "You must provide the Content-Length HTTP header.")
	errNotImplemented    = newError(fasthttp.StatusNotImplemented, "NotImplemented", "A header or query you provided implies functionality that is not implemented.")
	errMethodNotAllowed  = newError(fasthttp.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
	errUnavailable       = newError(fasthttp.StatusServiceUnavailable, "ServiceUnavailable", "Please reduce your request rate or try again: the storage cluster is not available.")
	errInternal          = newError(fasthttp.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	errInsufficientSpace = newError(fasthttp.StatusInsufficientStorage, "InsufficientStorage", "The storage cluster has no room for the object.")
	errKeyTooLong        = newError(fasthttp.StatusBadRequest, "KeyTooLongError", "Your key is too long")
	errMetadataTooLarge  = newError(fasthttp.StatusBadRequest, "MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.")
)

// errorDoc is the XML body of an error answer.
type errorDoc struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Resource  string   `xml:"Resource,omitempty"`
	RequestID string   `xml:"RequestId"`
}

// writeError answers e (a HEAD answer has no body).
func writeError(ctx *fasthttp.RequestCtx, e *apiError, resource, requestID string) {
	ctx.Response.ResetBody()
	ctx.Response.Header.Del("ETag")
	ctx.Response.Header.Del("Last-Modified")
	ctx.SetStatusCode(e.status)
	if ctx.IsHead() {
		ctx.Response.SkipBody = true
		return
	}
	b, _ := xml.Marshal(errorDoc{Code: e.code, Message: e.msg, Resource: resource, RequestID: requestID})
	ctx.SetContentType("application/xml")
	ctx.Response.SetBodyRaw(append([]byte(xml.Header), b...))
}
