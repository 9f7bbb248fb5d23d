package router_test

import (
	"bufio"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/qx-platform/regions/router"
)

// checkLocation fails unless loc stays inside base: same scheme and host, no
// userinfo or fragment, and a path under base's path also after a browser
// has removed dot segments (WHATWG URL treats %2e as a dot too).
func checkLocation(t *testing.T, loc string, base *url.URL) {
	t.Helper()
	for i := 0; i < len(loc); i++ {
		if c := loc[i]; c <= ' ' || c >= 0x7f || c == '\\' || c == '#' {
			t.Fatalf("Location %q holds byte %#x", loc, c)
		}
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("Location %q does not parse: %v", loc, err)
	}
	if u.Scheme != base.Scheme || u.Host != base.Host || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		t.Fatalf("Location %q leaves %s", loc, base)
	}
	prefix := strings.TrimSuffix(base.EscapedPath(), "/") + "/"
	if !strings.HasPrefix(u.EscapedPath(), prefix) {
		t.Fatalf("Location %q is not under %q", loc, prefix)
	}
	dotted := strings.NewReplacer("%2e", ".", "%2E", ".").Replace(u.EscapedPath())
	resolved := base.ResolveReference(&url.URL{Path: dotted})
	if !strings.HasPrefix(resolved.Path, strings.TrimSuffix(base.Path, "/")+"/") {
		t.Fatalf("Location %q climbs out of %q to %q", loc, prefix, resolved.Path)
	}
}

func FuzzRedirectURL(f *testing.F) {
	for _, s := range []string{
		"/orders", "/", "/orders?x=1", "//evil.com", `/\evil.com`, "/a/../b", "/%2e%2e/b",
		"/a\r\nX: y", "/a%2Fb?c=%20", "/café?q=ü", "https://evil.com", "/a#b", "/a?b#c", "/.%2E/x",
		"/?qx_hop=us", "/a;b/..;/c", "/%", "/a b",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	res := newFake(map[string]string{"acme": "us", "kite": "ap"})
	cfg := mustConfig(f, "eu", testURLs)
	rt := router.New(res, cfg)
	f.Fuzz(func(t *testing.T, path string, prefixed bool) {
		tenant, base := "acme", cfg.URLs["us"]
		if prefixed {
			tenant, base = "kite", cfg.URLs["ap"]
		}
		loc, err := rt.RedirectURL(t.Context(), tenant, path)
		if err != nil {
			if !errors.Is(err, router.ErrUnsafePath) {
				t.Fatalf("RedirectURL(%q): unexpected error %v", path, err)
			}
			return
		}
		checkLocation(t, loc, base)
	})
}

// FuzzMiddleware sends raw requests with any target and any Host and
// X-Forwarded-Host headers: a redirect must stay inside the home region's
// base URL, and a request served here must not show the hop marker.
func FuzzMiddleware(f *testing.F) {
	for _, s := range [][2]string{
		{"/orders", "eu.example.com"},
		{"//evil.com/x", "evil.com"},
		{"http://evil.com/x", "evil.com"},
		{"/x?qx_hop=us&a=1", "eu.example.com"},
		{"/x?%71x_hop=us", "eu.example.com"},
		{"/a/%2e%2e/x", "evil.com"},
		{"*", "eu.example.com"},
	} {
		f.Add(s[0], s[1], false)
		f.Add(s[0], s[1], true)
	}
	cfg := mustConfig(f, "eu", testURLs)
	rt := router.New(newFake(map[string]string{"kite": "ap", "local": "eu"}), cfg)
	var seen *http.Request
	h := rt.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r }))
	f.Fuzz(func(t *testing.T, target, host string, local bool) {
		tenant := "kite"
		if local {
			tenant = "local"
		}
		raw := "POST " + target + " HTTP/1.1\r\nHost: " + host + "\r\nX-Forwarded-Host: " + host +
			"\r\nX-Tenant-ID: " + tenant + "\r\nContent-Length: 0\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // not a request a server would hand to a handler
		}
		seen = nil
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusTemporaryRedirect:
			loc := rec.Header().Get("Location")
			checkLocation(t, loc, cfg.URLs["ap"])
			if !strings.HasSuffix(loc, router.HopParam+"=eu") {
				t.Fatalf("Location %q has no hop marker", loc)
			}
		case seen != nil:
			if seen.URL.Query().Has(router.HopParam) {
				t.Fatalf("handler saw the hop marker in %q", seen.URL.RawQuery)
			}
		case rec.Code == http.StatusServiceUnavailable:
			// The loop guard: the target carried the marker.
			if !strings.Contains(rec.Body.String(), "region-conflict") {
				t.Fatalf("503 for %q: %s", target, rec.Body)
			}
		case rec.Code != http.StatusBadRequest:
			t.Fatalf("status %d for %q", rec.Code, target)
		}
	})
}
