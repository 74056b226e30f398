package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecurityFlagsHelp: --help lists the security flags of each role.
func TestSecurityFlagsHelp(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"master": {"-secret", "-secret-file", "-api-keys-file", "-redirect-ttl"},
		"volume": {"-secret", "-secret-file"},
		"dev":    {"-secret", "-secret-file", "-api-keys-file", "-redirect-ttl"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{cmd, "--help"}, &stdout, &stderr); code != 0 {
			t.Fatalf("%s --help: exit %d", cmd, code)
		}
		for _, f := range flags {
			if !strings.Contains(stderr.String(), "  "+f+" ") && !strings.Contains(stderr.String(), "  "+f+"\n") {
				t.Errorf("%s --help does not list %s:\n%s", cmd, f, stderr.String())
			}
		}
	}
}

// TestSecretFlagErrors: a short or doubly given secret, or a bad keys
// file, stops a node before it binds anything, with a clear message.
func TestSecretFlagErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	shortFile := write("short", "tooshort\n")
	goodFile := write("good", "a secret long enough to use\n")
	badKeys := write("keys", "tok rw\n")
	addr := []string{"--addr", "127.0.0.1:0", "--gossip", "127.0.0.1:0", filepath.Join(dir, "data")}
	for _, tc := range []struct {
		name string
		args []string
		env  string // KVDB_SECRET
		want string
	}{
		{"short secret", []string{"master", "--secret", "0123456789abcde"}, "", "want at least 16"},
		{"short secret, volume", []string{"volume", "--secret", "short"}, "", "want at least 16"},
		{"short secret from the environment", []string{"master"}, "short", "want at least 16"},
		{"short secret file", []string{"volume", "--secret-file", shortFile}, "", "want at least 16"},
		{"missing secret file", []string{"master", "--secret-file", filepath.Join(dir, "nope")}, "", "no such file"},
		{"both", []string{"master", "--secret", "0123456789abcdef", "--secret-file", goodFile}, "", "not both"},
		{"bad api keys", []string{"master", "--api-keys-file", badKeys}, "", "at least 16"},
		{"dev short secret", []string{"dev", "--secret", "short", "--addr", "127.0.0.1:0"}, "", "want at least 16"},
	} {
		t.Setenv("KVDB_SECRET", tc.env) // empty: no secret
		args := tc.args
		if tc.args[0] != "dev" {
			args = append(append([]string(nil), tc.args...), addr...)
		}
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", tc.name, code, stderr.String(), tc.want)
		}
	}
}

// TestDevSecure runs `kvdb dev` with a secret file and API keys, the way
// users do: writes need the key, reads are redirected to signed URLs that
// work as given and fail without their signature.
func TestDevSecure(t *testing.T) {
	port := freeBasePort(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	keys := filepath.Join(dir, "keys")
	const rw, ro = "rw-0123456789abcdef", "ro-0123456789abcdef"
	if err := os.WriteFile(secret, []byte("dev secret for the process test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys, []byte("# test keys\n"+rw+" rw\n"+ro+" ro\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startProc(t, "dev cluster running", "dev", "--addr", fmt.Sprintf("127.0.0.1:%d", port),
		"--dir", filepath.Join(dir, "data"), "--secret-file", secret, "--api-keys-file", keys)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	noFollow := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	do := func(method, url, token, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	waitReady(t, base)
	if resp, body := do("PUT", base+"/k", "", "v"); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("PUT without a key: got %d %q", resp.StatusCode, body)
	}
	if resp, body := do("PUT", base+"/k", ro, "v"); resp.StatusCode != 403 {
		t.Fatalf("PUT with a read-only key: got %d %q", resp.StatusCode, body)
	}
	if resp, body := do("PUT", base+"/k", rw, "the value"); resp.StatusCode != 201 {
		t.Fatalf("PUT with the rw key: got %d %q", resp.StatusCode, body)
	}
	resp, body := do("GET", base+"/k", ro, "")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 302 || !strings.Contains(loc, "&s=") {
		t.Fatalf("GET: got %d %q, Location %q", resp.StatusCode, body, loc)
	}
	if resp, body := do("GET", loc, "", ""); resp.StatusCode != 200 || body != "the value" {
		t.Fatalf("GET Location: got %d %q", resp.StatusCode, body)
	}
	if resp, body := do("GET", loc[:strings.Index(loc, "&e=")], "", ""); resp.StatusCode != 403 {
		t.Fatalf("GET Location without its signature: got %d %q", resp.StatusCode, body)
	}
}
