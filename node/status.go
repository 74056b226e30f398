package node

import (
	_ "embed" // for the status page

	"github.com/valyala/fasthttp"
)

// statusPage is the master's status page: one static file with its CSS and
// script inline, so the binary needs no asset directory and the page no
// CDN. The script renders /_kvdb/cluster in the browser; the server only
// hands out the file, which keeps the page's cost to the master at one
// cluster snapshot per refresh.
//
//go:embed status.html
var statusPage string

// statusCSP lets the page run its own inline script and style and talk to
// nothing but its own origin: the data it shows comes from gossip
// (member names, addresses) and must never be able to load or send
// anything elsewhere even if an escaping mistake slipped in.
const statusCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// serveStatus serves the status page. It is static; no-cache makes a
// browser revalidate it so that an upgraded master's page is seen at once.
func (m *Master) serveStatus(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.Response.Header.Set("Content-Security-Policy", statusCSP)
	ctx.Response.SetBodyString(statusPage)
}
