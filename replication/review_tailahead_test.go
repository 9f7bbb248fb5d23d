package replication

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qx-platform/regions/internal/testenv"
)

// The target's tail names a source position beyond anything the source
// database has written (the source was restored to an earlier point, or a
// standby without the last transactions was promoted): every new event at
// a lower LSN is skipped as "held by the target", silently.
func TestReview_TailAheadOfSource(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := ensureStream(ctx, js, stream, StreamSubject(source), time.Minute); err != nil {
		t.Fatal(err)
	}
	// What the old history forwarded last.
	m := nats.NewMsg("qx.events." + source + ".order.x")
	m.Header.Set(HeaderMsgID, source+":old-history")
	m.Header.Set(HeaderSourceLSN, "FF/0:0")
	m.Data = []byte("{}")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	r := e.start(t, options{})
	e.insert(t, 3, 10)
	time.Sleep(5 * time.Second)
	select {
	case err := <-r.done:
		r.done = nil
		t.Logf("replicator stopped: %v", err)
		return
	default:
	}
	var lsn string
	e.pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
	got := readStream(t, n.URL(), stream)
	t.Fatalf("source WAL is at %s, target tail at FF/0: after 5s the stream holds %d messages (30 events written), no error; skipped silently",
		lsn, len(got.pos))
}
