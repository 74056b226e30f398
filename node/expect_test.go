package node

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestExpectContinue checks that a write the master would refuse is
// refused before the client sends the body, with its real status, when the
// client asks with Expect: 100-continue (curl does for bodies over 1 MB).
func TestExpectContinue(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	c.put("exists", "v")
	cases := []struct {
		name, method, key string
		length            int64
		want              int
	}{
		{"too large", "PUT", "big", 6 << 30, 413},
		{"post to an existing key", "POST", "exists", 1 << 20, 409},
		{"bad key", "PUT", "a/%zz", 1 << 20, 400},
		{"no room", "PUT", "huge", 4 << 30, 507},
		{"accepted, redirected to a volume", "PUT", "new", 5, 307},
	}
	// Volumes report their free space; the largest value accepted is 5 GiB,
	// so "huge" fits the limit but not, the test assumes, the disk.
	free := int64(-1)
	for _, v := range c.master.view.Load().vols {
		if free < 0 || v.Free > free {
			free = v.Free
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == 507 && free >= tc.length {
				t.Skipf("the disk has %d bytes free: cannot provoke 507 with %d", free, tc.length)
			}
			conn, err := net.Dial("tcp", c.master.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "%s /%s HTTP/1.1\r\nHost: kvdb\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", tc.method, tc.key, tc.length)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d before the body, want %d", resp.StatusCode, tc.want)
			}
			if tc.want != 307 {
				return
			}
			// The body goes to the volume the 307 names.
			st, _, body := send(t, "PUT", resp.Header.Get("Location"), "hello")
			if st != 201 {
				t.Fatalf("the body sent to the 307's Location: got %d (%s), want 201", st, body)
			}
			if st, body := c.get(tc.key); st != 200 || body != "hello" {
				t.Fatalf("GET: %d %q", st, body)
			}
		})
	}
	for _, key := range []string{"big", "huge"} {
		if st, _ := c.get(key); st != 404 {
			t.Errorf("GET %s after a refused write: %d, want 404", key, st)
		}
	}
}
