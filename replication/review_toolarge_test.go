package replication

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qx-platform/regions/internal/testenv"
)

// Messages under max_payload that the stream refuses for good: a header
// block over JetStream's 64 KiB (JSStreamHeaderExceedsMaximum) and a
// message over the stream's own max_msg_size
// (JSStreamMessageExceedsMaximum). Each must become a too_large dead letter,
// and the rows after it must follow.
func TestReview_TooLargeForStream(t *testing.T) {
	rows := func(tb testing.TB, e *env, big string) {
		tb.Helper()
		_, err := e.pool.Exec(context.Background(), `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES
			('t', 'order', 'first', 'x', '{}', '{}')`)
		if err != nil {
			tb.Fatal(err)
		}
		_, err = e.pool.Exec(context.Background(), `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES
			('t', 'order', 'big', 'x', `+big+`),
			('t', 'order', 'after', 'x', '{}', '{}')`)
		if err != nil {
			tb.Fatal(err)
		}
	}
	// want checks the outcome: big dead-lettered as too large, saying why.
	want := func(tb testing.TB, e *env, n *testenv.NATS, r *runner, why string) {
		tb.Helper()
		var dead []deadLetterRow
		testenv.Eventually(tb, 15*time.Second, func() bool {
			dead = e.deadLetters(tb)
			return len(dead) == 1 && len(readStream(tb, n.URL(), stream).msg) == 2
		}, "want the big event dead-lettered and the two others forwarded")
		if dead[0].aggID != "big" || !strings.Contains(dead[0].reason, ErrTooLarge.Error()) || !strings.Contains(dead[0].reason, why) {
			tb.Errorf("dead letter %+v, want the big event as too large, saying %q", dead[0], why)
		}
		if got := labelled(tb, r, "qx_replication_dead_letters_total", "reason", "too_large"); got != 1 {
			tb.Errorf("too_large dead letters: got %v, want 1", got)
		}
		if got := readStream(tb, n.URL(), stream).aggIDs(); !slices.Equal(got, []string{"first", "after"}) {
			tb.Errorf("stream: got %v, want first, after", got)
		}
	}
	createStream := func(tb testing.TB, n *testenv.NATS, maxMsgSize int32) jetstream.JetStream {
		tb.Helper()
		nc, err := nats.Connect(n.URL())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: stream, Subjects: []string{StreamSubject(source)},
			Storage: jetstream.FileStorage, MaxMsgSize: maxMsgSize})
		if err != nil {
			tb.Fatal(err)
		}
		return js
	}

	t.Run("header block over 64 KiB", func(t *testing.T) {
		n := testenv.StartNATS(t, testenv.NATSOptions{}) // max_payload 1 MiB
		e := newEnv(t, pg, n)
		rows(t, e, `'{}', jsonb_build_object('big', repeat('x', 70000))`)
		r := e.start(t, options{})
		want(t, e, n, r, "header")
		if got := counter(t, r, "qx_replication_retries_total"); got != 0 {
			t.Errorf("retries: got %v, want 0 (predicted at enqueue)", got)
		}
	})
	t.Run("over the stream's max_msg_size", func(t *testing.T) {
		n := testenv.StartNATS(t, testenv.NATSOptions{})
		e := newEnv(t, pg, n)
		createStream(t, n, 4096)
		rows(t, e, `jsonb_build_object('pad', repeat('x', 8000)), '{}'`)
		r := e.start(t, options{})
		want(t, e, n, r, "max_msg_size")
		if got := counter(t, r, "qx_replication_retries_total"); got != 0 {
			t.Errorf("retries: got %v, want 0 (predicted at enqueue)", got)
		}
	})
	t.Run("max_msg_size lowered while replicating", func(t *testing.T) {
		n := testenv.StartNATS(t, testenv.NATSOptions{})
		e := newEnv(t, pg, n)
		js := createStream(t, n, 0)
		r := e.start(t, options{})
		testenv.Eventually(t, 10*time.Second, func() bool { return r.r.Status().SourceConnected },
			"the replicator did not start streaming")
		s, err := js.Stream(t.Context(), stream)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.MaxMsgSize = 4096
		if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
		rows(t, e, `jsonb_build_object('pad', repeat('x', 8000)), '{}'`)
		want(t, e, n, r, "message size exceeds maximum")
	})
}
