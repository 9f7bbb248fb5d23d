package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
	t.Run("invalid region names are refused whatever the config", func(t *testing.T) {
		// The zero Config "has" the region "", and a config could in
		// principle list a name that is not a region name.
		configs := map[string]regions.Config{
			"zero":        {},
			"name only":   {Name: "eu-west-1"},
			"with urls":   testRegions,
			"odd listing": {Name: "eu-west-1", URLs: map[string]*url.URL{"": nil, "EU-WEST-1": nil}},
		}
		for cname, cfg := range configs {
			own, err := NewDB(pool, DBConfig{Regions: cfg})
			if err != nil {
				t.Fatal(err)
			}
			for _, region := range []string{"", "EU-WEST-1", " eu-west-1", strings.Repeat("a", 64)} {
				if err := own.Set(t.Context(), "invalid-region", region); !errors.Is(err, ErrUnknownRegion) {
					t.Errorf("%s config: Set(%q) = %v, want %v", cname, region, err, ErrUnknownRegion)
				}
			}
		}
		var n int
		if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM qx_tenant_regions WHERE tenant_id = 'invalid-region'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows written for invalid regions, want 0", n)
		}
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

func ptr[T any](v T) *T { return &v }

// sqlKey carries a query's SQL from TraceQueryStart to TraceQueryEnd.
type sqlKey struct{}

// lookupHolder is a pgx query tracer that, once armed, holds the next
// lookup query that finds a row after it has read it and before it
// returns: a lookup in flight whose answer goes stale if the row changes
// meanwhile.
type lookupHolder struct {
	armed   atomic.Bool
	held    chan struct{} // closed once a query is held
	release func()
	unhold  chan struct{}
}

func (h *lookupHolder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, sqlKey{}, data.SQL)
}

func (h *lookupHolder) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if ctx.Value(sqlKey{}) == selectSQL && data.Err == nil && h.armed.CompareAndSwap(true, false) {
		close(h.held)
		<-h.unhold
	}
}

// newHeldSchema is newSchema with a pool whose connections trace through
// the returned holder. The holder lets go when the test ends, before the
// pool closes (which waits for the held connection).
func newHeldSchema(t *testing.T) (string, *pgxpool.Pool, *lookupHolder) {
	t.Helper()
	dsn := pg.NewDatabase(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	h := &lookupHolder{held: make(chan struct{}), unhold: make(chan struct{})}
	var once sync.Once
	h.release = func() { once.Do(func() { close(h.unhold) }) }
	cfg.ConnConfig.Tracer = h
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	t.Cleanup(h.release)
	if err := Setup(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return dsn, pool, h
}

// TestDB_InvalidationDuringLookup changes a tenant while a lookup of it is
// in flight with the old region: a lookup that starts after the change
// must not join it, but read the new region.
func TestDB_InvalidationDuringLookup(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, d *DB, dsn string)
		notify *string // the payload to wait for after change, if any
	}{
		{"Set", func(t *testing.T, d *DB, _ string) {
			if err := d.Set(t.Context(), "acme", "us-east-1"); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"NOTIFY of the tenant", func(t *testing.T, _ *DB, dsn string) {
			execSQL(t, dsn, `UPDATE qx_tenant_regions SET region = 'us-east-1' WHERE tenant_id = 'acme'`)
		}, ptr("acme")},
		{"NOTIFY of every tenant", func(t *testing.T, _ *DB, dsn string) {
			execSQL(t, dsn, `BEGIN; ALTER TABLE qx_tenant_regions DISABLE TRIGGER qx_tenant_regions_notify;
				UPDATE qx_tenant_regions SET region = 'us-east-1' WHERE tenant_id = 'acme';
				ALTER TABLE qx_tenant_regions ENABLE ALWAYS TRIGGER qx_tenant_regions_notify;
				SELECT pg_notify('`+Channel+`', ''); COMMIT`)
		}, ptr("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn, pool, h := newHeldSchema(t)
			execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
			notified := make(chan string, 16)
			d, _ := startDB(t, pool, DBConfig{TTL: time.Hour, QueryTimeout: 30 * time.Second}, func(d *DB) {
				d.testHookNotified = func(p string) {
					select {
					case notified <- p:
					default:
					}
				}
			})

			h.armed.Store(true)
			first := make(chan error, 1)
			go func() {
				_, err := d.Resolve(context.Background(), "acme")
				first <- err
			}()
			select {
			case <-h.held:
			case <-time.After(10 * time.Second):
				t.Fatal("first lookup never reached the database")
			}

			tt.change(t, d, dsn)
			for want := tt.notify; want != nil; {
				select {
				case p := <-notified:
					if p == *want {
						want = nil
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("notification %q not applied", *want)
				}
			}

			// Before the fix this joined the held lookup and waited for it.
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			got, err := d.Resolve(ctx, "acme")
			if err != nil || got != "us-east-1" {
				t.Errorf("Resolve after the change, with a lookup from before it in flight = %q, %v; want us-east-1, nil", got, err)
			}

			h.release()
			select {
			case err := <-first:
				if err != nil {
					t.Errorf("first lookup: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("first lookup never returned")
			}
			// Its old answer did not land in the cache either.
			mustResolve(t, d, "acme", "us-east-1")
		})
	}
}

// TestDB_LookupCountedOnce has a lookup miss the cache and, before it asks
// for the row, another lookup fill the cache: the first then finds the row
// cached inside its flight, which must not count as a hit too.
func TestDB_LookupCountedOnce(t *testing.T) {
	for _, tt := range []struct {
		tenant, counter string
		want            error
	}{
		{"acme", "qx_resolver_cache_hits_total", nil},
		{"initech", "qx_resolver_cache_negative_hits_total", ErrUnknownTenant},
	} {
		t.Run(tt.tenant, func(t *testing.T) {
			dsn, pool := newSchema(t)
			execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
			var once atomic.Bool
			parked, unpark := make(chan struct{}), make(chan struct{})
			d, reg := startDB(t, pool, DBConfig{TTL: time.Hour, NegativeTTL: time.Hour}, func(d *DB) {
				d.testHookMissed = func(string) {
					if once.CompareAndSwap(false, true) {
						close(parked)
						<-unpark
					}
				}
			})
			resolve := func() error {
				_, err := d.Resolve(context.Background(), tt.tenant)
				if !errors.Is(err, tt.want) {
					return fmt.Errorf("Resolve(%q) = %v, want %v", tt.tenant, err, tt.want)
				}
				return nil
			}
			first := make(chan error, 1)
			go func() { first <- resolve() }()
			select {
			case <-parked:
			case <-time.After(10 * time.Second):
				t.Fatal("first lookup did not miss")
			}
			if err := resolve(); err != nil { // misses, queries, fills the cache
				t.Fatal(err)
			}
			close(unpark)
			if err := <-first; err != nil { // finds the cache filled inside its flight
				t.Fatal(err)
			}
			counts := func() string {
				return fmt.Sprintf("misses=%v %s=%v queries=%v", metric(t, reg, "qx_resolver_cache_misses_total"),
					tt.counter, metric(t, reg, tt.counter), metric(t, reg, "qx_resolver_queries_total"))
			}
			if got, want := counts(), fmt.Sprintf("misses=2 %s=0 queries=1", tt.counter); got != want {
				t.Errorf("after two lookups that missed: %s, want %s", got, want)
			}
			if err := resolve(); err != nil {
				t.Fatal(err)
			}
			if got, want := counts(), fmt.Sprintf("misses=2 %s=1 queries=1", tt.counter); got != want {
				t.Errorf("after one more lookup, a hit: %s, want %s", got, want)
			}
		})
	}
}
