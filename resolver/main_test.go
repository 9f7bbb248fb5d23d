package resolver

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/internal/testenv"
)

// pg is the package's Postgres cluster; each test takes a fresh database.
var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.MainPostgres(m, &pg) }

// testRegions is the region config of every DB resolver in these tests.
var testRegions = regions.Config{Name: "eu-west-1", URLs: mustURLs("eu-west-1", "us-east-1", "ap-south-1")}

func mustURLs(names ...string) map[string]*url.URL {
	m := map[string]*url.URL{}
	for _, n := range names {
		u, err := regions.ParseBaseURL("https://" + n + ".example.com")
		if err != nil {
			panic(err)
		}
		m[n] = u
	}
	return m
}

// newPool connects to dsn and closes the pool when the test ends.
func newPool(tb testing.TB, dsn string) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		tb.Fatalf("pgxpool.New: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// newSchema takes a fresh database, creates the table in it and returns its
// DSN and a pool on it.
func newSchema(tb testing.TB) (string, *pgxpool.Pool) {
	tb.Helper()
	dsn := pg.NewDatabase(tb)
	pool := newPool(tb, dsn)
	if err := Setup(context.Background(), pool); err != nil {
		tb.Fatal(err)
	}
	return dsn, pool
}

// startDB builds a DB on pool (with its own registry unless cfg has one),
// applies before, starts Run and waits until it listens. When the test ends
// it stops Run and fails if Run does not return: no goroutine is left behind.
func startDB(tb testing.TB, pool *pgxpool.Pool, cfg DBConfig, before ...func(*DB)) (*DB, *prometheus.Registry) {
	tb.Helper()
	d, reg := newDB(tb, pool, cfg)
	for _, f := range before {
		f(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run returned %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			tb.Errorf("Run did not return within 10s of cancel")
		}
	})
	testenv.Eventually(tb, 10*time.Second, d.Listening, "listener up")
	return d, reg
}

// newDB builds a DB without running it.
func newDB(tb testing.TB, pool *pgxpool.Pool, cfg DBConfig) (*DB, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewPedanticRegistry()
	if cfg.Registerer == nil {
		cfg.Registerer = reg
	}
	if cfg.Regions.Name == "" {
		cfg.Regions = testRegions
	}
	if cfg.Logger == nil {
		// Log lines show up with the test's output, that is, on failure.
		cfg.Logger = slog.New(slog.NewTextHandler(tb.Output(), nil))
	}
	d, err := NewDB(pool, cfg)
	if err != nil {
		tb.Fatalf("NewDB: %v", err)
	}
	return d, reg
}

// metric returns the value of the counter or gauge name (with the given
// label pairs) in reg, 0 when it is absent.
func metric(tb testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// execSQL runs sql on a connection of its own (not the resolver's pool).
func execSQL(tb testing.TB, dsn, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("exec %q: %v", sql, err)
	}
}

// mustResolve resolves tenant and fails the test on error or a wrong region.
func mustResolve(tb testing.TB, r Resolver, tenant, want string) {
	tb.Helper()
	got, err := r.Resolve(context.Background(), tenant)
	if err != nil || got != want {
		tb.Fatalf("Resolve(%q) = %q, %v; want %q, nil", tenant, got, err, want)
	}
}

// resolvesTo reports whether tenant resolves to want without error.
func resolvesTo(r Resolver, tenant, want string) bool {
	got, err := r.Resolve(context.Background(), tenant)
	return err == nil && got == want
}

// wantErr fails the test unless err wraps target.
func wantErr(tb testing.TB, err, target error) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("err = %v, want %v", err, target)
	}
}
