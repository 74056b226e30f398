package node

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func TestTicketRoundTrip(t *testing.T) {
	s := newSigner([]byte("0123456789abcdef0123"))
	in := ticket{Version: 42, Size: -1, Max: 5 << 30, Expiry: time.Now().Add(time.Minute).Unix(),
		Replicas: []string{"vol1", "vol2"}, Spares: []string{"vol3"}, Addrs: []string{"10.0.0.1:3001", "10.0.0.2:3001", "10.0.0.3:3001"}}
	q := s.ticketQuery([]byte("a/key"), &in)
	args := parseQuery(t, q)
	out, err := s.parseTicket([]byte("a/key"), args["t"], args["s"], time.Now())
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: got %+v, %v; want %+v", out, err, in)
	}
	if _, err := s.parseTicket([]byte("a/other"), args["t"], args["s"], time.Now()); err == nil {
		t.Error("a ticket for one key was taken for another")
	}
	if _, err := s.parseTicket([]byte("a/key"), args["t"], args["s"], time.Now().Add(time.Hour)); err == nil {
		t.Error("an expired ticket was taken")
	}
	if addr, ok := out.addr("vol3"); !ok || addr != "10.0.0.3:3001" {
		t.Errorf("addr(vol3): got %q %v", addr, ok)
	}
}

func parseQuery(t *testing.T, q string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for kv := range bytes.SplitSeq([]byte(q), []byte("&")) {
		k, v, _ := bytes.Cut(kv, []byte("="))
		out[string(k)] = v
	}
	return out
}

// FuzzTicket: any bytes decode without a panic, and a ticket that decodes
// survives an encode and decode unchanged (overlong varints decode too, so
// the bytes themselves may differ; a signature covers the bytes as sent).
func FuzzTicket(f *testing.F) {
	good := ticket{Version: 7, Size: 100, Max: 1 << 30, Expiry: 1 << 40, Replicas: []string{"a", "b"}, Spares: []string{"c"}, Addrs: []string{"h:1", "h:2", "h:3"}}
	f.Add(good.appendBinary(nil))
	f.Add([]byte{ticketFormat})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := parseTicketBinary(b)
		if err != nil {
			return
		}
		again, err := parseTicketBinary(tk.appendBinary(nil))
		if err != nil || !reflect.DeepEqual(again, tk) {
			t.Fatalf("decoded %+v, re-encoded and decoded again: %+v, %v", tk, again, err)
		}
	})
}

// FuzzEtagList: matching never panics, "*" always matches, and a weak tag
// never matches strongly.
func FuzzEtagList(f *testing.F) {
	f.Add([]byte(`"a", W/"b", *`), []byte(`"a"`))
	f.Add([]byte(`,,, W/`), []byte(`"x"`))
	f.Fuzz(func(t *testing.T, list, tag []byte) {
		strong := etagListMatches(list, tag, true)
		weak := etagListMatches(list, tag, false)
		if strong && !weak {
			t.Fatalf("%q matches %q strongly but not weakly", list, tag)
		}
		if !etagListMatches(append(append([]byte(nil), list...), ", *"...), tag, true) {
			t.Fatalf("%q with * does not match %q", list, tag)
		}
	})
}
