package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node"
	"github.com/kvdb/kvdb/node/client"
)

// Tests of the command line itself: flags, help, environment, version.

// TestDevBindsLoopback: kvdb dev, with the port from PORT and no --addr,
// listens (HTTP and gossip, TCP and UDP) on 127.0.0.1 only, and the seed's
// curl commands work against localhost.
func TestDevBindsLoopback(t *testing.T) {
	port := freeBasePort(t)
	args := []string{"dev", "--dir", filepath.Join(t.TempDir(), "data"), "--log-format", "json"}
	cmd := exec.Command(kvdbBin, args...)
	cmd.Env = append(withoutEnv("KVDB_ADDR", "PORT"), "PORT="+strconv.Itoa(port))
	p := startCmd(t, cmd, "dev cluster running", args...)
	if got, want := p.field("master"), fmt.Sprintf("http://localhost:%d", port); got != want {
		t.Errorf("dev logged master %q, want %q", got, want)
	}
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d", port))

	socks := processSockets(t, cmd.Process.Pid)
	listening := map[string]bool{}
	for _, s := range socks {
		if !s.ip.IsLoopback() {
			t.Errorf("dev has a %s socket on %s, not on loopback", s.proto, net.JoinHostPort(s.ip.String(), strconv.Itoa(s.port)))
		}
		if s.listen {
			listening[fmt.Sprintf("%s/%d", s.proto, s.port)] = true
		}
	}
	for i := 0; i <= 3; i++ {
		for _, want := range []string{fmt.Sprintf("tcp/%d", port+i), fmt.Sprintf("tcp/%d", port+1000+i), fmt.Sprintf("udp/%d", port+1000+i)} {
			if !listening[want] {
				t.Errorf("dev does not listen on %s; it listens on %v", want, listening)
			}
		}
	}

	// README's quick start, against localhost.
	base := fmt.Sprintf("localhost:%d", port)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Logf("curl not installed: the seed's commands are not run")
		return
	}
	curl := func(args ...string) string {
		out, err := exec.Command("curl", append([]string{"-sS", "-L"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	curl("-X", "POST", "-d", "examplevalue", base+"/examplekey")
	if got := curl("-X", "GET", base+"/examplekey"); got != "examplevalue" {
		t.Fatalf("curl -L -X GET %s/examplekey: got %q, want examplevalue", base, got)
	}
	curl("-X", "DELETE", base+"/examplekey")
}

// withoutEnv is os.Environ without the named variables.
func withoutEnv(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, name) {
			env = append(env, kv)
		}
	}
	return env
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/_kvdb/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not ready after 20 s (last: %v)", base, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// socket is one of a process's sockets, from /proc/net.
type socket struct {
	proto  string // tcp or udp
	ip     net.IP
	port   int
	listen bool // a TCP listener, or any UDP socket
}

// processSockets lists the TCP and UDP sockets process pid holds.
func processSockets(t *testing.T, pid int) []socket {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Skipf("cannot list the process's sockets: %v", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var socks []socket
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue // no IPv6
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			hexIP, hexPort, _ := strings.Cut(fields[1], ":")
			ip, err := procIP(hexIP)
			if err != nil {
				t.Fatalf("%s: %q: %v", table, fields[1], err)
			}
			p, _ := strconv.ParseUint(hexPort, 16, 16)
			proto := strings.TrimSuffix(table, "6")
			socks = append(socks, socket{proto: proto, ip: ip, port: int(p), listen: proto == "udp" || fields[3] == "0A"})
		}
		f.Close()
	}
	if len(socks) == 0 {
		t.Fatal("found no socket of the process")
	}
	return socks
}

// procIP decodes an address of /proc/net/tcp: 32-bit words in host (little
// endian) order.
func procIP(h string) (net.IP, error) {
	b, err := hex.DecodeString(h)
	if err != nil || len(b)%4 != 0 {
		return nil, fmt.Errorf("bad address %q", h)
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b), nil
}

// runWithTimeout runs the kvdb binary, which must exit by itself within 10 s.
func runWithTimeout(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvdbBin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("kvdb %q was still running after 10 s; it should have refused to start:\n%s", args, out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestReplicasOutOfRange: --replicas 0 (or 17, or KVDB_REPLICAS=0) is
// refused before anything starts, with the accepted range, instead of
// silently becoming 2.
func TestReplicasOutOfRange(t *testing.T) {
	dir := t.TempDir()
	env := withoutEnv("KVDB_REPLICAS")
	for _, tc := range []struct {
		env  []string
		args []string
		code int
	}{
		{env, []string{"master", "--replicas", "0"}, 2},
		{env, []string{"master", "--replicas", "17"}, 2},
		{env, []string{"master", "--replicas", "-1"}, 2},
		{env, []string{"dev", "--replicas", "0"}, 2},
		{append(env, "KVDB_REPLICAS=0"), []string{"master"}, 1},
		{env, []string{"dev", "--replicas", "4", "--volumes", "3"}, 1},
	} {
		args := append(tc.args, "--addr", "127.0.0.1:0", "--dir", filepath.Join(dir, "d"))
		if tc.args[0] == "dev" {
			args = append(tc.args, "--addr", "127.0.0.1:1", "--dir", filepath.Join(dir, "d"))
		}
		code, out := runWithTimeout(t, tc.env, args...)
		if code != tc.code || !strings.Contains(out, "want 1 to 16") && !strings.Contains(out, "more than the 3 volumes") {
			t.Errorf("kvdb %q (env %q): exit %d, want %d, and the accepted range:\n%s", tc.args, tc.env[len(env):], code, tc.code, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
		t.Error("a refused start created its data directory")
	}
}

// helpOf returns what `kvdb CMD --help` prints.
func helpOf(t *testing.T, cmd string) string {
	t.Helper()
	code, stdout, stderr := kvdb(t, cmd, "--help")
	if code != 0 {
		t.Fatalf("kvdb %s --help: exit %d: %s", cmd, code, stderr)
	}
	return stdout + stderr
}

// TestHelpDefaults: --help prints sizes as README writes them, the
// defaults come from the node presets, the environment rule cannot be
// misread, and every client command states its exit statuses.
func TestHelpDefaults(t *testing.T) {
	for cmd, wants := range map[string][]string{
		"master": {"-max-size SIZE", "(default 5GiB)", "(default 128MiB)", "(default 1m0s)", "-replicas N", "(default 2)",
			"-max-conns N", "(default 10000)", "-max-conns-per-ip N", "--api-keys-file as\nKVDB_API_KEYS_FILE", `(default "./data/master")`},
		"volume": {"(default 50MiB)", "(default 24h0m0s)", "-max-conns N", "(default 10000)", "-max-conns-per-ip", `(default "./data/volume")`},
		"dev":    {`(default "127.0.0.1:3000")`, "(default 10000)", "-max-conns-per-ip", "127.0.0.1"},
		"bench":  {"(default 1MiB)"},
	} {
		help := helpOf(t, cmd)
		for _, w := range wants {
			if !strings.Contains(help, w) {
				t.Errorf("kvdb %s --help lacks %q:\n%s", cmd, w, help)
			}
		}
		for _, bad := range []string{"5368709120", "134217728", "52428800", "KVDB_NAME)"} {
			if strings.Contains(help, bad) {
				t.Errorf("kvdb %s --help still shows %q", cmd, bad)
			}
		}
	}
	for _, cmd := range []string{"put", "get", "rm", "ls", "stat", "cluster", "drain", "verify"} {
		help := helpOf(t, cmd)
		if !strings.Contains(help, "Exit status: 0 ") || strings.Count(strings.SplitN(help, "\n", 4)[2], " ") < 3 {
			t.Errorf("kvdb %s --help has no description or exit statuses:\n%s", cmd, help)
		}
	}
	if help := helpOf(t, "drain"); !strings.Contains(help, "--cancel undoes it") || !strings.Contains(help, "1 any error") {
		t.Errorf("kvdb drain --help:\n%s", help)
	}
	code, top, _ := kvdb(t, "--help")
	if code != 0 || !strings.Contains(top, "--name as KVDB_NAME") || !strings.Contains(top, "--max-size as\nKVDB_MAX_SIZE") || !strings.Contains(top, "kvdb version") {
		t.Errorf("kvdb --help: exit %d:\n%s", code, top)
	}
}

// TestFlagDefaultsArePresets: with no flag, each role's Config is the
// node preset, so the presets are the one source of the defaults; 0 for a
// rate or an interval is the Config's explicit Unlimited or Never.
func TestFlagDefaultsArePresets(t *testing.T) {
	fs, m := masterFlags(io.Discard)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	want := node.DefaultMasterConfig()
	m.cfg.Logger, want.Logger = nil, nil
	if !reflect.DeepEqual(m.cfg, want) {
		t.Errorf("master flags with no flag given:\n got %+v\nwant %+v", m.cfg, want)
	}
	if err := fs.Parse([]string{"--rebalance-rate", "0", "--max-conns", "0"}); err != nil {
		t.Fatal(err)
	}
	if m.cfg.RebalanceRate != node.Unlimited || m.cfg.MaxConns != 0 {
		t.Errorf("--rebalance-rate 0 --max-conns 0: RebalanceRate %d, MaxConns %d; want Unlimited and 0", m.cfg.RebalanceRate, m.cfg.MaxConns)
	}
	if err := fs.Parse([]string{"--rebalance-rate", "64MiB", "--max-size", "1G", "--max-conns-per-ip", "50"}); err != nil {
		t.Fatal(err)
	}
	if m.cfg.RebalanceRate != 64<<20 || m.cfg.MaxValueSize != 1<<30 || m.cfg.MaxConnsPerIP != 50 {
		t.Errorf("got RebalanceRate %d, MaxValueSize %d, MaxConnsPerIP %d", m.cfg.RebalanceRate, m.cfg.MaxValueSize, m.cfg.MaxConnsPerIP)
	}

	fs, v := volumeFlags(io.Discard)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	wantV := node.DefaultVolumeConfig()
	v.cfg.Logger, wantV.Logger = nil, nil
	if !reflect.DeepEqual(v.cfg, wantV) {
		t.Errorf("volume flags with no flag given:\n got %+v\nwant %+v", v.cfg, wantV)
	}
	if err := fs.Parse([]string{"--scrub-interval", "0", "--scrub-rate", "0"}); err != nil {
		t.Fatal(err)
	}
	if v.cfg.ScrubInterval != node.Never || v.cfg.ScrubRate != node.Unlimited {
		t.Errorf("--scrub-interval 0 --scrub-rate 0: got %v and %d, want Never and Unlimited", v.cfg.ScrubInterval, v.cfg.ScrubRate)
	}
	if err := fs.Parse([]string{"--scrub-interval", "-1h"}); err == nil {
		t.Error("--scrub-interval -1h was accepted")
	}

	fs, d := devFlags(io.Discard)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if d.master.Replicas != 2 || d.master.MaxConns != node.DefaultMaxConns || d.addr != "127.0.0.1:3000" {
		t.Errorf("dev defaults: replicas %d, max conns %d, addr %q", d.master.Replicas, d.master.MaxConns, d.addr)
	}
}

// TestVersion: kvdb version and kvdb --version print the module version
// and the Go version on one line, and name the commit when the build was
// stamped with it.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errOut := kvdb(t, args...)
		if code != 0 || !strings.HasPrefix(out, "kvdb ") || !strings.Contains(out, runtime.Version()) || strings.Count(out, "\n") != 1 {
			t.Errorf("kvdb %s: exit %d, stdout %q, stderr %q", args[0], code, out, errOut)
		}
	}
	if code, _, _ := kvdb(t, "version", "extra"); code != 2 {
		t.Errorf("kvdb version extra: exit %d, want 2", code)
	}
	bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/kvdb/kvdb", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := versionLine(bi), "kvdb v1.2.3 (0123abcd, modified, 2026-12-01T10:00:00Z) go1.99.1 "+runtime.GOOS+"/"+runtime.GOARCH; got != want {
		t.Errorf("versionLine = %q, want %q", got, want)
	}
	bi.Settings = nil
	if got, want := versionLine(bi), "kvdb v1.2.3 go1.99.1 "+runtime.GOOS+"/"+runtime.GOARCH; got != want {
		t.Errorf("versionLine without VCS = %q, want %q", got, want)
	}

	// The real binary. TestMain's build is stamped with the revision only
	// where Go finds the repository (a .git directory, not a worktree's
	// .git file) and GOFLAGS allows it; make build asks for it.
	out, err := exec.Command(kvdbBin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "kvdb ") {
		t.Fatalf("kvdb --version: %q, %v", out, err)
	}
	stamp := regexp.MustCompile(`\(([0-9a-f]{40})[,)]`).FindStringSubmatch(string(out))
	if stamp == nil {
		t.Logf("this build carries no VCS stamp: %s", out)
		return
	}
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil && strings.TrimSpace(string(head)) != stamp[1] {
		t.Errorf("kvdb --version = %q, want it to name revision %s", out, head)
	}
}

// TestUnknownEnvWarning: a KVDB_ variable nothing reads is named on stderr
// at start, with the likely intended one; known ones (flags, the client's,
// the tests') are not.
func TestUnknownEnvWarning(t *testing.T) {
	var b strings.Builder
	warnUnknownEnv(&b, "master", []string{"PATH=/bin", "KVDB_REPLICA=3", "KVDB_REPLICAS=2", "KVDB_URL=x", "KVDB_TOKEN=y",
		"KVDB_SECRET_FILE=f", "KVDB_NAME=n", "KVDB_SCRUB_RATE=1", "KVDB_CONCURRENCY=4", "KVDB_MAX_CONNS_PER_IP=0",
		"KVDB_TEST_LOG=1", "KVDB_LINZ_SEED=1", "KVDB_STORE_TEST_KILLED_DIR=d", "KVDB_REPLICA=3"})
	if got, want := b.String(), "kvdb master: warning: environment variable KVDB_REPLICA is set, but no kvdb setting has that name: it is ignored (did you mean KVDB_REPLICAS?)\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}

	t.Setenv("KVDB_REPLCIAS", "3")
	t.Setenv("KVDB_WHATEVER", "1")
	code, _, errOut := kvdb(t, "master", "--log-level", "loud", "--dir", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "KVDB_REPLCIAS is set") || !strings.Contains(errOut, "did you mean KVDB_REPLICAS?") ||
		!strings.Contains(errOut, "KVDB_WHATEVER is set") {
		t.Errorf("kvdb master: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = kvdb(t, "stat", "--url", "http://127.0.0.1:1", "k")
	if code != 1 || !strings.Contains(errOut, "kvdb stat: warning: environment variable KVDB_REPLCIAS") {
		t.Errorf("kvdb stat: exit %d, stderr %q", code, errOut)
	}
	if _, out, errOut := kvdb(t, "version"); strings.Contains(out+errOut, "warning") {
		t.Errorf("kvdb version warned: %q", errOut)
	}
}

// TestKnownEnvCoversRepo: every KVDB_ variable the code, tests and README
// mention is one kvdb reads (so none of them sets off the warning), but for
// the few that name no variable on purpose.
func TestKnownEnvCoversRepo(t *testing.T) {
	notVariables := map[string]bool{
		"KVDB_FOO_BAR": true, "KVDB_FLAG_NAME": true, // the rule, in comments
		"KVDB_O":       true,                                               // a client flag that must not come from the environment
		"KVDB_REPLICA": true, "KVDB_REPLCIAS": true, "KVDB_WHATEVER": true, // typos, in tests
	}
	known := knownEnv()
	re := regexp.MustCompile(`KVDB_[A-Z0-9_]*[A-Z0-9]`)
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "data" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, ".md") && !strings.HasSuffix(path, ".sh") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, name := range re.FindAllString(string(b), -1) {
			if !known[name] && !notVariables[name] {
				t.Errorf("%s mentions %s, which kvdb does not know: add it to knownEnv", path, name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConnCapFlags: --max-conns and --max-conns-per-ip reach the server:
// a connection over the cap is answered 503 (429 per address) and closed.
func TestConnCapFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		flag   string
		status string
	}{{"--max-conns", "503"}, {"--max-conns-per-ip", "429"}} {
		p := startProc(t, "master started", "master", "--addr", "127.0.0.1:0", "--gossip", "127.0.0.1:0",
			"--cluster", fmt.Sprintf("caps-%d", os.Getpid()), tc.flag, "2", filepath.Join(dir, tc.flag))
		addr := p.field("http")
		var conns []net.Conn
		for i := 0; i < 2; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			// A request answered shows the connection is being served.
			fmt.Fprintf(c, "GET /_kvdb/live HTTP/1.1\r\nHost: x\r\n\r\n")
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.Contains(line, " 200 ") {
				t.Fatalf("%s 2: connection %d: %q, %v", tc.flag, i+1, line, err)
			}
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /_kvdb/live HTTP/1.1\r\nHost: x\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.Contains(line, " "+tc.status+" ") {
			t.Errorf("%s 2: a third connection got %q, want %s", tc.flag, line, tc.status)
		}
		c.Close()
		for _, c := range conns {
			c.Close()
		}
	}
}

// TestOpenFileLimitRaised: a kvdb process started with a low soft limit on
// open files runs with the soft limit raised to the hard one. Go's os
// package does it at start (Go 1.19 and later), so kvdb has no code for it;
// this test keeps README's statement true. (Go leaves it one below the
// hard limit.)
func TestOpenFileLimitRaised(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	args := []string{"master", "--addr", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--cluster", fmt.Sprintf("nofile-%d", os.Getpid()),
		filepath.Join(t.TempDir(), "m"), "--log-format", "json"}
	cmd := exec.Command("sh", append([]string{"-c", `ulimit -S -n 256 && exec "$0" "$@"`, kvdbBin}, args...)...)
	p := startCmd(t, cmd, "master started", args...)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.cmd.Process.Pid))
	if err != nil {
		t.Skipf("no /proc limits: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Max open files") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
		if len(f) < 2 {
			t.Fatalf("cannot read %q", line)
		}
		if f[1] == "256" {
			t.Skip("the hard limit is 256: nothing to raise")
		}
		soft, err1 := strconv.ParseUint(f[0], 10, 64)
		hard, err2 := strconv.ParseUint(f[1], 10, 64)
		// Go sets the soft limit to one below the hard one, so that it can
		// tell its own change from another process's prlimit (syscall's
		// rlimit.go).
		if err1 != nil || err2 != nil || soft+1 < hard {
			t.Errorf("kvdb master runs with open files soft limit %s, hard %s: want the soft limit raised to (one below) the hard one", f[0], f[1])
		}
		t.Logf("kvdb master started with soft limit 256 runs with %s (hard %s)", f[0], f[1])
		return
	}
	t.Fatal("no Max open files line")
}

// TestListPagingEscapes: keys holding '+', ' ', '&', '%', '=' and '#' page
// correctly: kvdb ls pages one key at a time and prints each once, in
// order; and the raw API's next, percent-encoded as start, continues where
// it stopped (passed unencoded, '+' would come back as ' ').
func TestListPagingEscapes(t *testing.T) {
	u, _ := startClientCluster(t)
	keys := []string{"pg/a b", "pg/a&b", "pg/a&start=pg/z", "pg/a+b", "pg/a%2Bb", "pg/a=b", "pg/a#b", "pg/x y", "pg/x+y", "pg/x+y+", "pg/z"}
	cl, err := client.NewClient(client.ClientConfig{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, k := range keys {
		if _, err := cl.Put(context.Background(), k, strings.NewReader("v"), 1, client.PutOptions{}); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	slices.Sort(keys)
	want := strings.Join(keys, "\n") + "\n"
	for _, limit := range []string{"1", "2", "3", "1000"} {
		code, out, errOut := kvdb(t, "ls", "--url", u, "--limit", limit, "pg/")
		if code != 0 || out != want {
			t.Errorf("kvdb ls --limit %s pg/: exit %d %s\n got %q\nwant %q", limit, code, errOut, out, want)
		}
	}

	// The raw API, as README tells curl users to page.
	var got []string
	start := ""
	for page := 0; page < 20; page++ {
		q := "limit=2"
		if start != "" {
			q += "&start=" + url.QueryEscape(start)
		}
		resp, err := http.Get(u + "/pg/?list&" + q)
		if err != nil {
			t.Fatal(err)
		}
		var lp client.ListPage
		err = json.NewDecoder(resp.Body).Decode(&lp)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, lp.Keys...)
		if lp.Next == "" {
			break
		}
		start = lp.Next
	}
	if !slices.Equal(got, keys) {
		t.Errorf("raw paging with start percent-encoded:\n got %q\nwant %q", got, keys)
	}
}

// TestVolumeProcs: a volume runs on half the CPUs, at least one, unless
// GOMAXPROCS is set or it serves S3.
func TestVolumeProcs(t *testing.T) {
	for _, c := range []struct {
		env  string
		cpus int
		s3   bool
		want int
		ok   bool
	}{
		{"", 1, false, 1, true},
		{"", 2, false, 1, true},
		{"", 3, false, 1, true},
		{"", 8, false, 4, true},
		{"", 64, false, 32, true},
		{"2", 2, false, 0, false},
		{"", 2, true, 0, false},
	} {
		n, ok := volumeProcs(c.env, c.cpus, c.s3)
		if n != c.want || ok != c.ok {
			t.Errorf("volumeProcs(%q, %d, %v) = %d, %v; want %d, %v", c.env, c.cpus, c.s3, n, ok, c.want, c.ok)
		}
		// bench's default (--procs) follows the same rule, S3 aside.
		if c.s3 {
			continue
		}
		if n, ok := halfProcs(c.env, c.cpus); n != c.want || ok != c.ok {
			t.Errorf("halfProcs(%q, %d) = %d, %v; want %d, %v", c.env, c.cpus, n, ok, c.want, c.ok)
		}
	}
}

// TestVolumeProcsApplied: volume processes run on the Ps volumeProcs
// chooses, read back from their metrics (go_gomaxprocs): half the CPUs
// without GOMAXPROCS, what GOMAXPROCS says with it, and every CPU with an
// S3 gateway.
func TestVolumeProcsApplied(t *testing.T) {
	env := withoutEnv("GOMAXPROCS", "KVDB_S3")
	dir := t.TempDir()
	start := func(name string, extraEnv []string, extra ...string) int {
		t.Helper()
		args := append([]string{"volume", "--addr", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--gossip-profile", "test",
			"--join", "127.0.0.1:1", "--name", name, filepath.Join(dir, name)}, extra...)
		cmd := exec.Command(kvdbBin, append(args, "--log-format", "json")...)
		cmd.Env = append(append([]string(nil), env...), extraEnv...)
		p := startCmd(t, cmd, "volume started", args...)
		n := int(metric(t, p.field("http"), "go_gomaxprocs"))
		if n < 1 {
			t.Fatalf("%s: no go_gomaxprocs in its metrics", name)
		}
		return n
	}
	cpus := start("s3vol", nil, "--s3", "127.0.0.1:0")
	if got, want := start("plain", nil), max(1, cpus/2); got != want {
		t.Errorf("a volume on %d CPUs runs on %d Ps, want %d", cpus, got, want)
	}
	if got := start("set", []string{"GOMAXPROCS=3"}); got != 3 {
		t.Errorf("with GOMAXPROCS=3 a volume runs on %d Ps", got)
	}
	t.Logf("%d CPUs: a volume with S3 on %d Ps, one without on %d", cpus, cpus, max(1, cpus/2))
}
