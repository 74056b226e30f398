package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/kvdb/kvdb/node/client"
)

const verifySynopsis = `verify [flags]

Asks the master to check every live volume against its index and prints
what disagrees: missing replicas, extra versions nothing references,
checksum mismatches, orphan files and, with --deep, corrupt files (every
value is read, which takes as long as reading the volumes). --repair fixes
what it can (missing, mismatching and corrupt copies are replaced from a
healthy replica, extra versions deleted; orphan files are only reported),
then verifies again.

Exit status: 0 clean; 1 problems found (with --repair: still there after
the repair), or any error.`

// verifyBodyMax bounds the report read: its lists stop at client.VerifyLimit
// entries each.
const verifyBodyMax = 64 << 20

// verifyShown is how many entries of each list the summary prints.
const verifyShown = 10

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newClientFlagSet("verify", verifySynopsis, stderr)
	master := fs.String("url", client.DefaultURL, "master URL, or several comma-separated (the first that answers is asked; a follower sends the request on to the leader); the environment's KVDB_URL when the flag is absent")
	token := fs.String("token", "", "read-write API key, when the master requires one; without the flag, the environment's KVDB_TOKEN")
	repair := fs.Bool("repair", false, "fix what can be fixed, then verify again")
	deep := fs.Bool("deep", false, "also read every value on every volume and check its checksum")
	asJSON := fs.Bool("json", false, "print the report as JSON (with --repair: {\"repair\": ..., \"after\": ...})")
	_, err := clientArgs(fs, args, 0, 0)
	if err != nil {
		return err
	}
	*master, *token = urlAndToken(fs, *master, *token)
	ctx, stop := signalContext()
	defer stop()
	// No timeout: a deep verify takes as long as reading every volume.
	hc := &http.Client{}
	base := pickMaster(*master)
	rep, err := verifyCall(ctx, hc, base, *token, *repair, *deep)
	if err != nil {
		return interrupted(ctx, err)
	}
	final, after := rep, (*client.VerifyReport)(nil)
	if *repair {
		if after, err = verifyCall(ctx, hc, base, *token, false, *deep); err != nil {
			return interrupted(ctx, err)
		}
		final = after
	}
	if *asJSON {
		var v any = rep
		if after != nil {
			v = map[string]*client.VerifyReport{"repair": rep, "after": after}
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
			return err
		}
	} else {
		title := "verify"
		if *repair {
			title = "verify and repair"
		}
		writeVerify(stdout, title, rep)
		if after != nil {
			fmt.Fprintln(stdout)
			writeVerify(stdout, "verify after the repair", after)
		}
	}
	if !final.Clean {
		if after != nil {
			return fmt.Errorf("%s left after the repair", problems(verifyProblems(final)))
		}
		return fmt.Errorf("%s found", problems(verifyProblems(final)))
	}
	return nil
}

// verifyCall runs one verify on the master.
func verifyCall(ctx context.Context, hc *http.Client, base, token string, repair, deep bool) (*client.VerifyReport, error) {
	u := fmt.Sprintf("%s/_kvdb/verify?repair=%d&deep=%d", base, b2i(repair), b2i(deep))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, verifyBodyMax+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %d %s", u, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if len(body) > verifyBodyMax {
		return nil, fmt.Errorf("%s: report larger than %d bytes", u, verifyBodyMax)
	}
	var rep client.VerifyReport
	if err := json.Unmarshal(body, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if rep.Volumes == nil {
		return nil, errors.New("the master's answer is not a verify report")
	}
	return &rep, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// verifyProblems counts what keeps a report from being clean.
func verifyProblems(r *client.VerifyReport) int64 {
	c := r.Counts
	return c.Missing + c.Extra + c.Mismatch + c.Corrupt + c.Orphans + c.Errors + r.UnderReplicated
}

func problems(n int64) string {
	if n == 1 {
		return "1 problem"
	}
	return fmt.Sprintf("%d problems", n)
}

// writeVerify prints a report: a count per category, then the first
// entries of each.
func writeVerify(w io.Writer, title string, r *client.VerifyReport) {
	var files, bytes int64
	for _, v := range r.Volumes {
		files += v.ScrubbedFiles
		bytes += v.ScrubbedBytes
	}
	fmt.Fprintf(w, "%s: %d keys on %d volumes in %.1f s", title, r.Keys, len(r.Volumes), r.Seconds)
	if r.Deep {
		fmt.Fprintf(w, ", %d files (%s) read", files, humanBytes(bytes))
	}
	fmt.Fprintln(w)
	rep := r.Repaired
	fixed := func(f func(*client.VerifyCounts) int64) string {
		if rep == nil {
			return ""
		}
		return fmt.Sprintf("%d repaired", f(rep))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(name string, n int64, what, repaired string) {
		if rep != nil {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", name, n, repaired, what)
		} else {
			fmt.Fprintf(tw, "  %s\t%d\t%s\n", name, n, what)
		}
	}
	line("missing", r.Counts.Missing, "replicas the index names that their volume does not hold", fixed(func(c *client.VerifyCounts) int64 { return c.Missing }))
	line("extra", r.Counts.Extra, "versions a volume holds that nothing references", fixed(func(c *client.VerifyCounts) int64 { return c.Extra }))
	line("mismatch", r.Counts.Mismatch, "replicas whose checksum differs from the index", fixed(func(c *client.VerifyCounts) int64 { return c.Mismatch }))
	corrupt := "files that fail their checksum"
	if !r.Deep {
		corrupt += " (only --deep reads the files)"
	}
	line("corrupt", r.Counts.Corrupt, corrupt, fixed(func(c *client.VerifyCounts) int64 { return c.Corrupt }))
	line("orphans", r.Counts.Orphans, "files and index entries of a volume that disagree (stray files: report only)", fixed(func(c *client.VerifyCounts) int64 { return c.Orphans }))
	line("under-replicated", r.UnderReplicated, "keys with fewer live replicas than the replica count", "-")
	line("errors", r.Counts.Errors, "parts of the check that could not be done", "-")
	_ = tw.Flush()
	findings := func(name string, fs []client.VerifyFinding, n int64) {
		if len(fs) == 0 {
			return
		}
		fmt.Fprintf(w, "%s:\n", name)
		for i, f := range fs {
			if i == verifyShown {
				break
			}
			fmt.Fprintf(w, "  %q v%s on %s", f.Key, f.Version, f.Volume)
			if f.Want != "" {
				fmt.Fprintf(w, ": checksum %s, want %s", f.Got, f.Want)
			}
			if f.Error != "" {
				fmt.Fprintf(w, ": %s", f.Error)
			}
			if f.Repaired {
				fmt.Fprint(w, " (repaired)")
			}
			fmt.Fprintln(w)
		}
		if more := n - int64(min(len(fs), verifyShown)); more > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", more)
		}
	}
	findings("missing", r.Missing, r.Counts.Missing)
	findings("extra", r.Extra, r.Counts.Extra)
	findings("mismatch", r.Mismatch, r.Counts.Mismatch)
	findings("corrupt", r.Corrupt, r.Counts.Corrupt)
	if len(r.Orphans) > 0 {
		fmt.Fprintln(w, "orphans:")
		for i, o := range r.Orphans {
			if i == verifyShown {
				fmt.Fprintf(w, "  ... and %d more\n", r.Counts.Orphans-verifyShown)
				break
			}
			fmt.Fprintf(w, "  %s on %s: %s", o.Path, o.Volume, o.Kind)
			if o.Key != "" {
				fmt.Fprintf(w, " (%q v%s)", o.Key, o.Version)
			}
			if o.Error != "" {
				fmt.Fprintf(w, ": %s", o.Error)
			}
			if o.Repaired {
				fmt.Fprint(w, " (repaired)")
			}
			fmt.Fprintln(w)
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "errors:")
		for i, e := range r.Errors {
			if i == verifyShown {
				fmt.Fprintf(w, "  ... and %d more\n", r.Counts.Errors-verifyShown)
				break
			}
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	if r.Clean {
		fmt.Fprintln(w, "clean")
	}
}
