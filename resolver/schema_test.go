package resolver

import (
	"context"
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
