package node

import (
	"bytes"
	"time"

	"github.com/valyala/fasthttp"
)

// conditions are a request's preconditions (RFC 9110, section 13):
// If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since. The
// master evaluates them against the key's record (for writes and deletes
// again under the key lock, where the change takes effect), a volume against
// the copy it serves. The slices point into the request's headers: use them
// only while handling it.
type conditions struct {
	ifMatch, ifNoneMatch []byte
	// Zero when absent or not a valid HTTP date (a recipient ignores an
	// invalid date).
	ifUnmodifiedSince, ifModifiedSince time.Time
}

// readConditions reads the precondition headers; any is false when there
// are none (the common case, which allocates nothing).
func readConditions(h *fasthttp.RequestHeader) (c conditions, any bool) {
	if !mayHaveConditions(h.RawHeaders()) {
		return c, false // the redirect's hot path: no Peek, which normalizes its key each time
	}
	c.ifMatch = bytes.TrimSpace(h.Peek("If-Match"))
	c.ifNoneMatch = bytes.TrimSpace(h.Peek("If-None-Match"))
	ius := h.Peek("If-Unmodified-Since")
	ims := h.Peek("If-Modified-Since")
	if len(c.ifMatch) == 0 && len(c.ifNoneMatch) == 0 && len(ius) == 0 && len(ims) == 0 {
		return c, false
	}
	if len(ius) > 0 {
		c.ifUnmodifiedSince, _ = fasthttp.ParseHTTPDate(ius)
	}
	if len(ims) > 0 {
		c.ifModifiedSince, _ = fasthttp.ParseHTTPDate(ims)
	}
	return c, true
}

// mayHaveConditions reports whether a raw header block may carry a
// precondition: some header name starts with "If-", in any case. (A request
// built in memory has no raw headers: then it may.)
func mayHaveConditions(raw []byte) bool {
	if len(raw) == 0 {
		return true
	}
	for len(raw) > 0 {
		if len(raw) >= 3 && raw[0]|0x20 == 'i' && raw[1]|0x20 == 'f' && raw[2] == '-' {
			return true
		}
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			break
		}
		raw = raw[i+1:]
	}
	return false
}

// check evaluates the preconditions in RFC 9110's order (13.2.2) for a read
// (GET, HEAD) or a change (PUT, POST, DELETE) of a key whose current value
// has ETag tag and modification time mtime (found false: the key is absent).
// It returns 0 when the request goes ahead, 304 (reads) or 412.
func (c *conditions) check(read, found bool, tag []byte, mtime time.Time) int {
	mtime = mtime.Truncate(time.Second) // HTTP dates have whole seconds
	switch {
	case len(c.ifMatch) > 0:
		if !found || !etagListMatches(c.ifMatch, tag, true) {
			return fasthttp.StatusPreconditionFailed
		}
	case !c.ifUnmodifiedSince.IsZero():
		if found && mtime.After(c.ifUnmodifiedSince) {
			return fasthttp.StatusPreconditionFailed
		}
	}
	switch {
	case len(c.ifNoneMatch) > 0:
		if found && etagListMatches(c.ifNoneMatch, tag, false) {
			if read {
				return fasthttp.StatusNotModified
			}
			return fasthttp.StatusPreconditionFailed
		}
	case read && found && !c.ifModifiedSince.IsZero():
		if !mtime.After(c.ifModifiedSince) {
			return fasthttp.StatusNotModified
		}
	}
	return 0
}

// reason is the one-line explanation of a 412 or 304 from check.
func conditionReason(status int) string {
	if status == fasthttp.StatusNotModified {
		return "not modified"
	}
	return "precondition failed: the key's current value does not match If-Match, If-None-Match or If-Unmodified-Since"
}

// ifRangeMatches reports whether a Range may be served: there is no If-Range,
// or it names the current ETag or a date not before the modification.
func ifRangeMatches(ctx *fasthttp.RequestCtx, tag []byte, mtime time.Time) bool {
	ir := ctx.Request.Header.Peek("If-Range")
	if len(ir) == 0 {
		return true
	}
	if ir[0] == '"' {
		return bytes.Equal(ir, tag)
	}
	t, err := fasthttp.ParseHTTPDate(ir)
	return err == nil && !mtime.Truncate(time.Second).After(t)
}

// etagListMatches compares a comma-separated entity-tag list (or "*")
// against tag: strong comparison (If-Match: a weak tag never matches) or
// weak (If-None-Match: the W/ prefix is ignored).
func etagListMatches(list, tag []byte, strong bool) bool {
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		item = bytes.TrimSpace(item)
		if bytes.Equal(item, []byte("*")) {
			return true
		}
		if weak, ok := bytes.CutPrefix(item, []byte("W/")); ok {
			if strong {
				continue
			}
			item = weak
		}
		if bytes.Equal(item, tag) {
			return true
		}
	}
	return false
}

// appendLastModified appends the Last-Modified date of a value modified at
// mtime. A response must not say its value was modified after the Date it
// carries (RFC 9110, 8.8.2.1), and fasthttp's Date is refreshed once a
// second (a handler cannot set its own), so it may be up to a second old:
// a value modified within the last second says one second ago. Preconditions
// compare with the true time.
func appendLastModified(dst []byte, mtime time.Time) []byte {
	if limit := time.Now().Add(-time.Second); mtime.After(limit) {
		mtime = limit
	}
	return fasthttp.AppendHTTPDate(dst, mtime)
}
