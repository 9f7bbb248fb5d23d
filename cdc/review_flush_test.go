package cdc

import (
	"context"
	"testing"
	"time"
)

// A consumer that is slow (the replicator waiting on an unreachable target)
// while the replication connection breaks: the batch the stream was trying
// to hand over in flush() must still reach the consumer.
func TestReview_FlushKeepsBatchWhenConnectionFails(t *testing.T) {
	f := newFixture(t, pg)
	const txns, per = 10, 300
	for i := 0; i < txns; i++ {
		f.insertTx(t, per, "t")
	}
	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot, Buffer: 256, StatusInterval: 100 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	// Let the stream fill the channel and block in flush().
	time.Sleep(1500 * time.Millisecond)
	// The connection breaks while the stream waits for the consumer.
	if _, err := f.conn.Exec(context.Background(),
		`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`, f.slot); err != nil {
		t.Fatal(err)
	}
	// flush() sends status every 100ms; the second write after the close fails.
	time.Sleep(1500 * time.Millisecond)
	evs, cs := r.collect(t, txns, true)
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[pos(e)] {
			t.Errorf("event %s delivered twice", pos(e))
		}
		seen[pos(e)] = true
	}
	if len(seen) != txns*per {
		t.Fatalf("got %d distinct events in %d commits, want %d: %d events lost", len(seen), len(cs), txns*per, txns*per-len(seen))
	}
}
