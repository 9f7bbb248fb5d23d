package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/resolver"
	"github.com/qx-platform/regions/router"
)

// startRegions runs the service in eu and us, returning their base URLs and
// the shared config.
func startRegions(t *testing.T, opts ...router.Option) (eu, us string, cfg regions.Config) {
	t.Helper()
	euSrv, usSrv := httptest.NewUnstartedServer(nil), httptest.NewUnstartedServer(nil)
	eu, us = "http://"+euSrv.Listener.Addr().String(), "http://"+usSrv.Listener.Addr().String()
	cfg, err := regions.ParseConfig("eu", "eu="+eu+",us="+us)
	if err != nil {
		t.Fatal(err)
	}
	usCfg := cfg
	usCfg.Name = "us"
	res := resolver.NewStatic(map[string]string{"acme": "us", "kite": "eu"}, "")
	euSrv.Config.Handler = newHandler(cfg, res, opts...)
	usSrv.Config.Handler = newHandler(usCfg, res, opts...)
	euSrv.Start()
	usSrv.Start()
	t.Cleanup(euSrv.Close)
	t.Cleanup(usSrv.Close)
	return eu, us, cfg
}

func do(t *testing.T, client *http.Client, method, url, tenant, body string) (int, map[string]any) {
	t.Helper()
	// A reader without Seek or Len: http.NewRequest cannot rewind it.
	req, err := http.NewRequestWithContext(t.Context(), method, url, io.MultiReader(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Tenant-ID", tenant)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&got)
	return resp.StatusCode, got
}

func TestService(t *testing.T) {
	for _, mode := range []struct {
		name   string
		opts   []router.Option
		client func(cfg regions.Config) *http.Client
	}{
		{"redirect with router.Transport", nil, func(cfg regions.Config) *http.Client {
			return &http.Client{Transport: &router.Transport{Regions: cfg}}
		}},
		{"proxy with a plain client", []router.Option{router.WithProxy(router.ProxyConfig{})}, func(regions.Config) *http.Client {
			return &http.Client{}
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			eu, _, cfg := startRegions(t, mode.opts...)
			client := mode.client(cfg)
			t.Cleanup(client.CloseIdleConnections)

			status, got := do(t, client, "POST", eu+"/orders", "acme", `{"sku":"x"}`)
			if status != http.StatusCreated || got["region"] != "us" {
				t.Errorf("foreign write: got %d %v, want 201 from us", status, got)
			}
			status, got = do(t, client, "POST", eu+"/orders", "kite", `{"sku":"y"}`)
			if status != http.StatusCreated || got["region"] != "eu" {
				t.Errorf("home write: got %d %v, want 201 from eu", status, got)
			}
			status, got = do(t, client, "GET", eu+"/orders", "acme", "")
			if status != http.StatusOK || got["region"] != "eu" {
				t.Errorf("foreign read: got %d %v, want 200 from eu", status, got)
			}
			status, got = do(t, client, "POST", eu+"/orders", "nobody", `{}`)
			if status != http.StatusNotFound || got["type"] != "urn:qx:problem:unknown-tenant" {
				t.Errorf("unknown tenant: got %d %v, want 404 unknown-tenant", status, got)
			}
		})
	}
}

func TestRun_badConfig(t *testing.T) {
	env := map[string]string{
		regions.EnvRegionName: "eu",
		regions.EnvRegionURLs: "eu=http://localhost:1,us=http://localhost:2",
		envTenants:            "acme=mars",
	}
	err := run(t.Context(), nil, func(k string) string { return env[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), envTenants) {
		t.Errorf("run with a tenant in an unknown region: got %v, want an error naming %s", err, envTenants)
	}
}

func TestParseTenants(t *testing.T) {
	got, err := parseTenants(" acme=us, kite=eu ")
	if err != nil || len(got) != 2 || got["acme"] != "us" || got["kite"] != "eu" {
		t.Errorf("parseTenants: got %v, %v", got, err)
	}
	for _, bad := range []string{"acme", "acme=", "=us", "acme=us,acme=eu", "acme=us,"} {
		if _, err := parseTenants(bad); err == nil {
			t.Errorf("parseTenants(%q): no error", bad)
		}
	}
}
