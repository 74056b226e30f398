package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

func (m *Master) deleteBlob(addr string, key []byte, version uint64) error {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodDelete)
	req.SetRequestURI(m.sec.signURL(fasthttp.MethodDelete, internalURL(addr, "blob/", key, version)))
	req.URI().DisablePathNormalizing = true
	if err := m.client.DoTimeout(req, resp, 30*time.Second); err != nil {
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

// putToVolume streams body into one volume.
func (m *Master) putToVolume(vol Member, key []byte, version uint64, size int64, body io.Reader) putResult {
	// The signed URL names the size: a captured request cannot be replayed
	// with another body length.
	return m.blobRequest(vol, fasthttp.MethodPut, internalURL(vol.HTTP, "blob/", key, version)+"&n="+strconv.FormatInt(size, 10), body, size)
}

// pull asks dst to copy one version of key from src.
func (m *Master) pull(dst, src Member, key []byte, version uint64) putResult {
	res := putResult{vol: dst.Name}
	op := internalURL(dst.HTTP, "pull/", key, version)[len("http://"+dst.HTTP+"/"+ReservedPrefix):] + "&from=" + src.HTTP
	// The volume ticks while it copies: no idle timeout cuts a slow copy
	// of a large value.
	l, err := m.volumeStream(context.Background(), dst, fasthttp.MethodPost, op, func(streamLine) {})
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

// blobRequest sends one request that makes vol store a blob (body, if not
// nil, is streamed) and reads the volume's answer.
func (m *Master) blobRequest(vol Member, method, uri string, body io.Reader, size int64) putResult {
	res := putResult{vol: vol.Name}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(m.sec.signURL(method, uri))
	req.URI().DisablePathNormalizing = true
	if body != nil {
		req.SetBodyStream(body, int(size))
	}
	if err := m.client.Do(req, resp); err != nil {
		res.err = err
		return res
	}
	return parseBlobReply(res, resp)
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
