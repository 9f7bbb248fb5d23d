package cdc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

func TestStream_Decoding(t *testing.T) {
	ctx := t.Context()
	dsn := pg.NewDatabase(t)
	conn := connect(t, dsn)
	_, err := conn.Exec(ctx, `CREATE TABLE app_events (
		seq bigint PRIMARY KEY, uid uuid, tenant text, kind text, body jsonb, meta jsonb,
		at timestamptz, origin text, agg_type text, agg_id bigint, ignored text)`)
	if err != nil {
		t.Fatal(err)
	}
	m := Mapping{Table: "app_events"}
	m.Columns[FieldEventID] = "uid"
	m.Columns[FieldTenantID] = "tenant"
	m.Columns[FieldEventType] = "kind"
	m.Columns[FieldPayload] = "body"
	m.Columns[FieldHeaders] = "meta"
	m.Columns[FieldCreatedAt] = "at"
	m.Columns[FieldOrigin] = "origin"
	m.Columns[FieldAggregateType] = "agg_type"
	m.Columns[FieldAggregateID] = "agg_id"
	if err := CheckPrerequisites(ctx, conn, m, "qx_a_to_b"); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePublication(ctx, conn, "app_pub", m); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureSlot(ctx, conn, "qx_a_to_b", true); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, `INSERT INTO app_events VALUES
		(1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'tenant-1', 'created', '{"b": [1, 2], "a": "x"}',
		 '{"traceparent": "00-abc-def-01"}', '2026-12-03 10:11:12.123456+02', 'eu-west-1', 'order', 9223372036854775807, 'zzz'),
		(2, NULL, NULL, NULL, '{}', NULL, NULL, NULL, NULL, NULL, NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	r := startStream(t, Config{DSN: dsn, Slot: "qx_a_to_b", Publication: "app_pub", Mapping: &m})
	evs, cs := r.collect(t, 1, true)
	if len(evs) != 2 || cs[0].Events != 2 {
		t.Fatalf("got %d events, commit says %d; want 2", len(evs), cs[0].Events)
	}
	e := evs[0]
	want := map[Field]string{
		FieldEventID: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", FieldTenantID: "tenant-1", FieldEventType: "created",
		FieldPayload: `{"a": "x", "b": [1, 2]}`, FieldHeaders: `{"traceparent": "00-abc-def-01"}`,
		FieldOrigin: "eu-west-1", FieldAggregateType: "order", FieldAggregateID: "9223372036854775807",
	}
	for f, w := range want {
		if got := e.String(f); got != w {
			t.Errorf("%s: got %q, want %q", f, got, w)
		}
	}
	at, err := e.CreatedAt()
	if err != nil || !at.Equal(time.Date(2026, 12, 3, 8, 11, 12, 123456000, time.UTC)) {
		t.Errorf("created_at: got %v, %v", at, err)
	}
	if e.CommitLSN != cs[0].CommitLSN || e.Index != 0 || evs[1].Index != 1 || e.Xid == 0 || e.CommitTime.IsZero() {
		t.Errorf("position: got %s xid %d time %v", pos(e), e.Xid, e.CommitTime)
	}
	for f := Field(0); f < NumFields; f++ {
		if f == FieldPayload {
			continue
		}
		if v, ok := evs[1].Value(f); ok {
			t.Errorf("NULL %s: got %q", f, v)
		}
	}
	if at, err := evs[1].CreatedAt(); err != nil || !at.IsZero() {
		t.Errorf("NULL created_at: got %v, %v", at, err)
	}
}

func TestStream_BytePayload(t *testing.T) {
	ctx := t.Context()
	dsn := pg.NewDatabase(t)
	conn := connect(t, dsn)
	if _, err := conn.Exec(ctx, `CREATE TABLE bin_outbox (id bigserial primary key, data bytea)`); err != nil {
		t.Fatal(err)
	}
	m := Mapping{Table: "bin_outbox"}
	m.Columns[FieldPayload] = "data"
	if err := EnsurePublication(ctx, conn, "bin_pub", m); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureSlot(ctx, conn, "qx_bin", true); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO bin_outbox (data) VALUES ('\x00ff10'::bytea)`); err != nil {
		t.Fatal(err)
	}
	r := startStream(t, Config{DSN: dsn, Slot: "qx_bin", Publication: "bin_pub", Mapping: &m})
	evs, _ := r.collect(t, 1, true)
	if got := evs[0].Values[FieldPayload]; string(got) != "\x00\xff\x10" {
		t.Fatalf("payload: got %x, want 00ff10", got)
	}
}

func TestStream_Order(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t, pg)
	// Interleaved transactions: b begins first but commits last.
	a, err := f.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other := connect(t, f.dsn)
	b, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ins := `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload) VALUES ($1, 'x', 'y', $2, '{}')`
	if _, err := b.Exec(ctx, ins, "t-b", "b1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, ins, "t-a", "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, ins, "t-b", "b2"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, ins, "t-a", "a2"); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// A rolled-back transaction yields nothing.
	rb, err := f.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rb.Exec(ctx, ins, "t-r", "r1"); err != nil {
		t.Fatal(err)
	}
	rb.Rollback(ctx)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	f.insertTx(t, 100, "t-c")

	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot})
	evs, cs := r.collect(t, 3, true)
	var got []string
	for _, e := range evs[:4] {
		got = append(got, e.String(FieldEventType))
	}
	if strings.Join(got, ",") != "a1,a2,b1,b2" {
		t.Fatalf("order: got %v, want a1,a2,b1,b2", got)
	}
	if len(evs) != 104 || cs[2].Events != 100 {
		t.Fatalf("got %d events, want 104", len(evs))
	}
	for i := 1; i < len(cs); i++ {
		if cs[i].CommitLSN <= cs[i-1].CommitLSN || cs[i].EndLSN <= cs[i].CommitLSN {
			t.Fatalf("commits out of order: %+v", cs)
		}
	}
	r.expectQuiet(t, 300*time.Millisecond)
}

func TestStream_RestartFromAck(t *testing.T) {
	f := newFixture(t, pg)
	for i := 0; i < 5; i++ {
		f.insertTx(t, 10, "t")
	}
	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot})
	evs, cs := r.collect(t, 5, false)
	// The consumer stored the first two transactions only.
	r.s.SetSafe(cs[1].EndLSN)
	testenv.Eventually(t, 5*time.Second, func() bool { return r.s.Confirmed() == cs[1].EndLSN })
	r.stop()
	if got := r.s.Confirmed(); got != cs[1].EndLSN {
		t.Fatalf("confirmed %s, want %s (never beyond safe)", got, cs[1].EndLSN)
	}
	info, _, err := ReadSlot(t.Context(), f.conn, f.slot)
	if err != nil || info.ConfirmedFlushLSN != cs[1].EndLSN {
		t.Fatalf("slot confirmed_flush_lsn %s (%v), want %s", info.ConfirmedFlushLSN, err, cs[1].EndLSN)
	}

	r2 := startStream(t, Config{DSN: f.dsn, Slot: f.slot, StartLSN: cs[1].EndLSN})
	evs2, cs2 := r2.collect(t, 3, true)
	if len(evs2) != 30 {
		t.Fatalf("re-delivered %d events, want 30", len(evs2))
	}
	for i, e := range evs2 {
		if pos(e) != pos(evs[20+i]) {
			t.Fatalf("event %d: position %s, was %s", i, pos(e), pos(evs[20+i]))
		}
	}
	if cs2[0].EndLSN != cs[2].EndLSN {
		t.Fatalf("commit end %s, was %s", cs2[0].EndLSN, cs[2].EndLSN)
	}
	r2.expectQuiet(t, 300*time.Millisecond)
}

func TestStream_PostgresRestart(t *testing.T) {
	p, err := testenv.StartPostgres(testenv.PGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	f := newFixture(t, p)
	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})

	var wg sync.WaitGroup
	stopWriter := make(chan struct{})
	var written int
	wg.Add(1)
	go func() { // a writer that keeps going across the restarts
		defer wg.Done()
		for {
			select {
			case <-stopWriter:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := f.conn.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload)
				SELECT 't', 'x', 'y', 'e', jsonb_build_object('w', $1::int, 'i', g) FROM generate_series(1, 5) g`, written)
			cancel()
			if err == nil {
				written++
				continue
			}
			// Reconnect after the server came back.
			for {
				select {
				case <-stopWriter:
					return
				default:
				}
				c, err := pgxConnect(f.dsn)
				if err == nil {
					f.conn = c
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()

	// The consumer runs all the time, as a replicator would: a fast
	// shutdown of Postgres waits until its walsender's data is confirmed.
	var mu sync.Mutex
	seen := map[string]bool{}
	var dup string
	go func() {
		for batch := range r.s.Messages() {
			for _, m := range batch {
				switch m := m.(type) {
				case *Event:
					mu.Lock()
					if seen[pos(m)] && dup == "" {
						dup = pos(m)
					}
					seen[pos(m)] = true
					mu.Unlock()
				case *Commit:
					r.s.SetSafe(m.EndLSN)
				}
			}
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	consume := func(until func() bool) {
		testenv.Eventually(t, 60*time.Second, until, "stuck at %d events", count())
		mu.Lock()
		defer mu.Unlock()
		if dup != "" {
			t.Fatalf("event %s delivered twice", dup)
		}
	}
	consume(func() bool { return count() >= 100 })
	if err := p.StopFast(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	consume(func() bool { return count() >= 300 })
	if err := p.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	consume(func() bool { return count() >= 500 })
	close(stopWriter)
	wg.Wait()
	var total int
	c, err := pgxConnect(f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM qx_outbox").Scan(&total); err != nil {
		t.Fatal(err)
	}
	consume(func() bool { return count() >= total })
	time.Sleep(300 * time.Millisecond) // nothing more may arrive
	if got := count(); got != total {
		t.Fatalf("got %d events, table has %d", got, total)
	}
}

func TestStream_IdleWAL(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200 MB")
	}
	ctx := t.Context()
	f := newFixture(t, pg)
	if _, err := f.conn.Exec(ctx, "CREATE TABLE busy (id bigserial, pad text)"); err != nil {
		t.Fatal(err)
	}
	f.insertTx(t, 1, "t")
	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot, StatusInterval: 500 * time.Millisecond})
	r.collect(t, 1, true)

	retained := func() int64 {
		var n int64
		err := f.conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1`, f.slot).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// 200 MB of WAL on another table while the outbox is idle.
	for i := 0; i < 20; i++ {
		if _, err := f.conn.Exec(ctx, `INSERT INTO busy (pad) SELECT repeat('x', 900) FROM generate_series(1, 10000)`); err != nil {
			t.Fatal(err)
		}
	}
	before := retained()
	start := time.Now()
	testenv.Eventually(t, 30*time.Second, func() bool { return retained() < 32<<20 },
		"retained WAL stayed above 32 MB")
	t.Logf("retained WAL %d MB after the writes, below 32 MB after %v", before>>20, time.Since(start))
	f.insertTx(t, 1, "later")
	evs, _ := r.collect(t, 1, true)
	if len(evs) != 1 || evs[0].String(FieldTenantID) != "later" {
		t.Fatalf("later event: got %v", evs)
	}
}

func TestStream_SlotErrors(t *testing.T) {
	ctx := t.Context()
	t.Run("missing slot with a checkpoint", func(t *testing.T) {
		f := newFixture(t, pg)
		_, err := EnsureSlot(ctx, f.conn, "qx_gone", false)
		if !errors.Is(err, ErrSlotMissing) {
			t.Fatalf("got %v, want ErrSlotMissing", err)
		}
		s, _ := New(Config{DSN: f.dsn, Slot: "qx_gone", Logger: quietLogger()})
		if err := s.Run(ctx); !errors.Is(err, ErrSlotMissing) {
			t.Fatalf("Run: got %v, want ErrSlotMissing", err)
		}
	})
	t.Run("slot in use", func(t *testing.T) {
		f := newFixture(t, pg)
		r := startStream(t, Config{DSN: f.dsn, Slot: f.slot})
		testenv.Eventually(t, 5*time.Second, r.s.Connected)
		s, _ := New(Config{DSN: f.dsn, Slot: f.slot, SlotInUseWait: 300 * time.Millisecond, Logger: quietLogger()})
		if err := s.Run(ctx); !errors.Is(err, ErrSlotInUse) {
			t.Fatalf("second stream: got %v, want ErrSlotInUse", err)
		}
		f.insertTx(t, 1, "t")
		if evs, _ := r.collect(t, 1, true); len(evs) != 1 {
			t.Fatalf("first stream harmed: %d events", len(evs))
		}
	})
	t.Run("idempotent setup", func(t *testing.T) {
		f := newFixture(t, pg)
		created, err := EnsureSlot(ctx, f.conn, f.slot, true)
		if err != nil || created {
			t.Fatalf("second EnsureSlot: created=%v err=%v", created, err)
		}
		if err := EnsurePublication(ctx, f.conn, DefaultPublication, DefaultMapping()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("lost slot", func(t *testing.T) {
		p, err := testenv.StartPostgres(testenv.PGOptions{Settings: map[string]string{
			"max_slot_wal_keep_size": "32MB", "max_replication_slots": "2", "min_wal_size": "32MB", "max_wal_size": "64MB"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		f := newFixture(t, p)
		// Fill the remaining slot so the room check can be seen too.
		if _, err := f.conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('filler', 'pgoutput')"); err != nil {
			t.Fatal(err)
		}
		if err := CheckPrerequisites(ctx, f.conn, DefaultMapping(), "qx_new"); !errors.Is(err, ErrNoSlotRoom) {
			t.Fatalf("full slots: got %v, want ErrNoSlotRoom", err)
		}
		if _, err := f.conn.Exec(ctx, "CREATE TABLE busy (pad text)"); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 60*time.Second, func() bool {
			f.conn.Exec(ctx, `INSERT INTO busy SELECT repeat('x', 900) FROM generate_series(1, 20000)`)
			f.conn.Exec(ctx, `SELECT pg_switch_wal()`)
			f.conn.Exec(ctx, `CHECKPOINT`)
			info, _, err := ReadSlot(ctx, f.conn, f.slot)
			return err == nil && info.WALStatus == "lost"
		})
		if _, err := EnsureSlot(ctx, f.conn, f.slot, true); !errors.Is(err, ErrSlotLost) {
			t.Fatalf("EnsureSlot: got %v, want ErrSlotLost", err)
		}
		s, _ := New(Config{DSN: f.dsn, Slot: f.slot, Logger: quietLogger()})
		if err := s.Run(ctx); !errors.Is(err, ErrSlotLost) {
			t.Fatalf("Run: got %v, want ErrSlotLost", err)
		}
	})
}

func TestPrerequisites(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t, pg)
	t.Run("no replication privilege", func(t *testing.T) {
		if _, err := f.conn.Exec(ctx, "DROP ROLE IF EXISTS plain; CREATE ROLE plain LOGIN"); err != nil {
			t.Fatal(err)
		}
		c := connect(t, strings.Replace(f.dsn, "postgres@", "plain@", 1))
		err := CheckPrerequisites(ctx, c, DefaultMapping(), f.slot)
		if !errors.Is(err, ErrNoReplicationPrivilege) {
			t.Fatalf("got %v, want ErrNoReplicationPrivilege", err)
		}
	})
	t.Run("outbox mapping", func(t *testing.T) {
		if _, err := f.conn.Exec(ctx, "CREATE TABLE odd (id int, payload int, tenant text)"); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			m    func(*Mapping)
			want string
		}{
			{func(m *Mapping) { m.Table = "nope" }, "does not exist"},
			{func(m *Mapping) { m.Columns[FieldTenantID] = "who" }, `no column "who"`},
			{func(m *Mapping) { m.Table = "odd"; m.Columns = [NumFields]string{FieldPayload: "payload"} }, "is integer"},
			{func(m *Mapping) { m.Columns[FieldPayload] = "" }, "payload field must be mapped"},
		} {
			m := DefaultMapping()
			tc.m(&m)
			err := CheckPrerequisites(ctx, f.conn, m, f.slot)
			if !errors.Is(err, ErrOutboxTable) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrOutboxTable saying %q", err, tc.want)
			}
		}
	})
	t.Run("wal_level", func(t *testing.T) {
		p, err := testenv.StartPostgres(testenv.PGOptions{Settings: map[string]string{"wal_level": "replica"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		c := connect(t, p.DSN("postgres"))
		if err := CheckPrerequisites(ctx, c, DefaultMapping(), "qx_a_to_b"); !errors.Is(err, ErrWALLevel) {
			t.Fatalf("got %v, want ErrWALLevel", err)
		}
	})
}

func TestSlotName(t *testing.T) {
	for _, tc := range []struct{ src, dst, want string }{
		{"us-east-1", "eu-west-1", "qx_us_east_1_to_eu_west_1"},
		{"a", "b", "qx_a_to_b"},
	} {
		if got, err := SlotName(tc.src, tc.dst); err != nil || got != tc.want {
			t.Errorf("SlotName(%q, %q) = %q, %v; want %q", tc.src, tc.dst, got, err, tc.want)
		}
	}
	if _, err := SlotName(strings.Repeat("a", 40), strings.Repeat("b", 40)); !errors.Is(err, ErrBadName) {
		t.Errorf("long name: got %v, want ErrBadName", err)
	}
	if _, err := SlotName("EU", "x"); !errors.Is(err, ErrBadName) {
		t.Errorf("upper case: got %v, want ErrBadName", err)
	}
}
