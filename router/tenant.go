package router

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// TenantExtractor finds the tenant of a request. ok is false when the
// request names no tenant at all; the middleware then serves it locally
// (health checks, static files, sign-up). ok with an empty tenantID means the
// request names a tenant badly, and is answered with 400.
type TenantExtractor func(r *http.Request) (tenantID string, ok bool)

// HeaderTenant takes the tenant from the request header name, e.g.
// "X-Tenant-ID" (the default). A header repeated with different values is
// treated as an invalid tenant.
func HeaderTenant(name string) TenantExtractor {
	key := http.CanonicalHeaderKey(name)
	return func(r *http.Request) (string, bool) {
		vs := r.Header[key]
		if len(vs) == 0 {
			return "", false
		}
		for _, v := range vs[1:] {
			if v != vs[0] {
				return "", true
			}
		}
		return vs[0], true
	}
}

// PathSegmentTenant takes the tenant from the path segment at index, counted
// from 0 after the leading slash: PathSegmentTenant(1) reads "acme" from
// "/tenants/acme/orders". The segment is percent-decoded; an empty or
// badly escaped segment is an invalid tenant, a path too short names none.
func PathSegmentTenant(index int) TenantExtractor {
	if index < 0 {
		panic("router: PathSegmentTenant: negative index")
	}
	return func(r *http.Request) (string, bool) {
		p := strings.TrimPrefix(r.URL.EscapedPath(), "/")
		for i := 0; ; i++ {
			seg, rest, more := strings.Cut(p, "/")
			if i == index {
				if !strings.Contains(seg, "%") {
					return seg, true
				}
				t, err := url.PathUnescape(seg)
				if err != nil {
					return "", true
				}
				return t, true
			}
			if !more {
				return "", false
			}
			p = rest
		}
	}
}

// SubdomainTenant takes the tenant from the left-most label of the request's
// host when the host is a direct subdomain of parent: with parent
// "example.com", host "acme.example.com:8443" names tenant "acme"; host
// "example.com" or "api.internal.net" names none; "a.b.example.com" is an
// invalid tenant. Hosts are compared case-insensitively and the tenant is
// returned in lower case.
//
// The host is used only to find the tenant, never to build a redirect. A
// redirect goes to the home region's base URL, which carries no tenant
// subdomain, so the home region must find the tenant some other way: pair
// it with a header, as in FirstTenant(SubdomainTenant(p), HeaderTenant(h)),
// and have clients send both.
func SubdomainTenant(parent string) TenantExtractor {
	suffix := "." + strings.ToLower(strings.TrimSuffix(parent, "."))
	return func(r *http.Request) (string, bool) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		label, ok := strings.CutSuffix(host, suffix)
		if !ok {
			return "", false
		}
		if label == "" || strings.Contains(label, ".") {
			return "", true
		}
		return label, true
	}
}

// FirstTenant tries each extractor in order and returns the first that finds
// a tenant (ok true), valid or not.
func FirstTenant(extractors ...TenantExtractor) TenantExtractor {
	ex := append([]TenantExtractor(nil), extractors...)
	return func(r *http.Request) (string, bool) {
		for _, e := range ex {
			if t, ok := e(r); ok {
				return t, true
			}
		}
		return "", false
	}
}
