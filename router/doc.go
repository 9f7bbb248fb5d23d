// Package router sends writes to the tenant's home region: the region whose
// Postgres primary takes the tenant's writes. It is the Go counterpart of the
// Python RegionRouter and imports nothing but the root regions package, the
// resolver package and the standard library.
//
// [Router.RedirectURL] answers "where does this request belong?" and
// [Router.Middleware] acts on it: reads are served locally (they may lag the
// home region by the replication delay), writes for a tenant homed elsewhere
// get 307 Temporary Redirect (RFC 9110, section 15.4.8), which tells the
// client to repeat the same method with the same body at the new URL. With
// [WithProxy] the middleware forwards such writes itself instead.
//
// # Open redirects
//
// A Location is the home region's configured base URL followed by the
// request's path and query, nothing else: the Host and X-Forwarded-Host
// headers are never read to build it, and a path that is not a plain
// absolute path ("//host", "/\host", a scheme, CR, LF, NUL, a dot segment, a
// fragment) is refused with [ErrUnsafePath] rather than turned into a
// redirect elsewhere.
//
// # Redirect loops
//
// Two regions whose resolver caches disagree about a tenant (just after the
// tenant moved) would send a write back and forth. Every redirect therefore
// carries the hop marker [HopParam] in its query, qx_hop=<sending region>.
// The home region's middleware removes it before the handler runs; a region
// that receives a marked write for a tenant it does not think it owns
// answers 503 with Retry-After instead of redirecting again. A client should
// retry the original request: by then the caches have caught up.
//
// # Errors
//
// Error answers are application/problem+json (RFC 9457) with a "type" URN:
//
//	400 urn:qx:problem:invalid-tenant         the tenant id is invalid
//	400 urn:qx:problem:unsafe-path            the path cannot be redirected
//	404 urn:qx:problem:unknown-tenant         no home region and no default
//	413 urn:qx:problem:body-too-large         proxy mode: body over the limit
//	500 urn:qx:problem:region-not-configured  home region has no base URL
//	502 urn:qx:problem:forward-failed         proxy mode: home region unreachable
//	503 urn:qx:problem:region-unavailable     resolver unavailable (Retry-After)
//	503 urn:qx:problem:region-conflict        regions disagree (Retry-After)
//	504 urn:qx:problem:forward-timeout        proxy mode: home region too slow
//
// The package never logs; [WithErrorHook] receives every 5xx cause.
//
// # Go clients and 307
//
// Go's http.Client follows a 307 or 308 with the same method, but it can
// send the body again only when the request has GetBody. http.NewRequest
// sets GetBody for a *bytes.Buffer, *bytes.Reader or *strings.Reader body;
// for any other reader the client does not follow and returns the 307
// itself. And when the redirect goes to a host that is neither the original
// host nor a subdomain of it (eu.example.com to us.example.com), the client
// drops Authorization, WWW-Authenticate and Cookie headers that the caller
// set, so the home region sees an anonymous request.
//
// [Transport] fixes both for region hosts only: it keeps the body in memory
// (up to a limit) and follows 307 and 308 between configured region base
// URLs itself, with every header kept. Redirects anywhere else are left to
// http.Client and its usual rules:
//
//	client := &http.Client{Transport: &router.Transport{Regions: cfg}}
//
// Clients that cannot follow a 307 with a body at all (some proxies, older
// libraries, HTML forms over fetch with redirect: "manual") are what proxy
// mode is for.
package router
