package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kvdb/kvdb/node/client"
)

// runDrain asks the master to move every value off a volume (or to stop
// doing so) and, with --wait, follows the drain until the volume holds no
// key.
func runDrain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("drain", "drain [flags] VOLUME   (a volume's name or HTTP address)", stderr)
	master := fs.String("url", "http://localhost:3000", "the master's URL")
	token := fs.String("token", "", "API key, when the master requires one")
	cancel := fs.Bool("cancel", false, "stop draining the volume: it takes new values and its share again")
	wait := fs.Bool("wait", true, "follow the drain until the volume holds no key")
	every := fs.Duration("interval", time.Second, "how often --wait polls the master")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "kvdb drain: name one volume")
		return errUsage
	}
	u := strings.TrimRight(*master, "/") + "/_kvdb/drain/" + url.PathEscape(fs.Arg(0))
	method := http.MethodPost
	if *cancel {
		method = http.MethodDelete
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	st, err := drainCall(hc, method, u, *token)
	if err != nil {
		return err
	}
	if *cancel || !*wait {
		fmt.Fprintf(stdout, "%s: draining %v, %d keys\n", st.Volume, st.Draining, st.Keys)
		return nil
	}
	last := ""
	for !st.Done {
		line := fmt.Sprintf("%s: %d keys left", st.Volume, st.Keys)
		if st.Blocked != "" {
			line += " (blocked: " + st.Blocked + ")"
		}
		if line != last {
			fmt.Fprintln(stdout, line)
			last = line
		}
		time.Sleep(*every)
		if st, err = drainCall(hc, http.MethodGet, u, *token); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s: drained; it can be stopped\n", st.Volume)
	return nil
}

func drainCall(hc *http.Client, method, u, token string) (client.DrainStatus, error) {
	var st client.DrainStatus
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return st, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("%s: %w", u, err)
	}
	return st, nil
}
