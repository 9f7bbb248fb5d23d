package replication

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

// Two outbox rows with the same event_id and another event between them:
// the second is answered as a duplicate (not stored), yet the replicator
// chains the next message to it.
func TestReview_ReusedEventID(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	for _, row := range [][2]string{
		{"00000000-0000-0000-0000-00000000000a", "a"},
		{"00000000-0000-0000-0000-00000000000b", "m"},
		{"00000000-0000-0000-0000-00000000000a", "b (same event id as a)"},
		{"00000000-0000-0000-0000-00000000000c", "c"},
	} {
		if _, err := e.pool.Exec(ctx, `INSERT INTO qx_outbox (event_id, tenant_id, aggregate_type, aggregate_id, event_type, payload)
			VALUES ($1, 't', 'order', $2, 'x', '{}')`, row[0], row[1]); err != nil {
			t.Fatal(err)
		}
	}
	r := e.start(t, options{})
	select {
	case err := <-r.done:
		r.done = nil
		r.nc.Close()
		t.Fatalf("replicator stopped: %v (ErrTargetLost: %v)", err, errors.Is(err, ErrTargetLost))
	case <-time.After(5 * time.Second):
	}
	got := readStream(t, n.URL(), stream)
	if len(got.pos) != 3 || got.msg[2].Headers().Get(HeaderAggregateID) != "c" {
		t.Fatalf("stream holds %d messages, want a, m, c", len(got.pos))
	}
	var reason, aggID string
	if err := e.pool.QueryRow(ctx, "SELECT reason, row_data->>'aggregate_id' FROM qx_replication_dead_letters").Scan(&reason, &aggID); err != nil {
		t.Fatalf("dead letter of the reused id: %v", err)
	}
	if aggID != "b (same event id as a)" || !strings.Contains(reason, "already used") {
		t.Fatalf("dead letter: %q for %q", reason, aggID)
	}
}
