package router

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/resolver"
)

// HopParam is the query parameter that marks a request as already redirected
// (or proxied) once by another region's Router. Its value is the name of the
// region that sent it. It is a query parameter and not a header because a
// client that follows a 307 repeats the request with the new URL but cannot
// be told to add a header. The home region's middleware strips it before the
// wrapped handler sees the request.
const HopParam = "qx_hop"

var (
	// ErrUnsafePath means a path cannot be put after a region's base URL:
	// it is not a plain absolute path (it starts with "//" or "/\", holds a
	// backslash, a control character such as CR, LF or NUL, a fragment, a dot
	// segment, or a malformed percent escape).
	ErrUnsafePath = errors.New("unsafe redirect path")
)

// defaultRetryAfter is the Retry-After sent with 503 answers unless
// WithRetryAfter says otherwise: long enough for a resolver cache to be
// refreshed by LISTEN/NOTIFY, short enough that a retrying client is not idle.
const defaultRetryAfter = time.Second

// Router decides, per request, whether a write belongs in this region or in
// the tenant's home region, and answers the latter with a redirect (or, in
// proxy mode, forwards it). It is safe for concurrent use.
type Router struct {
	res        resolver.Resolver
	region     string
	hop        string             // HopParam value this region sends, query-escaped
	targets    map[string]*target // every other configured region
	extract    TenantExtractor
	writes     []string
	retryAfter string
	proxy      *proxy
	onError    func(*http.Request, error)
}

// target is a region's base URL, prepared once.
type target struct {
	region string
	// base is scheme://host followed by the base URL's escaped path without
	// its trailing slash. Every Location starts with it.
	base string
}

// Option configures a Router.
type Option func(*Router)

// WithTenantExtractor sets how the middleware finds a request's tenant. The
// default is HeaderTenant("X-Tenant-ID"). It panics if fn is nil.
func WithTenantExtractor(fn TenantExtractor) Option {
	if fn == nil {
		panic("router: WithTenantExtractor: nil extractor")
	}
	return func(rt *Router) { rt.extract = fn }
}

// WithWriteMethods sets the request methods that are routed to the tenant's
// home region; every other method is served locally. The default is POST,
// PUT, PATCH and DELETE. Methods are case-sensitive, as in HTTP.
// It panics if no method is given.
func WithWriteMethods(methods ...string) Option {
	if len(methods) == 0 {
		panic("router: WithWriteMethods: no methods")
	}
	m := append([]string(nil), methods...)
	return func(rt *Router) { rt.writes = m }
}

// WithRetryAfter sets the Retry-After sent with 503 answers (resolver
// unavailable, regions disagreeing about a tenant), rounded up to whole
// seconds. The default is one second. It panics if d is not positive.
func WithRetryAfter(d time.Duration) Option {
	if d <= 0 {
		panic("router: WithRetryAfter: duration must be positive")
	}
	secs := int64((d + time.Second - 1) / time.Second)
	s := strconv.FormatInt(secs, 10)
	return func(rt *Router) { rt.retryAfter = s }
}

// WithErrorHook sets a function the middleware calls with every error it
// answers with a 5xx status (resolver unavailable, regions disagreeing, a
// region without a base URL, a failed forward in proxy mode). The package
// never logs; this is where a service logs or counts such failures. fn must
// be safe for concurrent use.
func WithErrorHook(fn func(r *http.Request, err error)) Option {
	return func(rt *Router) { rt.onError = fn }
}

// New returns a Router for the region cfg.Name that asks res for each
// tenant's home region and sends writes to cfg.URLs[home].
//
// New panics if res is nil, cfg.Name is empty, or a configured base URL is
// not an absolute http or https URL with a host: these are start-up mistakes
// that no request could recover from. A Config from [regions.ParseConfig]
// always passes.
func New(res resolver.Resolver, cfg regions.Config, opts ...Option) *Router {
	if res == nil {
		panic("router: New: nil resolver")
	}
	if cfg.Name == "" {
		panic("router: New: config has no region name")
	}
	rt := &Router{
		res:        res,
		region:     cfg.Name,
		hop:        url.QueryEscape(cfg.Name),
		targets:    make(map[string]*target, len(cfg.URLs)),
		extract:    HeaderTenant("X-Tenant-ID"),
		writes:     []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		retryAfter: strconv.Itoa(int(defaultRetryAfter / time.Second)),
	}
	for name, u := range cfg.URLs {
		if name == cfg.Name {
			continue
		}
		t, err := newTarget(name, u)
		if err != nil {
			panic("router: New: " + err.Error())
		}
		rt.targets[name] = t
	}
	for _, o := range opts {
		o(rt)
	}
	return rt
}

func newTarget(region string, u *url.URL) (*target, error) {
	if u == nil {
		return nil, fmt.Errorf("region %q: nil base URL", region)
	}
	// Only scheme, host and path of the base URL are used; anything else
	// (userinfo, query, fragment) would be a config mistake, so refuse it
	// here rather than silently drop it.
	if _, err := regions.ParseBaseURL(u.String()); err != nil {
		return nil, fmt.Errorf("region %q: %w", region, err)
	}
	return &target{
		region: region,
		base:   strings.ToLower(u.Scheme) + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/"),
	}, nil
}

// RedirectURL returns where a request for tenantID with the given path
// belongs: "" when this region is the tenant's home, otherwise the home
// region's configured base URL (its path prefix kept) followed by path.
// path is the request path as sent, in escaped form, and may carry a query
// after "?" (r.URL.RequestURI() for an incoming request).
//
// The result is built from the configured base URL alone. A path that is not
// a plain absolute path makes an error wrapping ErrUnsafePath, whoever the
// tenant is. Characters that are not allowed in a URL but harmless (space,
// quotes, non-ASCII bytes) are percent-encoded; existing escapes are kept
// as they are. Resolver errors are returned wrapped, so callers can classify
// them with errors.Is against the resolver package's sentinels; a home
// region without a configured base URL is reported as
// resolver.ErrUnknownRegion.
//
// RedirectURL does not add HopParam; the middleware does.
func (rt *Router) RedirectURL(ctx context.Context, tenantID, path string) (string, error) {
	p, q, _ := strings.Cut(path, "?")
	p, q, err := cleanTarget(p, q)
	if err != nil {
		return "", err
	}
	region, err := rt.resolve(ctx, tenantID)
	if err != nil {
		return "", err
	}
	if region == rt.region {
		return "", nil
	}
	t, err := rt.target(region)
	if err != nil {
		return "", err
	}
	return t.location(p, q, ""), nil
}

// resolve asks the resolver for tenantID's home region.
func (rt *Router) resolve(ctx context.Context, tenantID string) (string, error) {
	if tenantID == "" {
		// Checked here so that no resolver is ever asked about an empty id.
		return "", fmt.Errorf("find home region: empty tenant id: %w", resolver.ErrInvalidTenant)
	}
	region, err := rt.res.Resolve(ctx, tenantID)
	if err != nil {
		// The id is not quoted: it is outside input of any length, and
		// the resolver's error already names it once it is known valid.
		return "", fmt.Errorf("find home region: %w", err)
	}
	return region, nil
}

// target returns the base URL of a region other than this one.
func (rt *Router) target(region string) (*target, error) {
	t := rt.targets[region]
	if t == nil {
		return nil, fmt.Errorf("home region %q has no base URL: %w", region, resolver.ErrUnknownRegion)
	}
	return t, nil
}

// isWrite reports whether method is routed to the home region.
func (rt *Router) isWrite(method string) bool {
	for _, m := range rt.writes {
		if m == method {
			return true
		}
	}
	return false
}
