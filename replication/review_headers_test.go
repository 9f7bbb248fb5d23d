package replication

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/internal/testenv"
)

// Header names that the old check let through and nats.go refuses
// (ErrBadHeaderMsg, synchronously, on every resend): each row must become a
// bad_headers dead letter, and the rows after it must follow.
func TestReview_HeaderNamesNATSRefuses(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	_, err := e.pool.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES
		('t', 'order', 'first', 'x', '{}', '{"app-version": "1"}'),
		('t', 'order', 'slash', 'x', '{}', '{"app/version": "1"}'),
		('t', 'order', 'paren', 'x', '{}', '{"a(b)": "1"}'),
		('t', 'order', 'at', 'x', '{}', '{"user@host": "1"}'),
		('t', 'order', 'brace', 'x', '{}', '{"x{y}": "1"}'),
		('t', 'order', 'after', 'x', '{}', '{"traceparent": "00-abc-01"}')`)
	if err != nil {
		t.Fatal(err)
	}
	r := e.start(t, options{})
	var dead []deadLetterRow
	testenv.Eventually(t, 15*time.Second, func() bool {
		dead = e.deadLetters(t)
		return len(dead) == 4 && len(readStream(t, n.URL(), stream).msg) == 2
	}, "want 4 dead letters and 2 forwarded events (replication stuck on a header nats.go refuses?)")
	for i, want := range []string{"app/version", "a(b)", "user@host", "x{y}"} {
		if !strings.Contains(dead[i].reason, want) || !strings.Contains(dead[i].reason, ErrBadHeaders.Error()) {
			t.Errorf("dead letter %d: reason %q, want bad headers naming %q", i, dead[i].reason, want)
		}
	}
	if got, want := readStream(t, n.URL(), stream).aggIDs(), []string{"first", "after"}; !slices.Equal(got, want) {
		t.Errorf("stream: got %v, want %v", got, want)
	}
	if got := labelled(t, r, "qx_replication_dead_letters_total", "reason", "bad_headers"); got != 4 {
		t.Errorf("bad_headers dead letters: got %v, want 4", got)
	}
	if got := counter(t, r, "qx_replication_retries_total"); got != 0 {
		t.Errorf("retries: got %v, want 0 (predicted when built, not learnt from a refusal)", got)
	}
}

// FuzzValidHeaderName checks that the builder accepts exactly the header
// names nats.go sends: a name it refuses would make nats.go refuse the
// message on every resend.
func FuzzValidHeaderName(f *testing.F) {
	for c := 0; c < 256; c++ {
		f.Add(string([]byte{byte(c)}))
		f.Add("X-" + string([]byte{byte(c)}) + "-Y")
	}
	for _, s := range []string{"", "traceparent", "app/version", "é", "→", "\u200b", strings.Repeat("k", 300), "a b", "Nats-Msg-Id"} {
		f.Add(s)
	}
	n := testenv.StartNATS(f, testenv.NATSOptions{})
	nc, err := nats.Connect(n.URL())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(nc.Close)
	f.Fuzz(func(t *testing.T, k string) {
		err := nc.PublishMsg(&nats.Msg{Subject: "probe", Header: nats.Header{k: {"v"}}})
		if err != nil && !errors.Is(err, nats.ErrBadHeaderMsg) {
			t.Fatalf("publish with header %q: %v", k, err)
		}
		if got, natsOK := validHeaderName(k), err == nil; got != natsOK {
			t.Fatalf("header name %q: validHeaderName %v, nats.go accepts it: %v", k, got, natsOK)
		}
	})
}

// A message that nats.go refuses synchronously for what it is (here a
// header name, as if the build-time check had missed one) must become a
// dead letter in order, not an endless resend; the next event must name
// the last stored one as its predecessor.
func TestReview_SyncPublishRefusalDeadLetters(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	r := e.unstarted(t)
	if err := r.connectTarget(ctx); err != nil {
		t.Fatal(err)
	}
	queueRefusedBetween(r)

	r.sendMore()
	if r.recovering != nil {
		t.Fatalf("a message nats.go refuses for what it is made the replicator resend: %v", r.recovering)
	}
	settle(t, r)
	r.advance(ctx)
	if len(r.q) != 0 || r.safe != 0x1100 {
		t.Fatalf("queue holds %d entries, safe %s: want all popped and the transaction safe", len(r.q), r.safe)
	}
	dead := e.deadLetters(t)
	if len(dead) != 1 || dead[0].aggID != "refused" || !strings.Contains(dead[0].reason, ErrBadHeaders.Error()) {
		t.Fatalf("dead letters: %+v, want the refused event as bad headers", dead)
	}
	got := readStream(t, n.URL(), stream)
	if ids := got.aggIDs(); !slices.Equal(ids, []string{"first", "after"}) {
		t.Fatalf("stream: %v, want first, after", ids)
	}
	if prev := got.msg[1].Headers().Get(HeaderExpectedLastID); prev != source+":event-0" {
		t.Fatalf("after the dead letter the next event names %q as its predecessor, want %q", prev, source+":event-0")
	}
}

// A dead entry between two stored ones survives a reconciliation: the
// stream's tail (the event after it, chained past it) says nothing about
// it, so it must still be dead-lettered, not counted as stored.
func TestReview_DeadEntrySurvivesReconcile(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	r := e.unstarted(t)
	if err := r.connectTarget(ctx); err != nil {
		t.Fatal(err)
	}
	queueRefusedBetween(r)

	r.sendMore()
	// "first" is stored, but its ack is lost; "after" is stored and acked.
	first := r.q[0].fut
	select {
	case <-first.Ok():
	case <-time.After(10 * time.Second):
		t.Fatal("no ack for first")
	}
	r.resolved(nil, errors.New("ack lost"))
	settle(t, r)
	if r.recovering == nil {
		t.Fatal("a lost ack did not start a recovery")
	}
	r.reconcile = true // as the resend of "first" would be refused (wrong last id)
	if err := r.recover(ctx); err != nil {
		t.Fatal(err)
	}
	r.advance(ctx)
	dead := e.deadLetters(t)
	if len(dead) != 1 || dead[0].aggID != "refused" {
		t.Fatalf("dead letters: %+v, want the refused event (it is in neither the stream nor the dead letters)", dead)
	}
	if ids := readStream(t, n.URL(), stream).aggIDs(); !slices.Equal(ids, []string{"first", "after"}) {
		t.Fatalf("stream: %v, want first, after", ids)
	}
}

// queueRefusedBetween queues one transaction of three events, "first",
// "refused" (a header name nats.go refuses) and "after", as the
// replicator's enqueue would (the build-time check aside).
func queueRefusedBetween(r *Replicator) {
	for i, name := range []string{"first", "refused", "after"} {
		pos := Position{LSN: cdc.LSN(0x1000), Index: i}
		id := fmt.Sprintf("%s:event-%d", source, i)
		msg := nats.NewMsg("qx.events." + source + ".order.x")
		msg.Header.Set(HeaderMsgID, id)
		msg.Header.Set(HeaderSourceLSN, pos.String())
		msg.Header.Set(HeaderAggregateID, name)
		if name == "refused" {
			msg.Header["app/version"] = []string{"1"}
		}
		ev := &cdc.Event{CommitLSN: pos.LSN, Index: i}
		ev.Values[cdc.FieldAggregateID] = []byte(name)
		r.q = append(r.q, &entry{pos: pos, msg: msg, id: id, ev: ev})
	}
	r.q = append(r.q, &entry{commit: &cdc.Commit{CommitLSN: 0x1000, EndLSN: 0x1100}, pos: Position{LSN: 0x1000, Index: 1 << 30}})
}

// settle resolves every in-flight publish, in order; each must be acked.
func settle(tb testing.TB, r *Replicator) {
	tb.Helper()
	for r.wait < r.next {
		f := r.q[r.wait].fut
		select {
		case ack := <-f.Ok():
			r.resolved(ack, nil)
		case err := <-f.Err():
			tb.Fatalf("publish of %s: %v", r.q[r.wait].id, err)
		case <-time.After(10 * time.Second):
			tb.Fatal("no ack")
		}
	}
}
