package cdc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/qx-platform/regions/internal/testenv"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.MainPostgres(m, &pg) }

type fixture struct {
	dsn  string
	conn *pgx.Conn
	slot string
}

func connect(tb testing.TB, dsn string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// newFixture makes a fresh database with the default outbox, its
// publication and a slot.
func newFixture(tb testing.TB, p *testenv.Postgres) *fixture {
	tb.Helper()
	f := &fixture{dsn: p.NewDatabase(tb), slot: "qx_test_to_other"}
	f.conn = connect(tb, f.dsn)
	ctx := context.Background()
	if _, err := f.conn.Exec(ctx, OutboxSQL); err != nil {
		tb.Fatal(err)
	}
	if err := EnsurePublication(ctx, f.conn, DefaultPublication, DefaultMapping()); err != nil {
		tb.Fatal(err)
	}
	if _, err := EnsureSlot(ctx, f.conn, f.slot, true); err != nil {
		tb.Fatal(err)
	}
	return f
}

// insertTx inserts n events of one tenant in one transaction.
func (f *fixture) insertTx(tb testing.TB, n int, tenant string) {
	tb.Helper()
	_, err := f.conn.Exec(context.Background(), `
		INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload)
		SELECT $1, 'order', 'o-' || g, 'created', jsonb_build_object('n', g, 'tenant', $1::text)
		FROM generate_series(1, $2) g`, tenant, n)
	if err != nil {
		tb.Fatalf("insert: %v", err)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type running struct {
	s      *Stream
	cancel context.CancelFunc
	errc   chan error
}

func startStream(tb testing.TB, cfg Config) *running {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- s.Run(ctx) }()
	tb.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	for range r.s.Messages() {
	}
	<-r.errc
	r.errc <- nil // let stop be called twice
}

// collect reads until n commits arrived, acking each commit as it comes
// when ack is true.
func (r *running) collect(tb testing.TB, commits int, ack bool) ([]*Event, []*Commit) {
	tb.Helper()
	var evs []*Event
	var cs []*Commit
	timeout := time.After(60 * time.Second)
	for len(cs) < commits {
		select {
		case batch, ok := <-r.s.Messages():
			if !ok {
				tb.Fatalf("stream ended: %v", <-r.errc)
			}
			for _, m := range batch {
				switch m := m.(type) {
				case *Event:
					evs = append(evs, m)
				case *Commit:
					cs = append(cs, m)
					if ack {
						r.s.SetSafe(m.EndLSN)
					}
				}
			}
		case <-timeout:
			tb.Fatalf("timed out with %d of %d commits", len(cs), commits)
		}
	}
	return evs, cs
}

// expectQuiet checks that nothing more arrives for a moment.
func (r *running) expectQuiet(tb testing.TB, d time.Duration) {
	tb.Helper()
	select {
	case m := <-r.s.Messages():
		tb.Fatalf("unexpected message %#v", m)
	case <-time.After(d):
	}
}

func pos(e *Event) string { return fmt.Sprintf("%s/%d", e.CommitLSN, e.Index) }

func pgxConnect(dsn string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return pgx.Connect(ctx, dsn)
}
