package replication

import (
	"context"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

// An event_type longer than the server's max_control_line (4 KiB) makes a
// PUB line the server refuses by closing the connection: the event must be
// dead-lettered (or forwarded), and the next one must follow.
func TestReview_LongSubject(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	_, err := e.pool.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload) VALUES
		('t', 'order', 'long', repeat('x', 5000), '{}'),
		('t', 'order', 'after', 'x', '{}')`)
	if err != nil {
		t.Fatal(err)
	}
	r := e.start(t, options{})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var dl int
		if err := e.pool.QueryRow(context.Background(), "SELECT count(*) FROM qx_replication_dead_letters").Scan(&dl); err != nil {
			t.Fatal(err)
		}
		if len(readStream(t, n.URL(), stream).pos)+dl == 2 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("after 15s: stream holds %d of 2 events, nothing dead-lettered; retries %v",
		len(readStream(t, n.URL(), stream).pos), counter(t, r, "qx_replication_retries_total"))
}
