package resolver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/internal/testenv"
)

func TestNewDB(t *testing.T) {
	_, pool := newSchema(t)
	bad := []struct {
		name string
		cfg  DBConfig
		want string
	}{
		{"negative size", DBConfig{CacheSize: -1}, "CacheSize"},
		{"negative ttl", DBConfig{TTL: -time.Second}, "TTL"},
		{"negative negative ttl", DBConfig{NegativeTTL: -time.Second}, "NegativeTTL"},
		{"negative timeout", DBConfig{QueryTimeout: -time.Second}, "QueryTimeout"},
		{"negative backoff", DBConfig{MaxReconnectDelay: -time.Second}, "MaxReconnectDelay"},
		{"bad default", DBConfig{DefaultRegion: "Mars"}, "DefaultRegion"},
		{"unknown default", DBConfig{DefaultRegion: "mars-1", Regions: testRegions}, "DefaultRegion"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewDB(pool, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewDB = %v, want an error naming %s", err, tt.want)
			}
		})
	}
	if _, err := NewDB(nil, DBConfig{}); err == nil {
		t.Error("NewDB(nil pool) succeeded")
	}
	t.Run("defaults", func(t *testing.T) {
		d, err := NewDB(pool, DBConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if d.cfg.CacheSize != DefaultCacheSize || d.cfg.TTL != DefaultTTL || d.cfg.NegativeTTL != DefaultNegativeTTL ||
			d.cfg.QueryTimeout != DefaultQueryTimeout || d.cfg.MaxReconnectDelay != DefaultMaxReconnectDelay || d.log == nil {
			t.Errorf("defaults not applied: %+v", d.cfg)
		}
	})
	t.Run("metrics registered once", func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		if _, err := NewDB(pool, DBConfig{Registerer: reg}); err != nil {
			t.Fatal(err)
		}
		if _, err := NewDB(pool, DBConfig{Registerer: reg}); err == nil {
			t.Error("second NewDB on one registry succeeded, want AlreadyRegistered")
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "qx_resolver_") {
				t.Errorf("metric %s lacks the qx_resolver_ prefix", mf.GetName())
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "tenant" || l.GetName() == "tenant_id" {
						t.Errorf("metric %s has a tenant label", mf.GetName())
					}
				}
			}
		}
	})
}

func TestDB_Resolve(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1'), ('globex', 'us-east-1'), ('租户', 'ap-south-1')`)
	d, reg := startDB(t, pool, DBConfig{NegativeTTL: time.Hour, TTL: time.Hour})

	t.Run("lookups", func(t *testing.T) {
		mustResolve(t, d, "acme", "eu-west-1")
		mustResolve(t, d, "globex", "us-east-1")
		mustResolve(t, d, "租户", "ap-south-1")
	})
	t.Run("cached", func(t *testing.T) {
		q := metric(t, reg, "qx_resolver_queries_total")
		hits := metric(t, reg, "qx_resolver_cache_hits_total")
		for range 10 {
			mustResolve(t, d, "acme", "eu-west-1")
		}
		if got := metric(t, reg, "qx_resolver_queries_total"); got != q {
			t.Errorf("queries %v -> %v, want no query for a cached tenant", q, got)
		}
		if got := metric(t, reg, "qx_resolver_cache_hits_total"); got != hits+10 {
			t.Errorf("hits %v -> %v, want +10", hits, got)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		for _, id := range []string{"", "a\x00b", strings.Repeat("x", 257), "\xff"} {
			_, err := d.Resolve(t.Context(), id)
			wantErr(t, err, ErrInvalidTenant)
		}
	})
	t.Run("negative caching then insert", func(t *testing.T) {
		_, err := d.Resolve(t.Context(), "initech")
		wantErr(t, err, ErrUnknownTenant)
		q := metric(t, reg, "qx_resolver_queries_total")
		_, err = d.Resolve(t.Context(), "initech")
		wantErr(t, err, ErrUnknownTenant)
		if got := metric(t, reg, "qx_resolver_queries_total"); got != q {
			t.Errorf("queries %v -> %v, want the unknown tenant cached", q, got)
		}
		if got := metric(t, reg, "qx_resolver_cache_negative_hits_total"); got < 1 {
			t.Errorf("negative hits = %v, want >= 1", got)
		}
		// The negative TTL is an hour: only the NOTIFY can make this visible.
		execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('initech', 'us-east-1')`)
		testenv.Eventually(t, time.Second, func() bool { return resolvesTo(d, "initech", "us-east-1") })
	})
	t.Run("update and delete by SQL", func(t *testing.T) {
		mustResolve(t, d, "globex", "us-east-1")
		execSQL(t, dsn, `UPDATE qx_tenant_regions SET region = 'eu-west-1' WHERE tenant_id = 'globex'`)
		testenv.Eventually(t, time.Second, func() bool { return resolvesTo(d, "globex", "eu-west-1") })
		execSQL(t, dsn, `DELETE FROM qx_tenant_regions WHERE tenant_id = 'globex'`)
		testenv.Eventually(t, time.Second, func() bool {
			_, err := d.Resolve(t.Context(), "globex")
			return errors.Is(err, ErrUnknownTenant)
		})
	})
	t.Run("truncate empties the cache", func(t *testing.T) {
		mustResolve(t, d, "acme", "eu-west-1")
		all := metric(t, reg, "qx_resolver_invalidations_total", "scope", "all")
		execSQL(t, dsn, `TRUNCATE qx_tenant_regions`)
		testenv.Eventually(t, time.Second, func() bool {
			return metric(t, reg, "qx_resolver_invalidations_total", "scope", "all") > all
		})
		_, err := d.Resolve(t.Context(), "acme")
		wantErr(t, err, ErrUnknownTenant)
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := d.Resolve(ctx, "never-seen")
		wantErr(t, err, context.Canceled)
	})
}

func TestDB_DefaultRegion(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
	d, _ := startDB(t, pool, DBConfig{DefaultRegion: "us-east-1"})
	mustResolve(t, d, "acme", "eu-west-1")
	mustResolve(t, d, "initech", "us-east-1")
	mustResolve(t, d, "initech", "us-east-1") // negative hit
	_, err := d.Resolve(t.Context(), "")
	wantErr(t, err, ErrInvalidTenant)
}

func TestDB_TwoResolversSeeUpdates(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
	d1, _ := startDB(t, pool, DBConfig{TTL: time.Hour})
	d2, _ := startDB(t, newPool(t, dsn), DBConfig{TTL: time.Hour})
	mustResolve(t, d1, "acme", "eu-west-1")
	mustResolve(t, d2, "acme", "eu-west-1")

	// Through one resolver's Set: it sees the change at once, the other
	// through NOTIFY.
	if err := d1.Set(t.Context(), "acme", "us-east-1"); err != nil {
		t.Fatal(err)
	}
	mustResolve(t, d1, "acme", "us-east-1")
	testenv.Eventually(t, time.Second, func() bool { return resolvesTo(d2, "acme", "us-east-1") })

	// Through plain SQL from elsewhere: both through NOTIFY.
	execSQL(t, dsn, `UPDATE qx_tenant_regions SET region = 'ap-south-1' WHERE tenant_id = 'acme'`)
	testenv.Eventually(t, time.Second, func() bool {
		return resolvesTo(d1, "acme", "ap-south-1") && resolvesTo(d2, "acme", "ap-south-1")
	})
}

func TestDB_SetDelete(t *testing.T) {
	dsn, pool := newSchema(t)
	d, reg := startDB(t, pool, DBConfig{})

	if err := d.Set(t.Context(), "acme", "eu-west-1"); err != nil {
		t.Fatal(err)
	}
	mustResolve(t, d, "acme", "eu-west-1")
	if err := d.Set(t.Context(), "acme", "us-east-1"); err != nil {
		t.Fatal(err)
	}
	mustResolve(t, d, "acme", "us-east-1") // read your own write, no waiting

	var updated time.Time
	if err := pool.QueryRow(t.Context(), `SELECT updated_at FROM qx_tenant_regions WHERE tenant_id = 'acme'`).Scan(&updated); err != nil {
		t.Fatal(err)
	}
	if time.Since(updated) > time.Minute {
		t.Errorf("updated_at = %v, want about now", updated)
	}

	for _, region := range []string{"mars-1", "", "EU-WEST-1"} {
		err := d.Set(t.Context(), "acme", region)
		wantErr(t, err, ErrUnknownRegion)
	}
	mustResolve(t, d, "acme", "us-east-1")
	wantErr(t, d.Set(t.Context(), "", "eu-west-1"), ErrInvalidTenant)
	wantErr(t, d.Set(t.Context(), "a\nb", "eu-west-1"), ErrInvalidTenant)

	if err := d.Delete(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	_, err := d.Resolve(t.Context(), "acme")
	wantErr(t, err, ErrUnknownTenant)
	wantErr(t, d.Delete(t.Context(), "acme"), ErrUnknownTenant)
	wantErr(t, d.Delete(t.Context(), ""), ErrInvalidTenant)

	t.Run("without region config every region is refused", func(t *testing.T) {
		bare, err := NewDB(pool, DBConfig{})
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, bare.Set(t.Context(), "acme", "eu-west-1"), ErrUnknownRegion)
	})
	t.Run("with this region only", func(t *testing.T) {
		own, err := NewDB(pool, DBConfig{Regions: regions.Config{Name: "eu-west-1"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := own.Set(t.Context(), "solo", "eu-west-1"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, own.Set(t.Context(), "solo", "us-east-1"), ErrUnknownRegion)
	})
	t.Run("database error", func(t *testing.T) {
		execSQL(t, dsn, `DROP TABLE qx_tenant_regions`)
		if err := d.Set(t.Context(), "acme", "eu-west-1"); err == nil {
			t.Error("Set without the table succeeded")
		}
		if got := metric(t, reg, "qx_resolver_errors_total", "op", "set"); got != 1 {
			t.Errorf("set errors = %v, want 1", got)
		}
	})
}

func TestDB_Bounded(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) SELECT 't' || i, 'eu-west-1' FROM generate_series(1, 200) i`)
	const size = 32
	d, reg := startDB(t, pool, DBConfig{CacheSize: size})
	for i := 1; i <= 200; i++ {
		mustResolve(t, d, fmt.Sprint("t", i), "eu-west-1")
		_, err := d.Resolve(t.Context(), fmt.Sprint("unknown", i))
		wantErr(t, err, ErrUnknownTenant)
		if n := metric(t, reg, "qx_resolver_cache_entries"); n > size {
			t.Fatalf("%v cache entries, want at most %d", n, size)
		}
	}
}

func TestDB_TTL(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
	d, reg := startDB(t, pool, DBConfig{TTL: time.Nanosecond, NegativeTTL: time.Nanosecond})
	for range 3 {
		mustResolve(t, d, "acme", "eu-west-1")
		_, err := d.Resolve(t.Context(), "initech")
		wantErr(t, err, ErrUnknownTenant)
	}
	if got := metric(t, reg, "qx_resolver_queries_total"); got != 6 {
		t.Errorf("queries = %v, want 6: expired entries must be read again", got)
	}
}

func TestDB_NoCacheWithoutListener(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
	d, reg := newDB(t, pool, DBConfig{}) // Run never called
	for range 3 {
		mustResolve(t, d, "acme", "eu-west-1")
	}
	if got := metric(t, reg, "qx_resolver_queries_total"); got != 3 {
		t.Errorf("queries = %v, want 3: nothing may be cached while no NOTIFY can evict it", got)
	}
}

// lockTable holds an ACCESS EXCLUSIVE lock on the table until release is
// called, so that lookups block inside the database; waiting counts the
// backends of the database that wait for a lock.
func lockTable(t *testing.T, dsn string) (waiting func() int, release func()) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `LOCK TABLE qx_tenant_regions IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			tx.Rollback(context.Background())
			conn.Close(context.Background())
		})
	}
	t.Cleanup(release)
	waiting = func() int {
		var n int
		c, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if err := c.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	return waiting, release
}

func TestDB_Singleflight(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
	d, reg := startDB(t, pool, DBConfig{QueryTimeout: 30 * time.Second})

	waiting, release := lockTable(t, dsn)
	const callers = 1000
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			region, err := d.Resolve(context.Background(), "acme")
			if err == nil && region != "eu-west-1" {
				err = fmt.Errorf("region %q, want eu-west-1", region)
			}
			errs <- err
		})
	}
	// Every caller has missed the cache, and the one query is stuck on the
	// lock: only now let it through.
	testenv.Eventually(t, 10*time.Second, func() bool {
		return metric(t, reg, "qx_resolver_cache_misses_total") == callers
	}, "all callers missed")
	testenv.Eventually(t, 10*time.Second, func() bool { return waiting() == 1 }, "one query waiting")
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := metric(t, reg, "qx_resolver_queries_total"); got != 1 {
		t.Errorf("queries = %v for %d concurrent lookups of one cold tenant, want 1", got, callers)
	}
	mustResolve(t, d, "acme", "eu-west-1")
	if got := metric(t, reg, "qx_resolver_queries_total"); got != 1 {
		t.Errorf("queries = %v after one more lookup, want 1 (cached)", got)
	}
}

func TestDB_CancelledCallerDoesNotFailOthers(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
	d, reg := startDB(t, pool, DBConfig{QueryTimeout: 30 * time.Second})

	waiting, release := lockTable(t, dsn)
	// The first caller starts the query, then gives up.
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() { _, err := d.Resolve(ctx, "acme"); first <- err }()
	testenv.Eventually(t, 10*time.Second, func() bool { return waiting() == 1 }, "query waiting")
	second := make(chan error, 1)
	go func() {
		region, err := d.Resolve(t.Context(), "acme")
		if err == nil && region != "eu-west-1" {
			err = fmt.Errorf("region %q, want eu-west-1", region)
		}
		second <- err
	}()
	testenv.Eventually(t, 10*time.Second, func() bool {
		return metric(t, reg, "qx_resolver_cache_misses_total") == 2
	}, "second caller joined")

	cancel()
	select {
	case err := <-first:
		wantErr(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled caller still waiting")
	}
	release()
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("second caller: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second caller got no answer")
	}
	if got := metric(t, reg, "qx_resolver_queries_total"); got != 1 {
		t.Errorf("queries = %v, want 1", got)
	}
}
