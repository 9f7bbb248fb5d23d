package resolver

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qx-platform/regions/internal/testenv"
)

func TestDB_Run(t *testing.T) {
	_, pool := newSchema(t)
	d, reg := startDB(t, pool, DBConfig{})
	if got := metric(t, reg, "qx_resolver_listener_up"); got != 1 {
		t.Errorf("listener_up = %v, want 1", got)
	}
	if err := d.Run(t.Context()); err == nil {
		t.Error("second concurrent Run succeeded")
	}
}

func TestDB_RunStopsWhileReconnecting(t *testing.T) {
	// A pool on a port where nothing listens: Run keeps failing and backing
	// off, and must still return as soon as it is cancelled.
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pool := newPool(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&connect_timeout=1", port))
	d, reg := newDB(t, pool, DBConfig{MaxReconnectDelay: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	testenv.Eventually(t, 5*time.Second, func() bool {
		return metric(t, reg, "qx_resolver_errors_total", "op", "listen") >= 3
	}, "listener retrying")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	_, err = d.Resolve(t.Context(), "acme")
	wantErr(t, err, ErrUnavailable)
}

// TestDB_ListenerPing lets the listener time out waiting many times over:
// each time it pings, and the connection must stay up and keep delivering.
func TestDB_ListenerPing(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
	d, reg := startDB(t, pool, DBConfig{}, func(d *DB) { d.pingEvery = 5 * time.Millisecond })
	mustResolve(t, d, "acme", "eu-west-1")
	var pings int
	testenv.Eventually(t, 5*time.Second, func() bool {
		err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = '-- ping'`).Scan(&pings)
		return err == nil && pings == 1
	}, "listener pinged")
	for i, region := range []string{"us-east-1", "ap-south-1", "eu-west-1"} {
		execSQL(t, dsn, `UPDATE qx_tenant_regions SET region = $1 WHERE tenant_id = 'acme'`, region)
		testenv.Eventually(t, time.Second, func() bool { return resolvesTo(d, "acme", region) }, "update %d", i)
	}
	if got := metric(t, reg, "qx_resolver_errors_total", "op", "listen"); got != 0 {
		t.Errorf("listen errors = %v, want 0", got)
	}
	if got := metric(t, reg, "qx_resolver_invalidations_total", "scope", "all"); got != 1 {
		t.Errorf("invalidations{scope=all} = %v, want 1 (no reconnect)", got)
	}
}

// TestDB_ListenerReconnect changes a row without a NOTIFY, so the cache
// goes stale, then kills the listener's backend: the reconnect must empty
// the cache, since notifications may have been missed.
func TestDB_ListenerReconnect(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1')`)
	d, reg := startDB(t, pool, DBConfig{TTL: time.Hour, MaxReconnectDelay: 200 * time.Millisecond})
	mustResolve(t, d, "acme", "eu-west-1")

	// The trigger is off for this one transaction: no NOTIFY.
	execSQL(t, dsn, `BEGIN; ALTER TABLE qx_tenant_regions DISABLE TRIGGER qx_tenant_regions_notify;
		UPDATE qx_tenant_regions SET region = 'us-east-1' WHERE tenant_id = 'acme';
		ALTER TABLE qx_tenant_regions ENABLE ALWAYS TRIGGER qx_tenant_regions_notify; COMMIT`)
	mustResolve(t, d, "acme", "eu-west-1") // stale, as intended

	all := metric(t, reg, "qx_resolver_invalidations_total", "scope", "all")
	var killed int
	if err := pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN `+Channel+`'`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d listener backends, want 1", killed)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return resolvesTo(d, "acme", "us-east-1") }, "cache emptied")
	if got := metric(t, reg, "qx_resolver_invalidations_total", "scope", "all"); got <= all {
		t.Errorf("invalidations{scope=all} = %v, want > %v", got, all)
	}
	if got := metric(t, reg, "qx_resolver_errors_total", "op", "listen"); got != 1 {
		t.Errorf("listen errors = %v, want 1", got)
	}
	testenv.Eventually(t, 5*time.Second, d.Listening, "listening again")

	// And the new listener delivers notifications.
	execSQL(t, dsn, `UPDATE qx_tenant_regions SET region = 'ap-south-1' WHERE tenant_id = 'acme'`)
	testenv.Eventually(t, time.Second, func() bool { return resolvesTo(d, "acme", "ap-south-1") })
}

// TestDB_DatabaseDown stops a cluster of its own (the package's one serves
// the other tests): cached tenants keep resolving, cold ones get
// ErrUnavailable (never the default region), and all is well again once the
// database is back.
func TestDB_DatabaseDown(t *testing.T) {
	own, err := testenv.StartPostgres(testenv.PGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	dsn := own.DSN("postgres")
	pool := newPool(t, dsn)
	if err := Setup(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1'), ('globex', 'us-east-1')`)

	// d caches normally; stale's entries expire at once, so it shows the
	// expired entries being served while the database is away.
	d, reg := startDB(t, pool, DBConfig{DefaultRegion: "ap-south-1", QueryTimeout: time.Second,
		MaxReconnectDelay: 200 * time.Millisecond})
	stale, staleReg := startDB(t, newPool(t, dsn), DBConfig{TTL: time.Nanosecond, QueryTimeout: time.Second,
		MaxReconnectDelay: 200 * time.Millisecond})
	mustResolve(t, d, "acme", "eu-west-1")
	mustResolve(t, d, "initech", "ap-south-1") // no row: default, cached
	mustResolve(t, stale, "globex", "us-east-1")

	if err := own.StopFast(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return !d.Listening() && !stale.Listening() }, "listeners down")

	mustResolve(t, d, "acme", "eu-west-1")
	mustResolve(t, d, "initech", "ap-south-1")
	mustResolve(t, stale, "globex", "us-east-1")
	if got := metric(t, staleReg, "qx_resolver_cache_stale_hits_total"); got < 1 {
		t.Errorf("stale hits = %v, want >= 1", got)
	}
	start := time.Now()
	region, err := d.Resolve(t.Context(), "globex")
	if !errors.Is(err, ErrUnavailable) || region != "" {
		t.Errorf("cold tenant with the database down: %q, %v; want \"\", ErrUnavailable", region, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("cold lookup took %v with the database down", el)
	}
	_, err = stale.Resolve(t.Context(), "acme")
	wantErr(t, err, ErrUnavailable)
	if got := metric(t, reg, "qx_resolver_errors_total", "op", "query"); got < 1 {
		t.Errorf("query errors = %v, want >= 1", got)
	}

	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return d.Listening() && stale.Listening() }, "listeners back")
	execSQL(t, dsn, `UPDATE qx_tenant_regions SET region = 'ap-south-1' WHERE tenant_id = 'acme'`)
	testenv.Eventually(t, 5*time.Second, func() bool { return resolvesTo(d, "acme", "ap-south-1") })
	testenv.Eventually(t, 5*time.Second, func() bool { return resolvesTo(d, "globex", "us-east-1") })
}

// TestDB_ReplicaRoleNotifies writes the way a logical replication apply
// worker does, with session_replication_role = replica, under which
// ordinary triggers stay silent: the resolver must hear of it all the same.
func TestDB_ReplicaRoleNotifies(t *testing.T) {
	dsn, pool := newSchema(t)
	execSQL(t, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('acme', 'eu-west-1'), ('globex', 'eu-west-1')`)
	d, _ := startDB(t, pool, DBConfig{TTL: time.Hour, NegativeTTL: time.Hour})
	mustResolve(t, d, "acme", "eu-west-1")
	mustResolve(t, d, "globex", "eu-west-1")
	_, err := d.Resolve(t.Context(), "initech")
	wantErr(t, err, ErrUnknownTenant)

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `SET session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("exec %q: %v", sql, err)
		}
	}

	exec(`UPDATE qx_tenant_regions SET region = 'us-east-1' WHERE tenant_id = 'acme'`)
	testenv.Eventually(t, 5*time.Second, func() bool { return resolvesTo(d, "acme", "us-east-1") }, "update seen")
	exec(`INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('initech', 'ap-south-1')`)
	testenv.Eventually(t, 5*time.Second, func() bool { return resolvesTo(d, "initech", "ap-south-1") }, "insert seen")
	exec(`TRUNCATE qx_tenant_regions`)
	testenv.Eventually(t, 5*time.Second, func() bool {
		_, err := d.Resolve(t.Context(), "globex")
		return errors.Is(err, ErrUnknownTenant)
	}, "truncate seen")
}
