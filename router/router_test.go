package router_test

import (
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/resolver"
	"github.com/qx-platform/regions/router"
)

const testURLs = "eu=https://eu.example.com,us=https://us.example.com,ap=https://ap.example.com/qx/api/"

func testRouter(tb testing.TB, opts ...router.Option) (*router.Router, *fakeResolver) {
	tb.Helper()
	res := newFake(map[string]string{"local": "eu", "acme": "us", "kite": "ap", "lost": "mars"})
	return router.New(res, mustConfig(tb, "eu", testURLs), opts...), res
}

func TestRouter_RedirectURL(t *testing.T) {
	rt, _ := testRouter(t)
	tests := []struct {
		name, tenant, path, want string
	}{
		{"home region", "local", "/orders", ""},
		{"home region with query", "local", "/orders?x=1", ""},
		{"foreign", "acme", "/orders", "https://us.example.com/orders"},
		{"root", "acme", "/", "https://us.example.com/"},
		{"trailing slash kept", "acme", "/orders/", "https://us.example.com/orders/"},
		{"base path prefix", "kite", "/orders/7", "https://ap.example.com/qx/api/orders/7"},
		{"base path prefix, root", "kite", "/", "https://ap.example.com/qx/api/"},
		{"query", "acme", "/orders?x=1&y=a%20b", "https://us.example.com/orders?x=1&y=a%20b"},
		{"query with slash and question mark", "acme", "/o?next=/a?b", "https://us.example.com/o?next=/a?b"},
		{"empty query dropped", "acme", "/orders?", "https://us.example.com/orders"},
		{"encoded slash kept", "acme", "/files/a%2Fb", "https://us.example.com/files/a%2Fb"},
		{"encoded space kept", "acme", "/files/a%20b", "https://us.example.com/files/a%20b"},
		{"lower-case escape kept", "acme", "/files/a%2fb", "https://us.example.com/files/a%2fb"},
		{"encoded prefix", "kite", "/%E2%82%AC", "https://ap.example.com/qx/api/%E2%82%AC"},
		{"raw space encoded", "acme", "/a b", "https://us.example.com/a%20b"},
		{"raw non-ASCII encoded", "acme", "/café", "https://us.example.com/caf%C3%A9"},
		{"raw quote encoded", "acme", `/a"<b>`, "https://us.example.com/a%22%3Cb%3E"},
		{"backslash in query encoded", "acme", `/a?q=\x`, "https://us.example.com/a?q=%5Cx"},
		{"sub-delims kept", "acme", "/a;b=c,d@e:f!$&'()*+~", "https://us.example.com/a;b=c,d@e:f!$&'()*+~"},
		{"dots inside a segment", "acme", "/v1.2/..a/a..", "https://us.example.com/v1.2/..a/a.."},
		{"double slash inside", "acme", "/a//b", "https://us.example.com/a//b"},
		{"scheme-like segment", "acme", "/https://evil.com", "https://us.example.com/https://evil.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rt.RedirectURL(t.Context(), tt.tenant, tt.path)
			if err != nil {
				t.Fatalf("RedirectURL(%q, %q): %v", tt.tenant, tt.path, err)
			}
			if got != tt.want {
				t.Errorf("RedirectURL(%q, %q): got %q, want %q", tt.tenant, tt.path, got, tt.want)
			}
			if got != "" {
				if _, err := url.Parse(got); err != nil {
					t.Errorf("result does not parse: %v", err)
				}
			}
		})
	}
}

func TestRouter_RedirectURL_unsafePath(t *testing.T) {
	rt, _ := testRouter(t)
	paths := []string{
		"",
		"orders",
		"//evil.com",
		"//evil.com/orders",
		`/\evil.com`,
		`\\evil.com`,
		`\/evil.com`,
		"https://evil.com/orders",
		"javascript:alert(1)",
		"http:/evil.com",
		"/a\r\nLocation: https://evil.com",
		"/a\nb",
		"/a\x00b",
		"/a\tb",
		"/a\x7fb",
		`/a\b`,
		"/a#frag",
		"/a?x#frag",
		"/a?x=\r\n",
		"/..",
		"/../admin",
		"/a/../../admin",
		"/a/./b",
		"/a/.",
		"/%2e%2e/admin",
		"/%2E%2e/admin",
		"/.%2e/admin",
		"/%2e./admin",
		"/%2e/admin",
		"/a%",
		"/a%2",
		"/a%zz",
		"/a?x=%zz",
		"/a?x=%",
	}
	for _, tenant := range []string{"acme", "local"} {
		for _, p := range paths {
			t.Run(fmt.Sprintf("%s/%q", tenant, p), func(t *testing.T) {
				got, err := rt.RedirectURL(t.Context(), tenant, p)
				if !errors.Is(err, router.ErrUnsafePath) {
					t.Fatalf("RedirectURL(%q, %q): got %q, %v; want ErrUnsafePath", tenant, p, got, err)
				}
				if got != "" {
					t.Errorf("got %q with an error", got)
				}
			})
		}
	}
}

func TestRouter_RedirectURL_errors(t *testing.T) {
	unavailable := fmt.Errorf("query tenant: %w", resolver.ErrUnavailable)
	tests := []struct {
		name   string
		tenant string
		resErr error
		want   error
		calls  int64
	}{
		{"empty tenant is not looked up", "", nil, resolver.ErrInvalidTenant, 0},
		{"unknown tenant", "nobody", nil, resolver.ErrUnknownTenant, 1},
		{"resolver unavailable", "acme", unavailable, resolver.ErrUnavailable, 1},
		{"resolver says invalid", "a\x00", resolver.ErrInvalidTenant, resolver.ErrInvalidTenant, 1},
		{"home region without URL", "lost", nil, resolver.ErrUnknownRegion, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, res := testRouter(t)
			res.err = tt.resErr
			got, err := rt.RedirectURL(t.Context(), tt.tenant, "/orders")
			if !errors.Is(err, tt.want) {
				t.Fatalf("RedirectURL(%q): got %q, %v; want %v", tt.tenant, got, err, tt.want)
			}
			if c := res.calls.Load(); c != tt.calls {
				t.Errorf("resolver calls: got %d, want %d", c, tt.calls)
			}
		})
	}
}

func TestRouter_RedirectURL_noURLs(t *testing.T) {
	// A region configured without URLs serves its own tenants and has
	// nowhere to send the others.
	cfg := mustConfig(t, "eu", "")
	rt := router.New(newFake(map[string]string{"local": "eu", "acme": "us"}), cfg)
	if got, err := rt.RedirectURL(t.Context(), "local", "/x"); got != "" || err != nil {
		t.Errorf("home tenant: got %q, %v; want \"\", nil", got, err)
	}
	if _, err := rt.RedirectURL(t.Context(), "acme", "/x"); !errors.Is(err, resolver.ErrUnknownRegion) {
		t.Errorf("foreign tenant: got %v, want ErrUnknownRegion", err)
	}
}

func TestNew_panics(t *testing.T) {
	good := mustConfig(t, "eu", testURLs)
	bad := func(raw string) regions.Config {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return regions.Config{Name: "eu", URLs: map[string]*url.URL{"eu": good.URLs["eu"], "us": u}}
	}
	tests := []struct {
		name string
		fn   func()
	}{
		{"nil resolver", func() { router.New(nil, good) }},
		{"no region name", func() { router.New(newFake(nil), regions.Config{}) }},
		{"nil base URL", func() {
			router.New(newFake(nil), regions.Config{Name: "eu", URLs: map[string]*url.URL{"us": nil}})
		}},
		{"relative base URL", func() { router.New(newFake(nil), bad("/us")) }},
		{"base URL with userinfo", func() { router.New(newFake(nil), bad("https://u:p@us.example.com")) }},
		{"base URL with query", func() { router.New(newFake(nil), bad("https://us.example.com/?a=b")) }},
		{"ftp base URL", func() { router.New(newFake(nil), bad("ftp://us.example.com")) }},
		{"zero retry after", func() { router.WithRetryAfter(0) }},
		{"no write methods", func() { router.WithWriteMethods() }},
		{"nil extractor", func() { router.WithTenantExtractor(nil) }},
		{"negative proxy limit", func() { router.WithProxy(router.ProxyConfig{MaxBodyBytes: -1}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic")
				}
			}()
			tt.fn()
		})
	}
}
