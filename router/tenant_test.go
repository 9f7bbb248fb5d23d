package router_test

import (
	"net/http/httptest"
	"testing"

	"github.com/qx-platform/regions/router"
)

func TestTenantExtractors(t *testing.T) {
	type want struct {
		tenant string
		ok     bool
	}
	tests := []struct {
		name    string
		extract router.TenantExtractor
		target  string
		host    string
		headers map[string][]string
		want    want
	}{
		{"header", router.HeaderTenant("x-tenant-id"), "/", "", map[string][]string{"X-Tenant-Id": {"acme"}}, want{"acme", true}},
		{"header missing", router.HeaderTenant("X-Tenant-ID"), "/", "", nil, want{"", false}},
		{"header empty", router.HeaderTenant("X-Tenant-ID"), "/", "", map[string][]string{"X-Tenant-Id": {""}}, want{"", true}},
		{"header repeated, same", router.HeaderTenant("X-Tenant-ID"), "/", "", map[string][]string{"X-Tenant-Id": {"acme", "acme"}}, want{"acme", true}},
		{"header repeated, different", router.HeaderTenant("X-Tenant-ID"), "/", "", map[string][]string{"X-Tenant-Id": {"acme", "kite"}}, want{"", true}},

		{"segment", router.PathSegmentTenant(1), "/tenants/acme/orders", "", nil, want{"acme", true}},
		{"segment first", router.PathSegmentTenant(0), "/acme/orders", "", nil, want{"acme", true}},
		{"segment last", router.PathSegmentTenant(1), "/tenants/acme", "", nil, want{"acme", true}},
		{"segment decoded", router.PathSegmentTenant(1), "/tenants/ac%20me/orders", "", nil, want{"ac me", true}},
		{"segment with encoded slash", router.PathSegmentTenant(1), "/tenants/a%2Fb/orders", "", nil, want{"a/b", true}},
		{"segment empty", router.PathSegmentTenant(1), "/tenants//orders", "", nil, want{"", true}},
		{"segment missing", router.PathSegmentTenant(2), "/tenants/acme", "", nil, want{"", false}},
		{"segment of root", router.PathSegmentTenant(0), "/", "", nil, want{"", true}},

		{"subdomain", router.SubdomainTenant("example.com"), "/", "acme.example.com", nil, want{"acme", true}},
		{"subdomain with port", router.SubdomainTenant("example.com"), "/", "acme.example.com:8443", nil, want{"acme", true}},
		{"subdomain upper case", router.SubdomainTenant("Example.COM."), "/", "ACME.example.com.", nil, want{"acme", true}},
		{"subdomain: the parent itself", router.SubdomainTenant("example.com"), "/", "example.com", nil, want{"", false}},
		{"subdomain: other domain", router.SubdomainTenant("example.com"), "/", "acme.badexample.com", nil, want{"", false}},
		{"subdomain: two labels", router.SubdomainTenant("example.com"), "/", "a.b.example.com", nil, want{"", true}},
		{"subdomain: IP", router.SubdomainTenant("example.com"), "/", "[::1]:80", nil, want{"", false}},

		{"first: header wins", router.FirstTenant(router.HeaderTenant("X-Tenant-ID"), router.SubdomainTenant("example.com")),
			"/", "kite.example.com", map[string][]string{"X-Tenant-Id": {"acme"}}, want{"acme", true}},
		{"first: falls through", router.FirstTenant(router.HeaderTenant("X-Tenant-ID"), router.SubdomainTenant("example.com")),
			"/", "kite.example.com", nil, want{"kite", true}},
		{"first: none", router.FirstTenant(router.HeaderTenant("X-Tenant-ID")), "/", "", nil, want{"", false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", tt.target, nil)
			if tt.host != "" {
				req.Host = tt.host
			}
			for k, vs := range tt.headers {
				req.Header[k] = vs
			}
			tenant, ok := tt.extract(req)
			if got := (want{tenant, ok}); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
