package resolver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestSetup(t *testing.T) {
	dsn, pool := newSchema(t)
	// Idempotent: a second run (every deploy) changes nothing and fails not.
	if err := Setup(t.Context(), pool); err != nil {
		t.Fatalf("second Setup: %v", err)
	}

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	// The triggers fire always, for writes of logical replication too;
	// Setup also upgrades triggers made before as ordinary ones.
	wantAlways := func(when string) {
		t.Helper()
		rows, err := conn.Query(t.Context(), `SELECT tgname, tgenabled::text FROM pg_trigger
			WHERE tgrelid = 'qx_tenant_regions'::regclass AND NOT tgisinternal ORDER BY tgname`)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var name, enabled string
			err := r.Scan(&name, &enabled)
			return name + "=" + enabled, err
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"qx_tenant_regions_notify=A", "qx_tenant_regions_notify_truncate=A"}
		if !slices.Equal(got, want) {
			t.Errorf("%s: triggers %v, want %v", when, got, want)
		}
	}
	wantAlways("after Setup")
	execSQL(t, dsn, `ALTER TABLE qx_tenant_regions ENABLE TRIGGER qx_tenant_regions_notify,
		ENABLE TRIGGER qx_tenant_regions_notify_truncate`)
	if err := Setup(t.Context(), pool); err != nil {
		t.Fatalf("Setup over ordinary triggers: %v", err)
	}
	wantAlways("after Setup over ordinary triggers")

	if _, err := conn.Exec(t.Context(), "LISTEN "+Channel); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 8000)
	steps := []struct {
		sql  string
		want []string // payloads, in order
	}{
		{`INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('a', 'eu-west-1'), ('b', 'us-east-1')`, []string{"a", "b"}},
		{`UPDATE qx_tenant_regions SET region = 'ap-south-1' WHERE tenant_id = 'a'`, []string{"a"}},
		{`UPDATE qx_tenant_regions SET tenant_id = 'c' WHERE tenant_id = 'b'`, []string{"b", "c"}},
		{`DELETE FROM qx_tenant_regions WHERE tenant_id = 'c'`, []string{"c"}},
		{`INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ('` + long + `', 'eu-west-1')`, []string{""}},
		{`TRUNCATE qx_tenant_regions`, []string{""}},
	}
	for _, st := range steps {
		execSQL(t, dsn, st.sql)
		for _, want := range st.want {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			n, err := conn.WaitForNotification(ctx)
			cancel()
			if err != nil {
				t.Fatalf("after %.60s: want notification %q: %v", st.sql, want, err)
			}
			if n.Channel != Channel || n.Payload != want {
				t.Fatalf("after %.60s: notification %s %q, want %s %q", st.sql, n.Channel, n.Payload, Channel, want)
			}
		}
	}
}
