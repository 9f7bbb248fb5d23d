package replication

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/internal/testenv"
)

// The fault suite's NATS SIGKILL: the server stored E1 but died before its
// ack went out, so E1's future failed; E2 and E3 reached the restarted
// server from nats.go's reconnect buffer and were acked. The resend from
// E1 is answered "duplicate" with E1's own sequence: that is E1
// itself, not an older message with a reused event id, and nothing may be
// dead-lettered.
func TestReview_ResendAfterLaterAcks(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	r := e.unstarted(t)
	if _, err := ensureStream(ctx, r.js, stream, StreamSubject(source), time.Minute); err != nil {
		t.Fatal(err)
	}
	// E0 came before, acked; E1 to E3 are the events of this test.
	var prev string
	for i := 0; i <= 3; i++ {
		if i == 1 {
			if err := r.connectTarget(ctx); err != nil {
				t.Fatal(err)
			}
			if r.ackedID != prev {
				t.Fatalf("tail read: %q, want %q", r.ackedID, prev)
			}
		}
		id := fmt.Sprintf("%s:event-%d", source, i)
		pos := Position{LSN: cdc.LSN(0x1000 * i), Index: 0}
		msg := nats.NewMsg(fmt.Sprintf("qx.events.%s.order.created", source))
		msg.Header.Set(HeaderMsgID, id)
		msg.Header.Set(HeaderSourceLSN, pos.String())
		msg.Data = []byte(fmt.Sprintf(`{"n":%d}`, i))
		if i > 0 {
			r.q = append(r.q, &entry{pos: pos, msg: msg, id: id, ev: &cdc.Event{CommitLSN: pos.LSN}})
		}
		stored := nats.NewMsg(msg.Subject)
		for k, v := range msg.Header {
			stored.Header[k] = v
		}
		stored.Data = msg.Data
		if prev != "" {
			stored.Header.Set(HeaderExpectedLastID, prev)
		}
		if _, err := r.js.PublishMsg(ctx, stored); err != nil {
			t.Fatal(err)
		}
		prev = id
	}

	// The first attempt as the replicator saw it (the server stored E0 to
	// E3 at sequences 1 to 4): E1 timed out, E2 and E3 were acked.
	r.next = 3
	r.resolved(nil, jetstream.ErrAsyncPublishTimeout)
	r.resolved(&jetstream.PubAck{Stream: stream, Sequence: 3}, nil)
	r.resolved(&jetstream.PubAck{Stream: stream, Sequence: 4}, nil)
	r.advance(ctx)
	if r.recovering == nil || r.head != 0 {
		t.Fatalf("after a failed E1: recovering %v, head %d", r.recovering, r.head)
	}
	if err := r.recover(ctx); err != nil {
		t.Fatal(err)
	}

	// The resend: every answer is a duplicate of the event itself.
	r.sendMore()
	for r.wait < r.next {
		f := r.q[r.wait].fut
		select {
		case ack := <-f.Ok():
			r.resolved(ack, nil)
		case err := <-f.Err():
			t.Fatalf("resend of %s: %v", r.q[r.wait].id, err)
		case <-time.After(10 * time.Second):
			t.Fatal("no ack for the resend")
		}
	}
	for i, en := range r.q {
		if en.reusedSeq != 0 {
			t.Errorf("E%d taken for a reused event id (duplicate of sequence %d)", i+1, en.reusedSeq)
		}
	}
	r.advance(ctx)
	if len(r.q) != 0 || r.ackedID != prev {
		t.Fatalf("after the resend the newest acked event is %q, want %q", r.ackedID, prev)
	}
	var dead int
	if err := e.pool.QueryRow(context.Background(), "SELECT count(*) FROM qx_replication_dead_letters").Scan(&dead); err != nil {
		t.Fatal(err)
	}
	if dead != 0 {
		t.Fatalf("%d dead letters, want none", dead)
	}
	if errors.Is(r.recovering, ErrReusedEventID) {
		t.Fatal(r.recovering)
	}
}
