package cdc

import (
	"context"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

// A transaction that inserted into the outbox before the idle keepalive
// position and commits after it was confirmed must still be delivered
// after a restart from the confirmed position.
func TestReview_IdleConfirmAcrossOpenTransaction(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t, pg)
	if _, err := f.conn.Exec(ctx, "CREATE TABLE busy (id bigserial, pad text)"); err != nil {
		t.Fatal(err)
	}
	f.insertTx(t, 1, "first")
	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot, StatusInterval: 200 * time.Millisecond})
	r.collect(t, 1, true)

	open := connect(t, f.dsn)
	tx, err := open.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload) VALUES ('open', 'a', 'b', 'c', '{}')`); err != nil {
		t.Fatal(err)
	}
	var insertLSN LSN
	var s string
	open.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s)
	insertLSN, _ = ParseLSN(s)
	for i := 0; i < 5; i++ {
		if _, err := f.conn.Exec(ctx, `INSERT INTO busy (pad) SELECT repeat('x', 900) FROM generate_series(1, 2000)`); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return r.s.Confirmed() > insertLSN+1<<20 },
		"idle position not confirmed past the open transaction")
	confirmed := r.s.Confirmed()
	r.stop()
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("insert at %s, confirmed %s while it was open", insertLSN, confirmed)
	r2 := startStream(t, Config{DSN: f.dsn, Slot: f.slot, StartLSN: confirmed})
	evs, _ := r2.collect(t, 1, true)
	if len(evs) != 1 || evs[0].String(FieldTenantID) != "open" {
		t.Fatalf("got %v", evs)
	}
}
