package cdc

import (
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

// A consumer that cannot store what it got (the target is down) must not
// keep a fast shutdown of the source waiting: the walsender exits only once
// the client confirms everything it sent, and the stream keeps it alive with
// status updates that never get there.
func TestReview_FastShutdownWithUnackedEvents(t *testing.T) {
	p, err := testenv.StartPostgres(testenv.PGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	f := newFixture(t, p)
	f.insertTx(t, 3, "t")
	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot, StatusInterval: time.Second,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	r.collect(t, 1, false) // delivered, never declared safe
	stopped := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		p.StopFast() // SIGINT; the harness SIGKILLs after 60 s
		stopped <- time.Since(start)
	}()
	select {
	case d := <-stopped:
		t.Logf("fast shutdown took %v", d)
	case <-time.After(20 * time.Second):
		r.stop() // the stream goes away: now Postgres can finish
		d := <-stopped
		t.Fatalf("fast shutdown of the source still waiting after 20s for the stream to confirm unacked data (finished %v after start, once the stream stopped)", d)
	}
}
