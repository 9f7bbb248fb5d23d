package cdc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A partitioned outbox (e.g. by month, for cheap cleanup) streams like a
// plain one: the publication publishes its rows under the partitioned
// table's name. A publication that publishes the partitions instead is a
// clear error, not a stream that silently ignores every row.
func TestStream_PartitionedOutbox(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewDatabase(t)
	conn := connect(t, dsn)
	ddl := strings.Replace(OutboxSQL, "id             bigserial PRIMARY KEY,", "id             bigserial,", 1)
	ddl = strings.Replace(ddl, ");", ") PARTITION BY RANGE (created_at);", 1)
	for _, sql := range []string{ddl,
		"CREATE TABLE qx_outbox_old PARTITION OF qx_outbox FOR VALUES FROM ('2000-01-01') TO ('2026-01-01')",
		"CREATE TABLE qx_outbox_new PARTITION OF qx_outbox FOR VALUES FROM ('2026-01-01') TO ('2100-01-01')",
		"CREATE PUBLICATION by_partition FOR TABLE qx_outbox WITH (publish = 'insert')",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := EnsurePublication(ctx, conn, "by_partition", DefaultMapping()); !errors.Is(err, ErrPublication) ||
		!strings.Contains(err.Error(), "publish_via_partition_root") {
		t.Fatalf("publication of the partitions: %v, want ErrPublication naming publish_via_partition_root", err)
	}
	if err := EnsurePublication(ctx, conn, DefaultPublication, DefaultMapping()); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureSlot(ctx, conn, "qx_part_to_other", true); err != nil {
		t.Fatal(err)
	}
	r := startStream(t, Config{DSN: dsn, Slot: "qx_part_to_other"})
	f := &fixture{dsn: dsn, conn: conn}
	f.insertTx(t, 3, "t")
	if _, err := conn.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, created_at)
		VALUES ('t', 'order', 'old', 'created', '{}', '2020-05-01')`); err != nil {
		t.Fatal(err)
	}
	evs, _ := r.collect(t, 2, true)
	if len(evs) != 4 {
		t.Fatalf("got %d events from both partitions, want 4", len(evs))
	}
	if got := string(evs[3].Values[FieldAggregateID]); got != "old" {
		t.Fatalf("last event's aggregate id %q, want old", got)
	}
}

// A stream whose publication does not carry the outbox stops at start with
// ErrPublication instead of streaming nothing.
func TestStream_PublicationChecked(t *testing.T) {
	f := newFixture(t, pg)
	if _, err := f.conn.Exec(context.Background(), "CREATE TABLE other (x int); CREATE PUBLICATION wrong FOR TABLE other"); err != nil {
		t.Fatal(err)
	}
	for _, pub := range []string{"wrong", "absent"} {
		r := startStream(t, Config{DSN: f.dsn, Slot: f.slot, Publication: pub})
		select {
		case err := <-r.errc:
			r.errc <- err
			if !errors.Is(err, ErrPublication) {
				t.Fatalf("publication %s: Run returned %v, want ErrPublication", pub, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("publication %s: the stream runs without its outbox", pub)
		}
	}
}
