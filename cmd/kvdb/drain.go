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

const drainSynopsis = `drain [flags] VOLUME

Asks the master to move every value off VOLUME (its name, or its HTTP
address HOST:PORT) to the other volumes, as SIGTERM on a volume does, and
then follows the drain, printing the keys left, until the volume holds no
key: it can then be stopped without any key dropping below its replica
count. While draining, the volume takes no new values. The drain is
recorded in the master's index: it goes on without this command (Ctrl-C
stops following it, not the drain) and survives a master restart.
--cancel undoes it: the volume takes new values and its share again.

Exit status: 0 the volume is drained (with --cancel or --wait=false: the
master took the request); 1 any error, a bad flag or argument and a volume
the master does not know included. Errors are one line on stderr.`

// runDrain asks the master to move every value off a volume (or to stop
// doing so) and, with --wait, follows the drain until the volume holds no
// key.
func runDrain(args []string, stdout, stderr io.Writer) error {
	fs := newClientFlagSet("drain", drainSynopsis, stderr)
	var cf clientFlags
	cf.register(fs)
	cancel := fs.Bool("cancel", false, "stop draining the volume: it takes new values and its share again")
	wait := fs.Bool("wait", true, "follow the drain until the volume holds no key")
	every := fs.Duration("interval", time.Second, "how often --wait polls the master")
	pos, err := clientArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	master, token := urlAndToken(fs, cf.url, cf.token)
	u := pickMaster(master) + "/_kvdb/drain/" + url.PathEscape(pos[0])
	method := http.MethodPost
	if *cancel {
		method = http.MethodDelete
	}
	hc := &http.Client{Timeout: cf.timeout}
	st, err := drainCall(hc, method, u, token)
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
		if st, err = drainCall(hc, http.MethodGet, u, token); err != nil {
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
