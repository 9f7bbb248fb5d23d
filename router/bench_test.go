package router_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/qx-platform/regions/resolver"
	"github.com/qx-platform/regions/router"
)

// nopWriter is a ResponseWriter that costs nothing, so that the benchmarks
// measure the middleware and not httptest.ResponseRecorder.
type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(code int)        { w.code = code }

// benchMiddleware serves a write for tenant through the middleware of a
// router backed by resolver.Static, the cheapest real resolver (the DB
// resolver's cached path costs about the same).
func benchMiddleware(b *testing.B, tenant string, want int) {
	res := resolver.NewStatic(map[string]string{"local": "eu", "acme": "us"}, "")
	rt := router.New(res, mustConfig(b, "eu", testURLs))
	h := rt.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	req := httptest.NewRequest("POST", "/orders/42?expand=items", nil)
	req.Header.Set("X-Tenant-ID", tenant)
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	if w.code != want {
		b.Fatalf("status: got %d, want %d", w.code, want)
	}
}

func BenchmarkMiddleware_Local(b *testing.B) {
	benchMiddleware(b, "local", http.StatusOK)
}

func BenchmarkMiddleware_Foreign(b *testing.B) {
	benchMiddleware(b, "acme", http.StatusTemporaryRedirect)
}
