package router_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qx-platform/regions/resolver"
	"github.com/qx-platform/regions/router"
)

// served records the requests that reached the wrapped handler.
type served struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *served) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *served) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

func (s *served) last(tb testing.TB) *http.Request {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		tb.Fatal("handler was not called")
	}
	return s.reqs[len(s.reqs)-1]
}

func TestRouter_Middleware(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		target   string
		tenant   string // "" means no header
		opts     []router.Option
		status   int
		location string
	}{
		{"local write", "POST", "/orders", "local", nil, 200, ""},
		{"foreign POST", "POST", "/orders", "acme", nil, 307, "https://us.example.com/orders?qx_hop=eu"},
		{"foreign PUT", "PUT", "/orders/1", "acme", nil, 307, "https://us.example.com/orders/1?qx_hop=eu"},
		{"foreign PATCH", "PATCH", "/orders/1", "acme", nil, 307, "https://us.example.com/orders/1?qx_hop=eu"},
		{"foreign DELETE", "DELETE", "/orders/1", "acme", nil, 307, "https://us.example.com/orders/1?qx_hop=eu"},
		{"foreign GET is local", "GET", "/orders", "acme", nil, 200, ""},
		{"foreign HEAD is local", "HEAD", "/orders", "acme", nil, 200, ""},
		{"foreign OPTIONS is local", "OPTIONS", "/orders", "acme", nil, 200, ""},
		{"no tenant is local", "POST", "/signup", "", nil, 200, ""},
		{"query kept", "POST", "/orders?a=1&b=%2F", "acme", nil, 307, "https://us.example.com/orders?a=1&b=%2F&qx_hop=eu"},
		{"encoded path kept", "POST", "/files/a%2Fb%20c", "acme", nil, 307, "https://us.example.com/files/a%2Fb%20c?qx_hop=eu"},
		{"base path prefix", "POST", "/orders", "kite", nil, 307, "https://ap.example.com/qx/api/orders?qx_hop=eu"},
		{"custom write methods: POST local", "POST", "/rpc", "acme",
			[]router.Option{router.WithWriteMethods("PUT")}, 200, ""},
		{"custom write methods: PUT routed", "PUT", "/rpc", "acme",
			[]router.Option{router.WithWriteMethods("PUT")}, 307, "https://us.example.com/rpc?qx_hop=eu"},
		{"path segment tenant", "POST", "/t/acme/orders", "",
			[]router.Option{router.WithTenantExtractor(router.PathSegmentTenant(1))}, 307,
			"https://us.example.com/t/acme/orders?qx_hop=eu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, _ := testRouter(t, tt.opts...)
			next := &served{}
			req := httptest.NewRequest(tt.method, tt.target, strings.NewReader("{}"))
			if tt.tenant != "" {
				req.Header.Set("X-Tenant-ID", tt.tenant)
			}
			rec := httptest.NewRecorder()
			rt.Middleware(next).ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status: got %d, want %d (body %q)", rec.Code, tt.status, rec.Body)
			}
			if got := rec.Header().Get("Location"); got != tt.location {
				t.Errorf("Location: got %q, want %q", got, tt.location)
			}
			if wantServed := tt.status == 200; (next.count() == 1) != wantServed {
				t.Errorf("handler calls: got %d, want served=%v", next.count(), wantServed)
			}
		})
	}
}

func TestRouter_Middleware_ignoresHostHeaders(t *testing.T) {
	rt, _ := testRouter(t)
	req := httptest.NewRequest("POST", "http://evil.com/orders", nil)
	req.Host = "evil.com"
	req.Header.Set("X-Tenant-ID", "acme")
	req.Header.Set("X-Forwarded-Host", "evil.com")
	req.Header.Set("X-Forwarded-Proto", "http")
	req.Header.Set("Forwarded", "host=evil.com;proto=http")
	req.Header.Set("X-Original-URL", "//evil.com/x")
	req.Header.Set("X-Rewrite-URL", "//evil.com/x")
	rec := httptest.NewRecorder()
	rt.Middleware(&served{}).ServeHTTP(rec, req)
	if got, want := rec.Header().Get("Location"), "https://us.example.com/orders?qx_hop=eu"; got != want {
		t.Errorf("Location: got %q, want %q", got, want)
	}
}

func TestRouter_Middleware_stripsHop(t *testing.T) {
	tests := []struct {
		name, method, target, tenant, wantQuery string
	}{
		{"home write", "POST", "/orders?a=1&qx_hop=us&b=2", "local", "a=1&b=2"},
		{"only the marker", "POST", "/orders?qx_hop=us", "local", ""},
		{"encoded marker", "POST", "/orders?qx%5Fhop=us&a=1", "local", "a=1"},
		{"repeated marker", "POST", "/orders?qx_hop=us&qx_hop=ap", "local", ""},
		{"foreign read", "GET", "/orders?qx_hop=us&a=1", "acme", "a=1"},
		{"no tenant", "POST", "/signup?a=1&qx_hop=us", "", "a=1"},
		{"similar names kept", "POST", "/o?qx_hops=1&xqx_hop=2", "local", "qx_hops=1&xqx_hop=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, _ := testRouter(t)
			next := &served{}
			req := httptest.NewRequest(tt.method, tt.target, nil)
			if tt.tenant != "" {
				req.Header.Set("X-Tenant-ID", tt.tenant)
			}
			origQuery, origURI := req.URL.RawQuery, req.RequestURI
			rec := httptest.NewRecorder()
			rt.Middleware(next).ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("status: got %d, want 200", rec.Code)
			}
			got := next.last(t)
			if got.URL.RawQuery != tt.wantQuery {
				t.Errorf("handler query: got %q, want %q", got.URL.RawQuery, tt.wantQuery)
			}
			if got.URL.Query().Has(router.HopParam) {
				t.Errorf("handler still sees %s in %q", router.HopParam, got.URL.RawQuery)
			}
			if u, err := url.ParseRequestURI(got.RequestURI); err != nil || u.RawQuery != tt.wantQuery {
				t.Errorf("handler RequestURI: got %q, want query %q", got.RequestURI, tt.wantQuery)
			}
			if req.URL.RawQuery != origQuery || req.RequestURI != origURI {
				t.Errorf("incoming request was modified: %q %q", req.URL.RawQuery, req.RequestURI)
			}
		})
	}
}

func TestRouter_Middleware_errors(t *testing.T) {
	tests := []struct {
		name       string
		target     string
		header     []string // X-Tenant-ID values
		resErr     error
		status     int
		typ        string
		retryAfter bool
		hook       bool
	}{
		{"empty tenant header", "/orders", []string{""}, nil, 400, "urn:qx:problem:invalid-tenant", false, false},
		{"conflicting tenant headers", "/orders", []string{"acme", "local"}, nil, 400, "urn:qx:problem:invalid-tenant", false, false},
		{"resolver says invalid", "/orders", []string{"acme"}, fmt.Errorf("check: %w", resolver.ErrInvalidTenant), 400, "urn:qx:problem:invalid-tenant", false, false},
		{"unknown tenant", "/orders", []string{"nobody"}, nil, 404, "urn:qx:problem:unknown-tenant", false, false},
		{"resolver unavailable", "/orders", []string{"acme"}, fmt.Errorf("query: %w", resolver.ErrUnavailable), 503, "urn:qx:problem:region-unavailable", true, true},
		{"resolver fails otherwise", "/orders", []string{"acme"}, errors.New("boom"), 503, "urn:qx:problem:region-unavailable", true, true},
		{"home region without URL", "/orders", []string{"lost"}, nil, 500, "urn:qx:problem:region-not-configured", false, true},
		{"dot segments", "/a/../admin", []string{"acme"}, nil, 400, "urn:qx:problem:unsafe-path", false, false},
		{"encoded dot segments", "/a/%2e%2e/admin", []string{"acme"}, nil, 400, "urn:qx:problem:unsafe-path", false, false},
		{"bad escape in query", "/a?x=%zz", []string{"acme"}, nil, 400, "urn:qx:problem:unsafe-path", false, false},
		{"loop: marked write for a foreign tenant", "/orders?qx_hop=us", []string{"acme"}, nil, 503, "urn:qx:problem:region-conflict", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hooked []error
			rt, res := testRouter(t, router.WithErrorHook(func(_ *http.Request, err error) { hooked = append(hooked, err) }))
			res.err = tt.resErr
			next := &served{}
			req := httptest.NewRequest("POST", tt.target, strings.NewReader("{}"))
			for _, v := range tt.header {
				req.Header.Add("X-Tenant-ID", v)
			}
			rec := httptest.NewRecorder()
			rt.Middleware(next).ServeHTTP(rec, req)
			resp := rec.Result()
			p := readProblem(t, resp, tt.status)
			if p.Type != tt.typ {
				t.Errorf("problem type: got %q, want %q", p.Type, tt.typ)
			}
			if got := resp.Header.Get("Retry-After"); (got != "") != tt.retryAfter {
				t.Errorf("Retry-After: got %q, want present=%v", got, tt.retryAfter)
			} else if tt.retryAfter && got != "1" {
				t.Errorf("Retry-After: got %q, want %q", got, "1")
			}
			if got := resp.Header.Get("Location"); got != "" {
				t.Errorf("Location on an error: %q", got)
			}
			if next.count() != 0 {
				t.Errorf("handler was called")
			}
			if (len(hooked) == 1) != tt.hook {
				t.Errorf("error hook calls: got %v, want called=%v", hooked, tt.hook)
			}
			if tt.resErr != nil && strings.Contains(p.Detail, tt.resErr.Error()) {
				t.Errorf("detail leaks the resolver error: %q", p.Detail)
			}
		})
	}
}

func TestWithRetryAfter(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Millisecond:        "1",
		time.Second:             "1",
		2500 * time.Millisecond: "3",
		time.Minute:             "60",
	} {
		rt, res := testRouter(t, router.WithRetryAfter(d))
		res.err = resolver.ErrUnavailable
		req := httptest.NewRequest("POST", "/orders", nil)
		req.Header.Set("X-Tenant-ID", "acme")
		rec := httptest.NewRecorder()
		rt.Middleware(&served{}).ServeHTTP(rec, req)
		if got := rec.Header().Get("Retry-After"); got != want {
			t.Errorf("WithRetryAfter(%v): Retry-After got %q, want %q", d, got, want)
		}
	}
}
