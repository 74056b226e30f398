package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

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
			if err := m.mergeEntry(vol.Name, e); err != nil {
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

func (m *Master) mergeEntry(vol string, e indexEntry) error {
	key := []byte(e.Key)
	if ValidateKey(key) != nil {
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
	return m.cat.mergeEntry(vol, key, Record{Version: ver, Size: e.Size, Checksum: sum, ModTime: time.Unix(0, e.ModTime).UTC()})
}
