package replication

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/internal/testenv"
)

// An event whose message fits max_payload without the
// Nats-Expected-Last-Msg-Id header that sendMore adds, but not with it: it
// must be either forwarded or dead-lettered, and the events after it must
// follow.
func TestReview_MaxPayloadWithChainHeader(t *testing.T) {
	ctx := t.Context()
	const maxPayload = 8 << 10
	n := testenv.StartNATS(t, testenv.NATSOptions{MaxPayload: maxPayload})
	e := newEnv(t, pg, n)
	ins := func(id, aggID, payload string) {
		t.Helper()
		_, err := e.pool.Exec(ctx, `INSERT INTO qx_outbox (event_id, tenant_id, aggregate_type, aggregate_id, event_type, payload)
			VALUES ($1, 't', 'order', $2, 'x', $3::jsonb)`, id, aggID, payload)
		if err != nil {
			t.Fatal(err)
		}
	}
	ins("00000000-0000-0000-0000-000000000001", "first", `{"n": 1}`)

	// Size the second event so that its message is 20 bytes under max_payload
	// as the replicator measures it at enqueue time.
	var lsnText string
	if err := e.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsnText); err != nil {
		t.Fatal(err)
	}
	lsn, _ := cdc.ParseLSN(lsnText)
	tpl, _ := parseSubjectTemplate(DefaultSubjectTemplate)
	b := newBuilder(source, tpl, &e.mapping)
	const bigID = "00000000-0000-0000-0000-000000000002"
	size := func(pad int) int {
		ev := &cdc.Event{CommitLSN: lsn, Index: 0}
		ev.Values[cdc.FieldEventID] = []byte(bigID)
		ev.Values[cdc.FieldTenantID] = []byte("t")
		ev.Values[cdc.FieldAggregateType] = []byte("order")
		ev.Values[cdc.FieldAggregateID] = []byte("big")
		ev.Values[cdc.FieldEventType] = []byte("x")
		ev.Values[cdc.FieldPayload] = []byte(`{"pad": "` + strings.Repeat("x", pad) + `"}`)
		ev.Values[cdc.FieldHeaders] = []byte(`{}`)
		msg, _, _, err := b.build(ev)
		if err != nil {
			t.Fatal(err)
		}
		return msgSize(msg)
	}
	pad := maxPayload - size(0) - 20
	t.Logf("message size at enqueue %d of max_payload %d; the chain header adds %d",
		size(pad), maxPayload, len(HeaderExpectedLastID)+2+len(source+":00000000-0000-0000-0000-000000000001")+2)
	ins(bigID, "big", `{"pad": "`+strings.Repeat("x", pad)+`"}`)
	ins("00000000-0000-0000-0000-000000000003", "after", `{"n": 3}`)

	r := e.start(t, options{})
	waitStream(t, n.URL(), stream, 1, 20*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var dl int
		if err := e.pool.QueryRow(context.Background(), "SELECT count(*) FROM qx_replication_dead_letters").Scan(&dl); err != nil {
			t.Fatal(err)
		}
		got := len(readStream(t, n.URL(), stream).pos)
		if got+dl == 3 {
			r.stop(t)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	got := readStream(t, n.URL(), stream)
	t.Fatalf("after 15s the stream holds %d of 3 events and nothing was dead-lettered; retries %v: replication is stuck on the big event",
		len(got.pos), counter(t, r, "qx_replication_retries_total"))
}
