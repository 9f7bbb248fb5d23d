package replication

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/internal/testenv"
)

func pgxConn(ctx context.Context, dsn string) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }

const stream = "QX_EVENTS_US_EAST_1"

func TestReplicator_MessageFormat(t *testing.T) {
	t.Run("default mapping", func(t *testing.T) {
		n := testenv.StartNATS(t, testenv.NATSOptions{})
		e := newEnv(t, pg, n)
		c1, ids1 := e.commitTxn(t, `INSERT INTO qx_outbox (event_id, tenant_id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES
			('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'tenant 1', 'order', 'o-1', 'order.created', '{"total": 12}',
			 '{"traceparent": "00-abc-01", "Qx-Tenant-Id": "forged", "nats-msg-id": "forged", "n": 5}') RETURNING event_id::text`)
		row := `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload) VALUES ('t', 'order', 'o-2', 'x', '{}') RETURNING event_id::text`
		c2, ids2 := e.commitTxn(t, row, row, row)
		e.start(t, options{})
		waitStream(t, n.URL(), stream, 4, 20*time.Second)
		got := readStream(t, n.URL(), stream)
		m := got.msg[0]
		if want := "qx.events.us-east-1.order.order.created"; m.Subject() != want {
			t.Errorf("subject: got %q, want %q", m.Subject(), want)
		}
		if string(m.Data()) != `{"total": 12}` {
			t.Errorf("body: got %q", m.Data())
		}
		h := m.Headers()
		for k, want := range map[string]string{
			HeaderMsgID:         "us-east-1:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
			HeaderSourceRegion:  "us-east-1",
			HeaderEventID:       "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
			HeaderTenantID:      "tenant 1",
			HeaderEventType:     "order.created",
			HeaderAggregateType: "order",
			HeaderAggregateID:   "o-1",
			"traceparent":       "00-abc-01",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("header %s: got %q, want %q", k, got, want)
			}
		}
		if h.Get("n") != "" {
			t.Errorf("non-string header entry became a header: %q", h.Get("n"))
		}
		// Qx-Source-LSN is the transaction's commit LSN (as Postgres's WAL
		// has it) and the event's index in it; ids are the event ids.
		wantPos := []Position{{c1, 0}, {c2, 0}, {c2, 1}, {c2, 2}}
		wantIDs := append(ids1, ids2...)
		for i, m := range got.msg {
			if got, want := m.Headers().Get(HeaderSourceLSN), wantPos[i].String(); got != want {
				t.Errorf("message %d: %s %q, want %q", i, HeaderSourceLSN, got, want)
			}
			if got, want := m.Headers().Get(HeaderMsgID), source+":"+wantIDs[i]; got != want {
				t.Errorf("message %d: %s %q, want %q", i, HeaderMsgID, got, want)
			}
		}
		checkChain(t, got)
	})

	t.Run("no event_id in the mapping, custom subject template", func(t *testing.T) {
		n := testenv.StartNATS(t, testenv.NATSOptions{})
		e := newEnv(t, pg, n)
		e.mapping.Columns[cdc.FieldEventID] = ""
		c, _ := e.commitTxn(t, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload) VALUES
			('tenant 1', 'order', 'o.1', 'order.created', '{}'),
			('t2', 'order', 'o-2', 'x', '{}')`)
		e.start(t, options{cfg: Config{SubjectTemplate: "qx.events.{source}.{tenant_id}.{aggregate_id}.{event_type}"}})
		waitStream(t, n.URL(), stream, 2, 20*time.Second)
		got := readStream(t, n.URL(), stream)
		for i, want := range []struct{ subject, id string }{
			{"qx.events.us-east-1.tenant_1.o_1.order.created", source + ":" + Position{c, 0}.String()},
			{"qx.events.us-east-1.t2.o-2.x", source + ":" + Position{c, 1}.String()},
		} {
			m := got.msg[i]
			if m.Subject() != want.subject {
				t.Errorf("message %d: subject %q, want %q", i, m.Subject(), want.subject)
			}
			h := m.Headers()
			if h.Get(HeaderMsgID) != want.id {
				t.Errorf("message %d: %s %q, want the fallback %q", i, HeaderMsgID, h.Get(HeaderMsgID), want.id)
			}
			if got, want := source+":"+h.Get(HeaderSourceLSN), want.id; got != want {
				t.Errorf("message %d: %s %q, want it to be the id's position %q", i, HeaderSourceLSN, got, want)
			}
			if v, ok := h[HeaderEventID]; ok {
				t.Errorf("message %d: %s %q without an event_id column", i, HeaderEventID, v)
			}
		}
		checkChain(t, got)
	})
}

// checkChain checks the chaining headers of the stored messages: the first
// expects the (empty) stream's last sequence, each next one names its
// predecessor's id.
func checkChain(tb testing.TB, got streamed) {
	tb.Helper()
	for i, m := range got.msg {
		h := m.Headers()
		if i == 0 {
			if seq, id := h.Get(HeaderExpectedLastSeq), h.Get(HeaderExpectedLastID); seq != "0" || id != "" {
				tb.Errorf("first message: %s %q, %s %q; want 0 and none", HeaderExpectedLastSeq, seq, HeaderExpectedLastID, id)
			}
			continue
		}
		prev := got.msg[i-1].Headers().Get(HeaderMsgID)
		if got := h.Get(HeaderExpectedLastID); got != prev {
			tb.Errorf("message %d: %s %q, want its predecessor %q", i, HeaderExpectedLastID, got, prev)
		}
		if _, ok := h[HeaderExpectedLastSeq]; ok {
			tb.Errorf("message %d: carries %s too", i, HeaderExpectedLastSeq)
		}
	}
}

func TestSubjectTokens(t *testing.T) {
	tpl, err := parseSubjectTemplate(DefaultSubjectTemplate)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, tc := range []struct{ aggType, evType, want string }{
		{"order", "created", "qx.events.eu.order.created"},
		{"a.b", "x.y", "qx.events.eu.a_b.x.y"},
		{"with space", "*", "qx.events.eu.with_space._"},
		{"", "", "qx.events.eu._._"},
		{">", "a..b.", "qx.events.eu._.a._.b._"},
		{"tab\there", ".lead", "qx.events.eu.tab_here._.lead"},
	} {
		ev := &cdc.Event{}
		if tc.aggType != "" {
			ev.Values[cdc.FieldAggregateType] = []byte(tc.aggType)
		}
		if tc.evType != "" {
			ev.Values[cdc.FieldEventType] = []byte(tc.evType)
		}
		if got := tpl.render(&sb, "eu", ev); got != tc.want {
			t.Errorf("(%q, %q): got %q, want %q", tc.aggType, tc.evType, got, tc.want)
		}
	}
	for _, bad := range []string{"qx.events.{source}.{nope}", "qx.events.{source", "qx events.{source}.x", "qx.events..{source}"} {
		if _, err := parseSubjectTemplate(bad); err == nil {
			t.Errorf("template %q accepted", bad)
		}
	}
}

func TestReplicator_ExactlyOnceInOrder(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	e.insert(t, 50, 100)
	r := e.start(t, options{})
	e.insert(t, 50, 100)
	waitStream(t, n.URL(), stream, 10_000, 60*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	readStream(t, n.URL(), stream).check(t, e.outboxCount(t))
	// Restarting replicates nothing twice.
	r2 := e.start(t, options{})
	e.insert(t, 1, 10)
	waitStream(t, n.URL(), stream, 10_010, 30*time.Second)
	r2.stop(t)
	readStream(t, n.URL(), stream).check(t, e.outboxCount(t))
}

func TestReplicator_NATSRestart(t *testing.T) {
	n := testenv.StartNATSProcess(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	r := e.start(t, options{})
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.insert(t, 1, 50)
		}
	}()
	for i := 0; i < 2; i++ {
		waitStream(t, n.URL(), stream, 1000*(i+1), 60*time.Second)
		if i == 0 {
			n.Kill()
		} else {
			n.Stop()
		}
		time.Sleep(300 * time.Millisecond) // an outage the replicator must ride out
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-writerDone
	want := e.outboxCount(t)
	waitStream(t, n.URL(), stream, want, 60*time.Second)
	r.stop(t)
	readStream(t, n.URL(), stream).check(t, want)
}

func TestReplicator_PostgresRestart(t *testing.T) {
	p, err := testenv.StartPostgres(testenv.PGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, p, n)
	e.insert(t, 20, 100)
	r := e.start(t, options{})
	waitStream(t, n.URL(), stream, 1000, 30*time.Second)
	if err := p.StopFast(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	e.pool.Reset()
	e.insert(t, 10, 100)
	if err := p.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	e.pool.Reset()
	e.insert(t, 10, 100)
	want := e.outboxCount(t)
	waitStream(t, n.URL(), stream, want, 60*time.Second)
	r.stop(t)
	readStream(t, n.URL(), stream).check(t, want)
}

// A replicator that forwarded events but never confirmed or checkpointed
// them (as if SIGKILLed), restarted after the duplicate window passed: the
// whole history replays, the stream's dedup cannot help, the tail must.
func TestReplicator_BeyondDuplicateWindow(t *testing.T) {
	const window = time.Second
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	e.insert(t, 10, 100)
	r := e.start(t, options{cfg: Config{DuplicateWindow: window}, store: failingStore{},
		wrap: func(s *cdc.Stream) Source { return unconfirmed{s} }})
	waitStream(t, n.URL(), stream, 1000, 30*time.Second)
	r.stop(t)
	first := readStream(t, n.URL(), stream)
	first.check(t, 1000)
	if c := e.slotConfirmed(t); c >= first.pos[0].LSN {
		t.Fatalf("slot confirmed %s, at or past the first event %s: nothing would replay", c, first.pos[0])
	}

	// Let the duplicate window pass, as the server keeps it: from the
	// newest message's store time.
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	last := s.CachedInfo().State.LastTime
	testenv.Eventually(t, 10*time.Second, func() bool { return time.Since(last) > 2*window },
		"duplicate window of the last message")

	e.insert(t, 5, 100)
	end := e.walLSN(t)
	r2 := e.start(t, options{cfg: Config{DuplicateWindow: window}})
	// Every transaction up to end handled (replayed ones skipped, new
	// ones stored), so no late duplicate can still come.
	testenv.Eventually(t, 30*time.Second, func() bool { return r2.r.Status().SafeLSN >= end },
		"the restarted replicator did not get past %s", end)
	r2.stop(t)
	readStream(t, n.URL(), stream).check(t, 1500)
	if dead := e.deadLetters(t); len(dead) != 0 {
		t.Fatalf("%d dead letters, want none (first: %+v)", len(dead), dead[0])
	}
}

func TestReplicator_DeadLetters(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{MaxPayload: 8 << 10})
	e := newEnv(t, pg, n)
	// A table without the NOT NULL constraints of qx_outbox, so bad rows can exist.
	if _, err := e.pool.Exec(ctx, `ALTER TABLE qx_outbox ALTER tenant_id DROP NOT NULL, ALTER headers DROP NOT NULL`); err != nil {
		t.Fatal(err)
	}
	_, err := e.pool.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES
		('t', 'order', '1', 'ok', '{"n": 1}', '{}'),
		('t', 'order', '2', 'big', jsonb_build_object('pad', repeat('x', 20000)), '{}'),
		('t', 'order', '3', 'ok', '{"n": 3}', '[1, 2]'),
		('t', 'order', '4', 'ok', '{"n": 4}', '{"bad name": "x"}'),
		(NULL, 'order', '5', 'ok', '{"n": 5}', '{}'),
		('t', 'order', '6', 'ok', '{"n": 6}', '{}')`)
	if err != nil {
		t.Fatal(err)
	}
	r := e.start(t, options{})
	waitStream(t, n.URL(), stream, 2, 30*time.Second)
	var rows []struct {
		reason string
		row    map[string]*string
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		rs, _ := e.pool.Query(ctx, "SELECT reason, row_data FROM qx_replication_dead_letters ORDER BY commit_lsn, idx")
		rows = rows[:0]
		for rs.Next() {
			var r struct {
				reason string
				row    map[string]*string
			}
			rs.Scan(&r.reason, &r.row)
			rows = append(rows, r)
		}
		return len(rows) == 4
	})
	wantReasons := []string{"max_payload", "not a JSON object", `header "bad name"`, "NULL: tenant_id"}
	for i, w := range wantReasons {
		if !strings.Contains(rows[i].reason, w) {
			t.Errorf("dead letter %d: reason %q, want it to say %q", i, rows[i].reason, w)
		}
	}
	if rows[3].row["tenant_id"] != nil || rows[3].row["aggregate_id"] == nil || *rows[3].row["aggregate_id"] != "5" {
		t.Errorf("raw row of the NULL tenant: %v", rows[3].row)
	}
	time.Sleep(200 * time.Millisecond)
	got := readStream(t, n.URL(), stream)
	if len(got.msg) != 2 || got.msg[0].Headers().Get(HeaderAggregateID) != "1" || got.msg[1].Headers().Get(HeaderAggregateID) != "6" {
		t.Fatalf("target holds %d messages, want the two good ones", len(got.msg))
	}
	r.stop(t)
	if c := counter(t, r, "qx_replication_dead_letters_total"); c != 4 {
		t.Errorf("dead letter metric: got %v, want 4", c)
	}
}

func TestReplicator_LoopGuard(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	_, err := e.pool.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES
		('t', 'order', 'echo', 'x', '{}', '{"qx-origin-region": "eu-west-1"}'),
		('t', 'order', 'own', 'x', '{}', '{"Qx-Origin-Region": "us-east-1"}'),
		('t', 'order', 'plain', 'x', '{}', '{}')`)
	if err != nil {
		t.Fatal(err)
	}
	r := e.start(t, options{})
	waitStream(t, n.URL(), stream, 2, 30*time.Second)
	r.stop(t)
	got := readStream(t, n.URL(), stream)
	if len(got.msg) != 2 || got.msg[0].Headers().Get(HeaderAggregateID) != "own" {
		t.Fatalf("got %d messages; the echo must be skipped", len(got.msg))
	}
	if c := counter(t, r, "qx_replication_skipped_total"); c != 1 {
		t.Errorf("skipped metric: got %v, want 1", c)
	}
}

func TestReplicator_ShutdownDrains(t *testing.T) {
	ctx := t.Context()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	e.insert(t, 100, 200)
	r := e.start(t, options{})
	waitStream(t, n.URL(), stream, 2000, 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run returned %v on shutdown, want nil", err)
	}
	got := readStream(t, n.URL(), stream)
	var saved string
	if err := e.pool.QueryRow(ctx, "SELECT lsn::text FROM qx_replication_checkpoints WHERE name = $1", e.slot).Scan(&saved); err != nil {
		t.Fatal(err)
	}
	savedLSN, _ := cdc.ParseLSN(saved)
	perTxn := map[cdc.LSN]int{}
	var lastFull cdc.LSN
	for _, p := range got.pos {
		if perTxn[p.LSN]++; perTxn[p.LSN] == 200 {
			lastFull = p.LSN
		}
	}
	if savedLSN <= lastFull {
		t.Fatalf("checkpoint %s does not cover the last fully stored transaction %s", savedLSN, lastFull)
	}
	var confirmed string
	if err := e.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	if c, _ := cdc.ParseLSN(confirmed); c != savedLSN {
		t.Fatalf("slot confirmed %s, checkpoint %s: shutdown must confirm what it saved", confirmed, saved)
	}
	if st := r.r.Status(); st.InFlight != 0 {
		t.Fatalf("in flight after shutdown: %d", st.InFlight)
	}
	// The slot was told the same position, so a restart resends nothing.
	r2 := e.start(t, options{})
	want := e.outboxCount(t)
	waitStream(t, n.URL(), stream, want, 60*time.Second)
	r2.stop(t)
	readStream(t, n.URL(), stream).check(t, want)
}

func counter(tb testing.TB, r *runner, name string) float64 {
	tb.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
		}
	}
	return sum
}
