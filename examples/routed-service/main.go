// Command routed-service is a small orders API that shows how a Qx service
// routes writes with package router and resolver.Static: reads are served in
// every region, writes only in the tenant's home region, and a write that
// arrives elsewhere gets 307 to the home region (or, with -proxy, is
// forwarded there).
//
// Run one copy per region, with the same region list and tenant map:
//
//	export QX_REGION__URLS='eu=http://localhost:8081,us=http://localhost:8082'
//	export QX_TENANTS='acme=us,kite=eu'
//	QX_REGION__NAME=eu go run ./examples/routed-service -addr localhost:8081 &
//	QX_REGION__NAME=us go run ./examples/routed-service -addr localhost:8082 &
//
//	curl -i -X POST -H 'X-Tenant-ID: acme' -d '{"sku":"x"}' localhost:8081/orders
//	  → 307, Location: http://localhost:8082/orders?qx_hop=eu
//	curl -L -X POST -H 'X-Tenant-ID: acme' -d '{"sku":"x"}' localhost:8081/orders
//	  → 201 from us (curl -L repeats a POST with its body on 307)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/resolver"
	"github.com/qx-platform/regions/router"
)

// envTenants holds the tenant map, "tenant=region,tenant=region".
const envTenants = "QX_TENANTS"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "routed-service:", err)
		os.Exit(1)
	}
}

// run serves until ctx is cancelled.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("routed-service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "localhost:8080", "listen address")
	tenants := fs.String("tenants", getenv(envTenants), "tenant=region,... (env "+envTenants+")")
	defaultRegion := fs.String("default-region", "", "home region of tenants not listed; empty answers them 404")
	proxy := fs.Bool("proxy", false, "forward foreign writes to the home region instead of answering 307")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := regions.ParseConfig(getenv(regions.EnvRegionName), getenv(regions.EnvRegionURLs))
	if err != nil {
		return err
	}
	m, err := parseTenants(*tenants)
	if err != nil {
		return fmt.Errorf("%s: %w", envTenants, err)
	}
	res := resolver.NewStatic(m, *defaultRegion)
	if err := res.Validate(cfg); err != nil {
		return fmt.Errorf("%s: %w", envTenants, err)
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil)).With("region", cfg.Name)
	opts := []router.Option{router.WithErrorHook(func(r *http.Request, err error) {
		logger.Warn("write not routed", "method", r.Method, "path", r.URL.Path, "err", err)
	})}
	if *proxy {
		opts = append(opts, router.WithProxy(router.ProxyConfig{}))
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: newHandler(cfg, res, opts...), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	logger.Info("serving", "addr", ln.Addr().String(), "proxy", *proxy)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newHandler is the service: its own routes, behind the router's
// middleware. The handlers know nothing about regions; by the time a write
// reaches them, it belongs here.
func newHandler(cfg regions.Config, res resolver.Resolver, opts ...router.Option) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /orders", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]string{"region": cfg.Name, "tenant": r.Header.Get("X-Tenant-ID")})
	})
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var order map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&order); err != nil {
			http.Error(w, "body must be a JSON object", http.StatusBadRequest)
			return
		}
		reply(w, http.StatusCreated, map[string]any{
			"region": cfg.Name, "tenant": r.Header.Get("X-Tenant-ID"), "order": order,
		})
	})
	return router.New(res, cfg, opts...).Middleware(mux)
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// parseTenants reads "tenant=region,tenant=region".
func parseTenants(s string) (map[string]string, error) {
	m := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for _, item := range strings.Split(s, ",") {
		tenant, region, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || tenant == "" || region == "" {
			return nil, fmt.Errorf("entry %q is not tenant=region", item)
		}
		if _, dup := m[tenant]; dup {
			return nil, fmt.Errorf("tenant %q listed twice", tenant)
		}
		m[tenant] = region
	}
	return m, nil
}
