package router_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/resolver"
	"github.com/qx-platform/regions/router"
)

func ExampleRouter_RedirectURL() {
	cfg, _ := regions.ParseConfig("eu-west-1", "eu-west-1=https://eu.example.com,us-east-1=https://us.example.com/api")
	res := resolver.NewStatic(map[string]string{"acme": "us-east-1", "kite": "eu-west-1"}, "")
	rt := router.New(res, cfg)

	for _, tenant := range []string{"acme", "kite"} {
		loc, err := rt.RedirectURL(context.Background(), tenant, "/orders?page=2")
		fmt.Printf("%s: %q %v\n", tenant, loc, err)
	}
	_, err := rt.RedirectURL(context.Background(), "acme", "//evil.example.net/orders")
	fmt.Println(err)
	// Output:
	// acme: "https://us.example.com/api/orders?page=2" <nil>
	// kite: "" <nil>
	// unsafe redirect path: starts with two slashes
}

func ExampleRouter_Middleware() {
	cfg, _ := regions.ParseConfig("eu-west-1", "eu-west-1=https://eu.example.com,us-east-1=https://us.example.com")
	res := resolver.NewStatic(map[string]string{"acme": "us-east-1"}, "eu-west-1")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})
	h := router.New(res, cfg).Middleware(mux)

	req := httptest.NewRequest("POST", "/orders", nil)
	req.Header.Set("X-Tenant-ID", "acme")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Header().Get("Location"))
	// Output:
	// 307 https://us.example.com/orders?qx_hop=eu-west-1
}

func ExampleTransport() {
	cfg, _ := regions.ParseConfig("eu-west-1", "eu-west-1=https://eu.example.com,us-east-1=https://us.example.com")
	// Writes sent to any region reach the tenant's home region with their
	// body and Authorization header, whatever kind of reader the body is.
	client := &http.Client{Transport: &router.Transport{Regions: cfg}}
	_ = client
}
