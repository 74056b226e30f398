package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// The master↔volume wire protocol, from the caller's side: one
// volumeClient per node, used by the master (writes on the proxy path,
// copies, deletions, verify) and by a volume coordinating a redirected
// write (writes to the other replicas, copies to spares). Every request is
// signed with the cluster secret, when there is one (security.go); the
// endpoints are listed in doc.go.
type volumeClient struct {
	hc  *fasthttp.Client
	sec *signer
}

// putResult is one replica's outcome of a write.
type putResult struct {
	vol      string
	size     int64
	checksum uint64
	err      error
	status   int // the volume's status when it answered with an error
}

// deleteBlob deletes one version of key from the volume at addr; a version
// already gone is no error.
func (vc *volumeClient) deleteBlob(addr string, key []byte, version uint64) error {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodDelete)
	req.SetRequestURI(vc.sec.signURL(fasthttp.MethodDelete, internalURL(addr, "blob/", key, version)))
	req.URI().DisablePathNormalizing = true
	if err := vc.hc.DoTimeout(req, resp, 30*time.Second); err != nil {
		return err
	}
	switch resp.StatusCode() {
	case fasthttp.StatusOK, fasthttp.StatusNotFound:
		return nil
	}
	return fmt.Errorf("volume %s answered %d: %s", addr, resp.StatusCode(), bytes.TrimSpace(resp.Body()))
}

func internalURL(addr, op string, key []byte, version uint64) string {
	b := make([]byte, 0, 64+len(key)*3)
	b = append(b, "http://"...)
	b = append(b, addr...)
	b = append(b, "/"+ReservedPrefix...)
	b = append(b, op...)
	b = AppendEscapedKey(b, key)
	b = append(b, "?v="...)
	b = appendVersion(b, version)
	return string(b)
}

// putBlob streams body (size bytes, -1: unknown) into vol as version of
// key.
func (vc *volumeClient) putBlob(vol Member, key []byte, version uint64, size int64, body io.Reader) putResult {
	// The signed URL names the size: a captured request cannot be replayed
	// with another body length.
	uri := internalURL(vol.HTTP, "blob/", key, version) + "&n=" + strconv.FormatInt(size, 10)
	res := putResult{vol: vol.Name}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPut)
	req.SetRequestURI(vc.sec.signURL(fasthttp.MethodPut, uri))
	req.URI().DisablePathNormalizing = true
	req.SetBodyStream(body, int(size))
	if err := vc.hc.Do(req, resp); err != nil {
		res.err = err
		return res
	}
	return parseBlobReply(res, resp)
}

// pull asks dst to copy one version of key from src.
func (vc *volumeClient) pull(dst, src Member, key []byte, version uint64) putResult {
	res := putResult{vol: dst.Name}
	op := internalURL(dst.HTTP, "pull/", key, version)[len("http://"+dst.HTTP+"/"+ReservedPrefix):] + "&from=" + src.HTTP
	// The volume ticks while it copies: no idle timeout cuts a slow copy
	// of a large value.
	l, err := vc.stream(context.Background(), dst, fasthttp.MethodPost, op, func(streamLine) {})
	switch {
	case err != nil:
		res.err, res.status = err, l.Status
	default:
		sum, perr := strconv.ParseUint(l.Checksum, 16, 64)
		if perr != nil {
			res.err = fmt.Errorf("bad checksum %q", l.Checksum)
			break
		}
		res.size, res.checksum = l.Size, sum
	}
	return res
}

func parseBlobReply(res putResult, resp *fasthttp.Response) putResult {
	if resp.StatusCode() != fasthttp.StatusCreated {
		res.status = resp.StatusCode()
		res.err = fmt.Errorf("status %d: %s", resp.StatusCode(), bytes.TrimSpace(resp.Body()))
		return res
	}
	var br blobReply
	if err := json.Unmarshal(resp.Body(), &br); err != nil {
		res.err = fmt.Errorf("bad reply: %w", err)
		return res
	}
	sum, err := strconv.ParseUint(br.Checksum, 16, 64)
	if err != nil {
		res.err = fmt.Errorf("bad checksum %q", br.Checksum)
		return res
	}
	res.size, res.checksum = br.Size, sum
	return res
}

// stream sends a request to one of vol's streaming endpoints (op is
// the path after /_kvdb/) and calls fn with every line but ticks and the
// last, which it returns.
func (vc *volumeClient) stream(ctx context.Context, vol Member, method, op string, fn func(streamLine)) (streamLine, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(vc.sec.signURL(method, "http://"+vol.HTTP+"/"+ReservedPrefix+op))
	resp.StreamBody = true
	if err := vc.hc.Do(req, resp); err != nil {
		return streamLine{}, err
	}
	// Closing before the end cuts the connection, which stops the volume.
	defer resp.CloseBodyStream()
	if resp.StatusCode() != fasthttp.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.BodyStream(), 512))
		return streamLine{}, fmt.Errorf("status %d: %s", resp.StatusCode(), trimBody(b))
	}
	sc := bufio.NewScanner(resp.BodyStream())
	sc.Buffer(make([]byte, 0, 16<<10), 1<<20)
	for sc.Scan() {
		if err := ctx.Err(); err != nil {
			return streamLine{}, err
		}
		var l streamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return streamLine{}, fmt.Errorf("bad line from the volume: %w", err)
		}
		switch l.T {
		case "tick":
		case "done":
			if l.Error != "" {
				return l, errors.New(l.Error)
			}
			return l, nil
		default:
			fn(l)
		}
	}
	if err := sc.Err(); err != nil {
		return streamLine{}, err
	}
	return streamLine{}, errors.New("the answer ended before its last line")
}

// The master's shorthands.

func (m *Master) deleteBlob(addr string, key []byte, version uint64) error {
	return m.vc.deleteBlob(addr, key, version)
}

func (m *Master) pull(dst, src Member, key []byte, version uint64) putResult {
	return m.vc.pull(dst, src, key, version)
}

func (m *Master) volumeStream(ctx context.Context, vol Member, method, op string, fn func(streamLine)) (streamLine, error) {
	return m.vc.stream(ctx, vol, method, op, fn)
}
