package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/qx-platform/regions/resolver"
)

// Middleware routes requests before next sees them:
//
//   - a request whose method is not a write (see WithWriteMethods), or that
//     names no tenant, is served by next;
//   - a write for a tenant homed here is served by next;
//   - a write for a tenant homed elsewhere is answered with 307 Temporary
//     Redirect to the home region's base URL, path and query kept and
//     HopParam added (or, with WithProxy, forwarded there);
//   - a write that arrives with HopParam for a tenant this region also
//     thinks is homed elsewhere (two regions' caches disagree) is answered
//     with 503 and Retry-After, never redirected again;
//   - an invalid tenant is 400, an unknown tenant 404, an unavailable
//     resolver 503 with Retry-After, a home region without a base URL 500,
//     and a path that cannot be redirected safely 400.
//
// Errors are short application/problem+json bodies (RFC 9457). HopParam is
// removed from the query of every request that reaches next.
func (rt *Router) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hop := hasHop(r.URL.RawQuery)
		if !rt.isWrite(r.Method) {
			next.ServeHTTP(w, withoutHop(r, hop))
			return
		}
		tenant, ok := rt.extract(r)
		if !ok {
			next.ServeHTTP(w, withoutHop(r, hop))
			return
		}
		region, err := rt.resolve(r.Context(), tenant)
		if err != nil {
			rt.fail(w, r, err)
			return
		}
		if region == rt.region {
			next.ServeHTTP(w, withoutHop(r, hop))
			return
		}
		if hop {
			rt.fail(w, r, &loopError{here: rt.region, home: region})
			return
		}
		t, err := rt.target(region)
		if err != nil {
			rt.fail(w, r, err)
			return
		}
		p, q, err := cleanTarget(r.URL.EscapedPath(), r.URL.RawQuery)
		if err != nil {
			rt.fail(w, r, err)
			return
		}
		loc := t.location(p, q, rt.hop)
		if rt.proxy != nil {
			rt.proxy.serve(w, r, loc)
			return
		}
		h := w.Header()
		h["Location"] = []string{loc}
		h["Cache-Control"] = []string{"no-store"}
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
}

// withoutHop returns r, or when hop is set a shallow copy of r whose query
// no longer carries HopParam. r itself is not changed: handlers must not
// modify the request they are given.
func withoutHop(r *http.Request, hop bool) *http.Request {
	if !hop {
		return r
	}
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.RawQuery = stripHop(r.URL.RawQuery)
	u.ForceQuery = false
	r2.URL = &u
	r2.RequestURI = u.RequestURI()
	return r2
}

// loopError is a write that arrived already redirected at a region that
// does not think it is the tenant's home either.
type loopError struct{ here, home string }

func (e *loopError) Error() string {
	return fmt.Sprintf("redirected write reached region %s, which resolves the tenant to %s", e.here, e.home)
}

// problemType is one kind of error answer.
type problemType struct {
	status int
	typ    string // RFC 9457 "type", a URN so that it never looks dereferenceable
	title  string
}

var (
	probInvalidTenant = &problemType{http.StatusBadRequest, "urn:qx:problem:invalid-tenant", "Invalid tenant id"}
	probUnsafePath    = &problemType{http.StatusBadRequest, "urn:qx:problem:unsafe-path", "Path cannot be redirected"}
	probUnknownTenant = &problemType{http.StatusNotFound, "urn:qx:problem:unknown-tenant", "Unknown tenant"}
	probTooLarge      = &problemType{http.StatusRequestEntityTooLarge, "urn:qx:problem:body-too-large", "Request body too large to forward"}
	probNoRegionURL   = &problemType{http.StatusInternalServerError, "urn:qx:problem:region-not-configured", "Home region not configured"}
	probBadGateway    = &problemType{http.StatusBadGateway, "urn:qx:problem:forward-failed", "Home region did not answer"}
	probUnavailable   = &problemType{http.StatusServiceUnavailable, "urn:qx:problem:region-unavailable", "Tenant home region unavailable"}
	probConflict      = &problemType{http.StatusServiceUnavailable, "urn:qx:problem:region-conflict", "Regions disagree on the tenant's home"}
	probTimeout       = &problemType{http.StatusGatewayTimeout, "urn:qx:problem:forward-timeout", "Home region did not answer in time"}
)

// fail answers a request the middleware cannot route. Details are fixed
// phrases: a resolver error may hold database addresses, which are for the
// error hook, not for clients.
func (rt *Router) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		p      *problemType
		detail string
		loop   *loopError
	)
	switch {
	case errors.As(err, &loop):
		p, detail = probConflict, "the write was already redirected once; retry the original request later"
	case errors.Is(err, ErrUnsafePath):
		p, detail = probUnsafePath, err.Error()
	case errors.Is(err, resolver.ErrInvalidTenant):
		p, detail = probInvalidTenant, "the tenant id is empty, too long or holds a control character"
	case errors.Is(err, resolver.ErrUnknownTenant):
		p, detail = probUnknownTenant, "the tenant has no home region"
	case errors.Is(err, resolver.ErrUnknownRegion):
		p, detail = probNoRegionURL, "the tenant's home region has no configured base URL"
	default:
		// resolver.ErrUnavailable and anything a resolver did not classify:
		// the home region cannot be known now, and guessing would send a
		// write to the wrong primary.
		p, detail = probUnavailable, "the tenant's home region cannot be looked up right now"
	}
	rt.writeProblem(w, r, p, detail, err)
}

// writeProblem writes an RFC 9457 problem and reports 5xx answers to the
// error hook.
func (rt *Router) writeProblem(w http.ResponseWriter, r *http.Request, p *problemType, detail string, err error) {
	// A client that went away is not a failure worth reporting.
	if p.status >= 500 && rt.onError != nil && r.Context().Err() == nil {
		rt.onError(r, err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if p.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", rt.retryAfter)
	}
	w.WriteHeader(p.status)
	// The status line is already sent; a failed write leaves nothing to do.
	_ = json.NewEncoder(w).Encode(problem{Type: p.typ, Title: p.title, Status: p.status, Detail: detail})
}

// problem is the JSON body of an error answer.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}
