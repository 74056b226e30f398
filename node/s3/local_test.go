package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/kvdb/kvdb/node/client"
)

// TestLocalVolumeReads: a gateway beside a volume (Config.Local) serves
// the copies that volume holds from its disk: whole and ranged GetObjects
// return the right bytes, and the volume's HTTP server sends none of them.
// Keys the volume does not hold are read over HTTP from the others.
func TestLocalVolumeReads(t *testing.T) {
	e := newEnvWith(t, false, 3, nil)
	local := e.vols[0]
	gw, err := New(Config{Addr: "127.0.0.1:0", Master: func() (string, error) { return e.master.Addr(), nil }, Local: local, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	e.endpoint = gw.Addr()
	c := e.minio(false)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "loc", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	const n, size = 8, 3 << 20
	values := map[string][]byte{}
	for i := range n {
		k := fmt.Sprintf("obj%d", i)
		v := make([]byte, size+i)
		r := rand.New(rand.NewPCG(uint64(i), 7))
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		values[k] = v
		if _, err := c.PutObject(ctx, "loc", k, bytes.NewReader(v), int64(len(v)), minio.PutObjectOptions{}); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	// Which keys the master sends to the local volume, asked as the
	// gateway asks.
	onLocal := map[string]bool{}
	for k := range values {
		var info client.ObjectInfo
		getJSON(t, "http://"+e.master.Addr()+"/_kvdb/s3/object/loc/"+k+"?locate&near="+local.Name(), &info)
		if info.Version == 0 || info.Volume == "" || !strings.Contains(info.Location, "v=") {
			t.Fatalf("locate %s: got %+v, want a volume, a version and its URL", k, info)
		}
		onLocal[k] = info.Volume == local.Name()
	}
	if len(onLocal) == 0 {
		t.Fatal("no key")
	}
	locals := 0
	for _, ok := range onLocal {
		if ok {
			locals++
		}
	}
	// With 3 volumes and 2 replicas, both cases occur among 8 keys unless
	// the ring is very uneven; the test needs at least one local key.
	if locals == 0 {
		t.Fatalf("no key of %d has a copy on %s", n, local.Name())
	}

	before := servedBytes(t, local.Addr())
	var remote int64
	for k, v := range values {
		got, err := getObject(c, "loc", k, minio.GetObjectOptions{})
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("GET %s (local %v): %d bytes, %v; want the value whole", k, onLocal[k], len(got), err)
		}
		var opts minio.GetObjectOptions
		if err := opts.SetRange(1000, 1<<20+999); err != nil {
			t.Fatal(err)
		}
		got, err = getObject(c, "loc", k, opts)
		if err != nil || !bytes.Equal(got, v[1000:1<<20+1000]) {
			t.Fatalf("GET %s range (local %v): %d bytes, %v; want bytes 1000 to 1 MiB+999", k, onLocal[k], len(got), err)
		}
		if !onLocal[k] {
			remote += int64(len(v)) + 1<<20
		}
	}
	// The scrape itself counts a few KiB; the values read locally would
	// count megabytes.
	if d := servedBytes(t, local.Addr()) - before; d > 256<<10 {
		t.Errorf("%s's HTTP server sent %d bytes while the gateway beside it read %d of its keys: want them read from disk", local.Name(), d, locals)
	}
	if remote > 0 {
		var others int64
		for _, v := range e.vols[1:] {
			others += servedBytes(t, v.Addr())
		}
		if others < remote {
			t.Errorf("the other volumes sent %d bytes in all, want at least the %d of the keys %s lacks", others, remote, local.Name())
		}
	}

	// A multipart value streams through the local volume's parts stream:
	// its own parts from disk, the others from their volumes, and none
	// through its own HTTP server.
	big := make([]byte, 11<<20+12345)
	for i := range big {
		big[i] = byte(i * 7 / 3)
	}
	if _, err := c.PutObject(ctx, "loc", "multi", bytes.NewReader(big), int64(len(big)), minio.PutObjectOptions{PartSize: 5 << 20}); err != nil {
		t.Fatal(err)
	}
	// Which parts the local volume holds, from the manifest a volume
	// reads. (Not the change in its key count: Complete also stores the
	// manifest blob, which may land there too.)
	var mi client.ObjectInfo
	getJSON(t, "http://"+e.master.Addr()+"/_kvdb/s3/object/loc/multi?locate&near="+local.Name(), &mi)
	var plan struct {
		Parts []struct {
			Vols []string `json:"vols"`
		} `json:"parts"`
	}
	getJSON(t, "http://"+e.master.Addr()+"/_kvdb/manifest/loc/multi?v="+strconv.FormatUint(mi.Version, 16), &plan)
	if len(plan.Parts) != 3 {
		t.Fatalf("the manifest of a 3-part value lists %d parts", len(plan.Parts))
	}
	localParts := 0
	for _, p := range plan.Parts {
		if slices.Contains(p.Vols, local.Addr()) {
			localParts++
		}
	}
	before = servedBytes(t, local.Addr())
	var othersBefore int64
	for _, v := range e.vols[1:] {
		othersBefore += servedBytes(t, v.Addr())
	}
	got, err := getObject(c, "loc", "multi", minio.GetObjectOptions{})
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("GET of a multipart value: %d bytes, %v; want it whole", len(got), err)
	}
	var ropts minio.GetObjectOptions
	if err := ropts.SetRange(5<<20-100, 10<<20+99); err != nil { // across both part boundaries
		t.Fatal(err)
	}
	got, err = getObject(c, "loc", "multi", ropts)
	if err != nil || !bytes.Equal(got, big[5<<20-100:10<<20+100]) {
		t.Fatalf("GET of a range across parts: %d bytes, %v", len(got), err)
	}
	if d := servedBytes(t, local.Addr()) - before; d > 256<<10 {
		t.Errorf("%s's HTTP server sent %d bytes of a multipart value read through the gateway beside it", local.Name(), d)
	}
	// Read over HTTP, every byte would have come from some volume's
	// server; through the local volume, those of its own parts did not.
	var others int64
	for _, v := range e.vols[1:] {
		others += servedBytes(t, v.Addr())
	}
	if read := int64(len(big)) + 5<<20 + 200; localParts > 0 && others-othersBefore >= read {
		t.Errorf("the other volumes sent %d bytes of the %d read, though %s holds %d of the parts", others-othersBefore, read, local.Name(), localParts)
	}
	t.Logf("multipart read: %s holds %d of 3 parts; the others sent %d bytes", local.Name(), localParts, others-othersBefore)

	// A replaced value: the new version is read, not the old one.
	for k := range values {
		if !onLocal[k] {
			continue
		}
		v := bytes.Repeat([]byte("new"), 1<<20)
		if _, err := c.PutObject(ctx, "loc", k, bytes.NewReader(v), int64(len(v)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := getObject(c, "loc", k, minio.GetObjectOptions{})
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("GET %s after a PUT: %d bytes, %v; want the new value", k, len(got), err)
		}
		break
	}
}

// getObject reads a whole GetObject answer.
func getObject(c *minio.Client, bucket, key string, opts minio.GetObjectOptions) ([]byte, error) {
	obj, err := c.GetObject(context.Background(), bucket, key, opts)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

// servedBytes is the volume's kvdb_response_bytes_total.
func servedBytes(t *testing.T, addr string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/_kvdb/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "kvdb_response_bytes_total") {
			f := strings.Fields(line)
			n, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return int64(n)
		}
	}
	t.Fatalf("no kvdb_response_bytes_total in %s's metrics", addr)
	return 0
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}
