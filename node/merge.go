package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
)

// maybeMerge starts merging vol's own index into the master's index if the
// master has never merged it: that is how a master whose index was lost (or
// is new) learns every key again.
func (m *Master) maybeMerge(vol Member) {
	if !m.leads() {
		return
	}
	m.mergeMu.Lock()
	defer m.mergeMu.Unlock()
	if m.merged[vol.Name] || m.merging[vol.Name] {
		return
	}
	known, err := m.cat.isKnown(vol.Name)
	if err != nil {
		m.log.Error("index", "err", err)
		return
	}
	if known {
		m.merged[vol.Name] = true
		return
	}
	m.merging[vol.Name] = true
	m.mergeStarts++
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := m.mergeVolume(vol)
		m.mergeMu.Lock()
		delete(m.merging, vol.Name)
		if err == nil {
			m.merged[vol.Name] = true
		}
		m.mergeMu.Unlock()
		if err != nil {
			m.log.Warn("merging volume index failed; retrying", "volume", vol.Name, "err", err)
			select {
			case <-m.stop:
			case <-time.After(time.Second):
				m.gossip.notify() // the next view refresh retries the merge
			}
		}
	}()
}

// mergeVolume pages through vol's index and adds what the master lacks:
// the newest version of each key wins; equal versions add a replica.
func (m *Master) mergeVolume(vol Member) error {
	start, startVer := "", ""
	entries := 0
	for {
		select {
		case <-m.stop:
			return errors.New("stopping")
		default:
		}
		u := "http://" + vol.HTTP + "/" + ReservedPrefix + "index?limit=1000&start=" + url.QueryEscape(start) + "&start_version=" + startVer
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI(m.sec.signURL(fasthttp.MethodGet, u))
		err := m.client.DoTimeout(req, resp, 60*time.Second)
		var page indexPage
		if err == nil && resp.StatusCode() != fasthttp.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode())
		}
		if err == nil {
			err = json.Unmarshal(resp.Body(), &page)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if err != nil {
			return fmt.Errorf("list index of %s: %w", vol.Name, err)
		}
		for _, e := range page.Entries {
			if err := m.mergeEntry(vol, e); err != nil {
				return err
			}
			entries++
		}
		if page.Next == "" {
			break
		}
		start, startVer = page.Next, page.NextVersion
	}
	if err := m.cat.setKnown(vol.Name); err != nil {
		return err
	}
	if entries > 0 {
		m.log.Info("merged volume index", "volume", vol.Name, "entries", entries)
	}
	return nil
}

// mergeEntry merges one entry of vol's index: a value's, a multipart
// part's, or a manifest blob's, which is read from vol to rebuild its
// object (mergeManifest).
func (m *Master) mergeEntry(vol Member, e indexEntry) error {
	key := []byte(e.Key)
	if validateStoredKey(key) != nil {
		return nil
	}
	ver, err := parseVersion([]byte(e.Version))
	if err != nil {
		return nil
	}
	sum, err := strconv.ParseUint(e.Checksum, 16, 64)
	if err != nil {
		return nil
	}
	rec := Record{Version: ver, Size: e.Size, Checksum: sum, ModTime: time.Unix(0, e.ModTime).UTC()}
	if obj, ok := bytes.CutPrefix(key, []byte(manifestBlobPrefix)); ok {
		mb, err := m.readManifestBlob(vol, key, obj, &rec)
		if err != nil || mb == nil {
			return err
		}
		return m.cat.mergeManifest(vol.Name, key, rec, mb)
	}
	return m.cat.mergeEntry(vol.Name, key, rec)
}

// maxManifestBlob bounds a manifest blob a merge reads (10,000 parts of a
// few hundred bytes each, and the metadata).
const maxManifestBlob = 16 << 20

// readManifestBlob reads version rec of the manifest blob bk (of object
// key obj) from vol. A blob that is gone, or that does not hold what its
// key and index entry say, is skipped (nil, with a warning): verify and
// scrub deal with bad copies, and another copy may rebuild the object. An
// error is a failure to ask, for the merge to retry.
func (m *Master) readManifestBlob(vol Member, bk, obj []byte, rec *Record) (*manifestBlob, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	// A read like a client's of a redirect (the key's "_" escaped, out of
	// the admin paths), signed when the cluster has a secret.
	u := appendBlobURL(make([]byte, 0, 64+3*len(bk)), vol.HTTP, bk, rec.Version)
	if m.sec != nil {
		u = m.sec.appendReadSig(u, bk, rec.Version, time.Now().Add(time.Minute).Unix())
	}
	req.SetRequestURIBytes(u)
	req.URI().DisablePathNormalizing = true
	if err := m.client.DoTimeout(req, resp, 60*time.Second); err != nil {
		return nil, fmt.Errorf("read manifest blob %q from %s: %w", bk, vol.Name, err)
	}
	switch st := resp.StatusCode(); {
	case st == fasthttp.StatusNotFound:
		return nil, nil // deleted since the listing
	case st != fasthttp.StatusOK:
		return nil, fmt.Errorf("read manifest blob %q from %s: status %d", bk, vol.Name, st)
	}
	body := resp.Body()
	var mb manifestBlob
	bad := ""
	switch {
	case len(body) > maxManifestBlob:
		bad = "too large"
	case xxhash.Sum64(body) != rec.Checksum:
		bad = "checksum mismatch"
	case json.Unmarshal(body, &mb) != nil:
		bad = "unreadable"
	case mb.Key != string(obj) || mb.Manifest.Version != rec.Version || len(mb.Manifest.Parts) == 0:
		bad = "names another object or version"
	}
	if bad != "" {
		m.log.Warn("skipping a bad manifest blob in a merge", "volume", vol.Name, "key", string(bk), "version", formatVersion(rec.Version), "reason", bad)
		return nil, nil
	}
	return &mb, nil
}
