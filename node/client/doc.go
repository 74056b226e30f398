// Package client is the Go client for kvdb's HTTP API, and the declaration
// of what that API shares with the servers: the rules a key obeys in a URL
// (ParseKey, AppendEscapedKey) and the JSON documents the master answers
// with (the cluster view, a listing page, a write's reply, the verify and
// drain reports).
//
// The servers (package node) import this package for those declarations,
// so that a document has one Go type on both sides. This package must not
// import the server packages (node, store, ring) or anything they pull in
// for themselves, such as memberlist or goleveldb: a program that only
// talks to a cluster links the client and no server code.
//
// # Several masters
//
// ClientConfig.URL may name several masters, separated by commas. One of
// them, the leader, answers clients; a follower redirects every request to
// the leader (307 for a write, 302 for a read) and, with no leader, answers
// 503. The Client:
//
//   - follows a follower's redirect in every operation. It tells one from a
//     master's redirect to a volume by its Location: the same path and
//     query on another master (a volume is sent a read as GET /KEY?v=VER
//     and a write's body at /_kvdb/write/), and sends the API key there;
//   - starts each operation at the master that answered last (the leader
//     once one did, even one learned only from a redirect), then tries the
//     others in their configured order;
//   - goes on to the next master when one cannot be reached (refused,
//     reset, a timeout) or answers 503, backing off 50 ms, doubling to at
//     most 1 s, after each round over all of them, until
//     ClientConfig.FailoverTimeout has passed since the first failure or
//     the operation's ctx ends. It then returns the last master's answer
//     (or failure). With one master, and no leader learned, it tries once.
//
// Whether a write may be sent again depends on whether the first attempt
// may have taken effect. It cannot have when the connection could not be
// made, or when a master answered before the body was sent (a redirect,
// or a refusal of a write with Expect: 100-continue). A redirect also
// means the master did not act on the request. Otherwise (the answer was
// lost, or a 503 came after the body: a master that lost leadership while
// committing answers so) the outcome is unknown, and the rule is:
//
//   - PUT is sent again. Storing the same bytes under the same key twice
//     leaves what storing them once does, and a write concurrent with the
//     retry is ordered with it as with any write overlapping this one.
//     PutResult.Created then reports the last attempt's answer, which may
//     say "replaced" for a key the first attempt created.
//   - A create-only PUT (PutOptions.CreateOnly, If-None-Match: *) is not:
//     the second attempt could find the first one's value and report
//     ErrExists for a write that succeeded. It fails with ErrUncertain.
//   - DELETE is sent again: the key ends up absent either way. If the
//     second attempt finds it absent, the first may have deleted it, or it
//     may never have existed: the error is ErrUncertain, not ErrNotFound.
//   - Reads (GET, HEAD, listing, the cluster view) are always sent again.
//
// A body must be re-sendable to be sent again, whether after a redirect
// or a failure: Put rewinds an io.Seeker (an *os.File, a bytes.Reader) to
// where it was when Put was called. A body that cannot be rewound (a pipe,
// a plain io.Reader) and was read fails the write with ErrUncertain, or,
// after a follower's redirect, with an error saying it cannot be rewound;
// to avoid the latter, with several masters such a body is sent with
// Expect: 100-continue, so that any redirect comes before it.
package client
