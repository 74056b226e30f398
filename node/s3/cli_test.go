package s3

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/kvdb/kvdb/node"
)

// Tests with the real command-line clients, when installed (Debian:
// awscli, python3-boto3, rclone, curl); each skips with the reason
// otherwise.

func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s is not installed (Debian package: %s)", tool, map[string]string{"aws": "awscli", "rclone": "rclone", "curl": "curl"}[tool])
	}
	return p
}

// clientEnv is the environment of a CLI run: the test key, no user
// configuration, no instance metadata lookups.
func (e *testEnv) clientEnv(t *testing.T) []string {
	home := t.TempDir()
	if e.awsConfig != "" {
		if err := os.WriteFile(filepath.Join(home, "aws-config"), []byte(e.awsConfig), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "RCLONE_") || strings.HasPrefix(kv, "HOME=") {
			continue // Debian's rclone refuses to start with AWS_CA_BUNDLE set (S3.md)
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "AWS_ACCESS_KEY_ID="+testID, "AWS_SECRET_ACCESS_KEY="+testSecret,
		"AWS_DEFAULT_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE="+filepath.Join(home, "aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(home, "aws-credentials"))
}

func (e *testEnv) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = e.clientEnv(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (e *testEnv) aws(t *testing.T, args ...string) string {
	t.Helper()
	return e.run(t, need(t, "aws"), append([]string{"--endpoint-url", "http://" + e.endpoint}, args...)...)
}

func (e *testEnv) mkBucket(t *testing.T, name string) {
	t.Helper()
	if err := e.minio(false).MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
}

func writeFiles(t *testing.T, dir string, n int) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("f%02d.bin", i)
		if i%3 == 0 {
			name = fmt.Sprintf("sub/dir %d/f%02d.bin", i, i)
		}
		data := randBytes(1000+i*4099, uint64(i))
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		s := md5.Sum(data)
		sums[name] = hex.EncodeToString(s[:])
	}
	return sums
}

// TestAWSSync: aws s3 sync up twice transfers nothing the second time
// (sync compares the listing's size and LastModified with the files), and
// the same down.
func TestAWSSync(t *testing.T) {
	need(t, "aws")
	e := newEnv(t, true)
	e.mkBucket(t, "sync")
	src := t.TempDir()
	sums := writeFiles(t, src, 12)
	out := e.aws(t, "s3", "sync", src, "s3://sync/backup/")
	if n := strings.Count(out, "upload:"); n != len(sums) {
		t.Fatalf("first sync uploaded %d files, want %d:\n%s", n, len(sums), out)
	}
	if out := e.aws(t, "s3", "sync", src, "s3://sync/backup/"); strings.Contains(out, "upload:") {
		t.Fatalf("second sync uploaded again:\n%s", out)
	}
	dst := t.TempDir()
	out = e.aws(t, "s3", "sync", "s3://sync/backup/", dst)
	if n := strings.Count(out, "download:"); n != len(sums) {
		t.Fatalf("sync down fetched %d files, want %d:\n%s", n, len(sums), out)
	}
	if out := e.aws(t, "s3", "sync", "s3://sync/backup/", dst); strings.Contains(out, "download:") {
		t.Fatalf("second sync down fetched again:\n%s", out)
	}
	for name, want := range sums {
		b, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil {
			t.Fatal(err)
		}
		if s := md5.Sum(b); hex.EncodeToString(s[:]) != want {
			t.Fatalf("%s came back different", name)
		}
	}
}

// TestAWSPresignCurl: aws s3 presign (Signature V2 in aws-cli v1, V4 in
// v2) read with curl; a tampered URL is refused. And an S3 object read
// with curl -L on the native API.
func TestAWSPresignCurl(t *testing.T) {
	need(t, "aws")
	curl := need(t, "curl")
	e := newEnv(t, true)
	e.mkBucket(t, "pre")
	f := filepath.Join(t.TempDir(), "v.txt")
	if err := os.WriteFile(f, []byte("presigned value"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.aws(t, "s3", "cp", f, "s3://pre/v.txt")
	url := strings.TrimSpace(e.aws(t, "s3", "presign", "s3://pre/v.txt", "--expires-in", "300"))
	if got := e.run(t, curl, "-sS", "-f", url); got != "presigned value" {
		t.Fatalf("curl of %s: %q", url, got)
	}
	bad := strings.Replace(url, "v.txt", "w.txt", 1)
	if got := e.run(t, curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", bad); got != "403" {
		t.Fatalf("tampered URL %s: %s", bad, got)
	}
	// The native API, as curl -L, with the S3 key's token.
	got := e.run(t, curl, "-sS", "-f", "-L", "-H", "Authorization: Bearer "+node.S3Token(testID, testSecret), "http://"+e.master.Addr()+"/pre/v.txt")
	if got != "presigned value" {
		t.Fatalf("curl -L on the native API: %q", got)
	}
}

// python finds a python3 with boto3.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if path, err := exec.LookPath(p); err == nil && exec.Command(path, "-c", "import boto3").Run() == nil {
			return path
		}
	}
	t.Skip("no python3 with boto3 (Debian package: python3-boto3)")
	return ""
}

const boto3Script = `
import json, sys, boto3
from botocore.config import Config
endpoint, bucket, op = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
if op == "list":
    out = {}
    for name, kw in (("flat", {}), ("delim", {"Delimiter": "/"}), ("prefix", {"Prefix": "dir03/", "Delimiter": "/"})):
        keys, prefixes, pages = [], [], 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1000}, **kw):
            pages += 1
            keys += [o["Key"] for o in page.get("Contents", [])]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        out[name] = {"keys": keys, "prefixes": prefixes, "pages": pages}
    v1 = []
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 700}):
        v1 += [o["Key"] for o in page.get("Contents", [])]
    out["v1"] = {"keys": v1}
    print(json.dumps(out))
elif op == "presign":
    put = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre.bin"}, ExpiresIn=300)
    get = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre.bin"}, ExpiresIn=300)
    print(json.dumps({"put": put, "get": get}))
`

// TestBoto3List2500: 2,500 keys listed by boto3's paginators, flat, with
// a delimiter and with a prefix, in pages of 1000 (v2) and 700 (v1).
func TestBoto3List2500(t *testing.T) {
	py := python(t)
	e := newEnv(t, true)
	e.mkBucket(t, "many")
	var want []string
	for i := 0; i < 2500; i++ {
		if i < 2000 {
			want = append(want, fmt.Sprintf("dir%02d/key%04d", i%20, i))
		} else {
			want = append(want, fmt.Sprintf("top%04d", i))
		}
	}
	// Written through the native API, 16 at a time: faster, and listing
	// must show natively written values too.
	var wg sync.WaitGroup
	ch := make(chan string)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range ch {
				if st, _, body := e.native("PUT", "many/"+k, strings.NewReader(k)); st != 201 {
					t.Errorf("PUT %s: %d %s", k, st, body)
				}
			}
		}()
	}
	for _, k := range want {
		ch <- k
	}
	close(ch)
	wg.Wait()
	script := filepath.Join(t.TempDir(), "s3.py")
	if err := os.WriteFile(script, []byte(boto3Script), 0o644); err != nil {
		t.Fatal(err)
	}
	out := e.run(t, py, script, "http://"+e.endpoint, "many", "list")
	var got map[string]struct {
		Keys     []string `json:"keys"`
		Prefixes []string `json:"prefixes"`
		Pages    int      `json:"pages"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("boto3 said: %s", out)
	}
	sorted := append([]string(nil), want...)
	slices.Sort(sorted)
	if f := got["flat"]; !slices.Equal(f.Keys, sorted) || f.Pages != 3 {
		t.Fatalf("flat listing: %d keys in %d pages, want 2500 in 3", len(f.Keys), f.Pages)
	}
	if v1 := got["v1"]; !slices.Equal(v1.Keys, sorted) {
		t.Fatalf("v1 listing: %d keys", len(v1.Keys))
	}
	d := got["delim"]
	if len(d.Prefixes) != 20 || d.Prefixes[0] != "dir00/" || len(d.Keys) != 500 || d.Keys[0] != "top2000" {
		t.Fatalf("delimited listing: %d prefixes, %d keys", len(d.Prefixes), len(d.Keys))
	}
	if p := got["prefix"]; len(p.Keys) != 100 || len(p.Prefixes) != 0 || p.Keys[0] != "dir03/key0003" {
		t.Fatalf("prefix listing: %d keys, %v", len(p.Keys), p.Prefixes)
	}
}

// TestBoto3PresignedPut: boto3's presigned PUT and GET (its default
// signature version for presigning, V2 in us-east-1 with older botocore),
// used with curl.
func TestBoto3PresignedPut(t *testing.T) {
	py := python(t)
	curl := need(t, "curl")
	e := newEnv(t, true)
	e.mkBucket(t, "boto")
	script := filepath.Join(t.TempDir(), "s3.py")
	if err := os.WriteFile(script, []byte(boto3Script), 0o644); err != nil {
		t.Fatal(err)
	}
	var urls struct{ Put, Get string }
	if err := json.Unmarshal([]byte(e.run(t, py, script, "http://"+e.endpoint, "boto", "presign")), &urls); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(f, []byte("put with a presigned URL"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := e.run(t, curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", f, urls.Put); got != "200" {
		t.Fatalf("presigned PUT: %s", got)
	}
	if got := e.run(t, curl, "-sS", "-f", urls.Get); got != "put with a presigned URL" {
		t.Fatalf("presigned GET: %q", got)
	}
	// A presigned GET does not allow a PUT.
	if got := e.run(t, curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", f, urls.Get); got != "403" {
		t.Fatalf("PUT to a GET URL: %s", got)
	}
}

// TestRcloneCopyCheck: rclone copy, then rclone check compares sizes and
// MD5s (rclone takes a 32-hex-digit ETag as the MD5).
func TestRcloneCopyCheck(t *testing.T) {
	rclone := need(t, "rclone")
	e := newEnv(t, true)
	e.mkBucket(t, "rclone")
	src := t.TempDir()
	sums := writeFiles(t, src, 9)
	remote := fmt.Sprintf(":s3,provider=Other,access_key_id=%s,secret_access_key=%s,endpoint='http://%s',region=us-east-1:rclone/copy", testID, testSecret, e.endpoint)
	e.run(t, rclone, "copy", src, remote)
	out := e.run(t, rclone, "check", src, remote)
	if strings.Contains(out, "hash") && !strings.Contains(out, "0 differences") {
		t.Fatalf("rclone check:\n%s", out)
	}
	if !strings.Contains(out, "0 differences found") || !strings.Contains(out, fmt.Sprintf("%d matching files", len(sums))) {
		t.Fatalf("rclone check:\n%s", out)
	}
	md5s := e.run(t, rclone, "md5sum", remote)
	for name, sum := range sums {
		if !strings.Contains(md5s, sum+"  "+name) {
			t.Fatalf("rclone md5sum lacks %s %s:\n%s", sum, name, md5s)
		}
	}
	// A changed byte is caught by the hash, not the size.
	name := "f01.bin"
	b, _ := os.ReadFile(filepath.Join(src, name))
	b[0] ^= 1
	if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rclone, "check", src, remote)
	cmd.Env = e.clientEnv(t)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "1 differences found") {
		t.Fatalf("rclone check missed a changed byte: %v\n%s", err, out)
	}
}
