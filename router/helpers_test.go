package router_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/resolver"
)

// fakeResolver maps tenants to regions; err, when set, is returned for every
// tenant. It stands in for resolver.Static so that these tests depend on the
// Resolver interface only.
type fakeResolver struct {
	tenants map[string]string
	err     error
	calls   atomic.Int64
}

func (f *fakeResolver) Resolve(_ context.Context, tenantID string) (string, error) {
	f.calls.Add(1)
	if f.err != nil {
		return "", f.err
	}
	if r, ok := f.tenants[tenantID]; ok {
		return r, nil
	}
	return "", resolver.ErrUnknownTenant
}

func newFake(tenants map[string]string) *fakeResolver {
	return &fakeResolver{tenants: tenants}
}

// mustConfig parses a region config or fails the test.
func mustConfig(tb testing.TB, name, urls string) regions.Config {
	tb.Helper()
	cfg, err := regions.ParseConfig(name, urls)
	if err != nil {
		tb.Fatalf("ParseConfig(%q, %q): %v", name, urls, err)
	}
	return cfg
}

// problemBody is the JSON of an error answer.
type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// readProblem checks that resp is an application/problem+json answer with
// the given status and returns its body.
func readProblem(tb testing.TB, resp *http.Response, status int) problemBody {
	tb.Helper()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		tb.Fatalf("status: got %d, want %d (body %q)", resp.StatusCode, status, b)
	}
	if got, want := resp.Header.Get("Content-Type"), "application/problem+json"; got != want {
		tb.Fatalf("Content-Type: got %q, want %q", got, want)
	}
	var p problemBody
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		tb.Fatalf("decode problem: %v", err)
	}
	if p.Status != status {
		tb.Fatalf("problem status: got %d, want %d", p.Status, status)
	}
	if p.Type == "" || p.Title == "" {
		tb.Fatalf("problem without type or title: %+v", p)
	}
	return p
}
