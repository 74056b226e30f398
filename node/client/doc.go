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
package client
