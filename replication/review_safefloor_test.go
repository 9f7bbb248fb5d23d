package replication

import (
	"context"
	"testing"
	"time"

	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/internal/testenv"
)

// After a restart with an idle outbox the replicator's own safe LSN is 0
// until a transaction is acknowledged: its status, lag and safe_lsn metric
// must start from the position the source resumed from and follow what
// the source confirms while idle, also on a database busy with other
// tables.
func TestReview_StatusAfterIdleRestart(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	e.insert(t, 1, 10)
	r1 := e.start(t, options{})
	waitStream(t, n.URL(), stream, 10, 20*time.Second)
	if err := r1.stop(t); err != nil {
		t.Fatal(err)
	}
	var text string
	if err := e.pool.QueryRow(ctx, "SELECT lsn::text FROM qx_replication_checkpoints WHERE name = $1", e.slot).Scan(&text); err != nil {
		t.Fatal(err)
	}
	saved, _ := cdc.ParseLSN(text)

	busy := func() cdc.LSN {
		t.Helper()
		// WAL from other tables: not in the publication.
		if _, err := e.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS filler (id bigserial, pad text);
			INSERT INTO filler (pad) SELECT repeat('x', 500) FROM generate_series(1, 10000)`); err != nil {
			t.Fatal(err)
		}
		var end string
		if err := e.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
			t.Fatal(err)
		}
		lsn, _ := cdc.ParseLSN(end)
		return lsn
	}
	end := busy()
	if end-saved < 4<<20 {
		t.Fatalf("filler wrote %d bytes of WAL, want several MB", end-saved)
	}
	r2 := e.start(t, options{})
	const near = 1 << 20 // a keepalive behind at most
	var st Status
	testenv.Eventually(t, 30*time.Second, func() bool {
		st = r2.r.Status()
		return st.SafeLSN >= saved && st.LagBytes < near
	}, "after an idle restart: status %+v, checkpoint %s, WAL end %s", &st, saved, end)
	if m := cdc.LSN(gauge(t, r2, "qx_replication_safe_lsn")); m < saved {
		t.Errorf("qx_replication_safe_lsn %s, want at least the checkpoint %s", m, saved)
	}
	if m := gauge(t, r2, "qx_replication_lag_bytes"); m >= near {
		t.Errorf("qx_replication_lag_bytes %v, want under %d", m, near)
	}

	// Busy database, idle outbox: the lag stays bounded.
	end = busy()
	testenv.Eventually(t, 30*time.Second, func() bool {
		st = r2.r.Status()
		return st.SafeLSN >= end-near && st.LagBytes < near
	}, "busy database, idle outbox: status %+v, WAL end %s", &st, end)

	// Never beyond what the source was told: the slot's confirmed position
	// follows the reported one.
	r2.stop(t)
	var confirmed string
	if err := e.pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	if c, _ := cdc.ParseLSN(confirmed); st.SafeLSN > c {
		t.Errorf("status reported %s as safe, the slot confirmed only %s", st.SafeLSN, c)
	}
}
