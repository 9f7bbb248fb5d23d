package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/checkpoint"
	"github.com/qx-platform/regions/internal/testenv"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.MainPostgres(m, &pg) }

const source = "us-east-1"

// env is a source database with an outbox, slot and the replicator's
// tables, and a target NATS server.
type env struct {
	dsn     string
	pool    *pgxpool.Pool
	slot    string
	nats    *testenv.NATS
	mapping cdc.Mapping
}

func newEnv(tb testing.TB, p *testenv.Postgres, n *testenv.NATS) *env {
	tb.Helper()
	ctx := context.Background()
	e := &env{dsn: p.NewDatabase(tb), slot: "qx_us_east_1_to_eu_west_1", nats: n, mapping: cdc.DefaultMapping()}
	pool, err := pgxpool.New(ctx, e.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	e.pool = pool
	for _, sql := range []string{cdc.OutboxSQL, checkpoint.SchemaSQL, DeadLettersSQL} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			tb.Fatal(err)
		}
	}
	e.ensureSlot(tb)
	return e
}

func (e *env) ensureSlot(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgxConn(ctx, e.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := cdc.EnsurePublication(ctx, conn, cdc.DefaultPublication, e.mapping); err != nil {
		tb.Fatal(err)
	}
	if _, err := cdc.EnsureSlot(ctx, conn, e.slot, true); err != nil {
		tb.Fatal(err)
	}
}

// insert writes txns transactions of n events each.
func (e *env) insert(tb testing.TB, txns, n int) {
	tb.Helper()
	for i := 0; i < txns; i++ {
		_, err := e.pool.Exec(context.Background(), `
			INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload)
			SELECT 'tenant-' || (g % 3), 'order', 'o-' || g, 'order.created', jsonb_build_object('g', g)
			FROM generate_series(1, $1) g`, n)
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func (e *env) outboxCount(tb testing.TB) int {
	tb.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), "SELECT count(*) FROM qx_outbox").Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

func quiet() *slog.Logger {
	if os.Getenv("QX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// runner runs one replicator (with its own NATS connection) in the background.
type runner struct {
	r      *Replicator
	src    *cdc.Stream
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

type options struct {
	cfg   Config
	store CheckpointStore
	// wrap, when set, gives the replicator this source around the stream.
	wrap func(*cdc.Stream) Source
	// logger, when set, receives the replicator's log.
	logger *slog.Logger
}

func (e *env) start(tb testing.TB, o options) *runner {
	tb.Helper()
	ctx := context.Background()
	store := checkpoint.NewPGStore(e.pool, e.slot)
	start, err := store.Load(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	src, err := cdc.New(cdc.Config{DSN: e.dsn, Slot: e.slot, Mapping: &e.mapping, StartLSN: start, Logger: quiet(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, SlotInUseWait: 30 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := nats.Connect(e.nats.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	cfg := o.cfg
	cfg.SourceRegion, cfg.TargetRegion = source, "eu-west-1"
	cfg.Mapping = &e.mapping
	cfg.Logger = quiet()
	if o.logger != nil {
		cfg.Logger = o.logger
	}
	if cfg.MaxBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 300*time.Millisecond
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = 2 * time.Second
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	var cs CheckpointStore = store
	if o.store != nil {
		cs = o.store
	}
	var s Source = src
	if o.wrap != nil {
		s = o.wrap(src)
	}
	r, err := New(cfg, s, nc, cs, NewPGDeadLetters(e.pool, e.slot))
	if err != nil {
		tb.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	run := &runner{r: r, src: src, nc: nc, cancel: cancel, done: make(chan error, 1), reg: reg}
	go func() { run.done <- r.Run(rctx) }()
	tb.Cleanup(func() { run.stop(tb) })
	return run
}

func (r *runner) stop(tb testing.TB) error {
	if r.done == nil {
		return nil
	}
	r.cancel()
	var err error
	select {
	case err = <-r.done:
	case <-time.After(30 * time.Second):
		tb.Errorf("replicator did not stop within 30s")
	}
	r.done = nil
	r.nc.Close()
	return err
}

// streamed reads every message of the target stream in order.
type streamed struct {
	pos []Position
	msg []jetstream.Msg
}

func readStream(tb testing.TB, url, stream string) streamed {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return streamed{}
	}
	if err != nil {
		tb.Fatal(err)
	}
	total := s.CachedInfo().State.Msgs
	var out streamed
	if total == 0 {
		return out
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	for uint64(len(out.msg)) < total {
		batch, err := c.Fetch(2000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			tb.Fatal(err)
		}
		for m := range batch.Messages() {
			p, err := ParsePosition(m.Headers().Get(HeaderSourceLSN))
			if err != nil {
				tb.Fatal(err)
			}
			out.pos = append(out.pos, p)
			out.msg = append(out.msg, m)
		}
	}
	return out
}

// check compares the target stream with the outbox: every event exactly
// once, in source order.
func (s streamed) check(tb testing.TB, want int) {
	tb.Helper()
	seen := map[Position]bool{}
	dups, disorder := 0, 0
	for i, p := range s.pos {
		if seen[p] {
			dups++
		}
		seen[p] = true
		if i > 0 && !s.pos[i-1].Less(p) {
			disorder++
		}
	}
	missing := want - len(seen)
	if dups != 0 || disorder != 0 || missing != 0 {
		tb.Fatalf("target stream: %d messages, %d distinct, want %d: missing %d, duplicated %d, out of order %d",
			len(s.pos), len(seen), want, missing, dups, disorder)
	}
}

func waitStream(tb testing.TB, url, stream string, want int, timeout time.Duration) {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var got uint64
	testenv.Eventually(tb, timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		got = s.CachedInfo().State.Msgs
		return got >= uint64(want)
	}, "stream holds fewer than %d messages", want)
}

// failingStore never saves: the replicator's position stays where it was,
// as after a crash just before each checkpoint.
type failingStore struct{}

func (failingStore) Save(context.Context, cdc.LSN) error { return errors.New("checkpoint store down") }

// unconfirmed is the stream, never told what the target stored: the slot
// keeps its position, as when the replicator is SIGKILLed before any
// status update. (With a failingStore, nothing is checkpointed either.)
type unconfirmed struct{ *cdc.Stream }

func (unconfirmed) SetSafe(cdc.LSN) {}

// slotConfirmed is the slot's confirmed_flush_lsn.
func (e *env) slotConfirmed(tb testing.TB) cdc.LSN {
	tb.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&s); err != nil {
		tb.Fatal(err)
	}
	lsn, err := cdc.ParseLSN(s)
	if err != nil {
		tb.Fatal(err)
	}
	return lsn
}

// walLSN is the source's current WAL position.
func (e *env) walLSN(tb testing.TB) cdc.LSN {
	tb.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		tb.Fatal(err)
	}
	lsn, err := cdc.ParseLSN(s)
	if err != nil {
		tb.Fatal(err)
	}
	return lsn
}

var _ = fmt.Sprintf

// deadLetter is a row of qx_replication_dead_letters as tests read it.
type deadLetterRow struct {
	pos    string
	reason string
	aggID  string
}

// deadLetters reads the slot's dead letters in source order.
func (e *env) deadLetters(tb testing.TB) []deadLetterRow {
	tb.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT commit_lsn::text || ':' || idx, reason, coalesce(row_data->>'aggregate_id', '')
		FROM qx_replication_dead_letters WHERE slot = $1 ORDER BY commit_lsn, idx`, e.slot)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var out []deadLetterRow
	for rows.Next() {
		var d deadLetterRow
		if err := rows.Scan(&d.pos, &d.reason, &d.aggID); err != nil {
			tb.Fatal(err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// labelled sums the counter name over the series with label = value.
func labelled(tb testing.TB, r *runner, name, label, value string) float64 {
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
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// gauge reads the gauge name.
func gauge(tb testing.TB, r *runner, name string) float64 {
	tb.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// aggIDs lists the aggregate ids of the stream's messages in order.
func (s streamed) aggIDs() []string {
	ids := make([]string, len(s.msg))
	for i, m := range s.msg {
		ids[i] = m.Headers().Get(HeaderAggregateID)
	}
	return ids
}

// commitTxn runs stmts in one transaction and returns its commit LSN as
// Postgres decodes it (read from a probe slot of its own, with pglogrepl's
// parser, not cdc's), and what the statements returned (one text column).
func (e *env) commitTxn(tb testing.TB, stmts ...string) (cdc.LSN, []string) {
	tb.Helper()
	ctx := context.Background()
	const probe = "qx_test_probe"
	if _, err := e.pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", probe); err != nil {
		tb.Fatal(err)
	}
	defer e.pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", probe)
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var out []string
	for _, s := range stmts {
		rows, err := tx.Query(ctx, s)
		if err != nil {
			tb.Fatal(err)
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				tb.Fatal(err)
			}
			out = append(out, v)
		}
		if rows.Close(); rows.Err() != nil {
			tb.Fatal(rows.Err())
		}
	}
	if err := tx.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
	rows, err := e.pool.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2)`, probe, cdc.DefaultPublication)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var commits []cdc.LSN
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			tb.Fatal(err)
		}
		m, err := pglogrepl.Parse(data)
		if err != nil {
			tb.Fatal(err)
		}
		if c, ok := m.(*pglogrepl.CommitMessage); ok {
			commits = append(commits, c.CommitLSN)
		}
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(commits) != 1 {
		tb.Fatalf("probe slot decoded %d transactions, want 1", len(commits))
	}
	return commits[0], out
}

// unstarted is a replicator on e that is not running, for tests that drive
// its queue by hand (sendMore, resolved, recover); it retries at once.
func (e *env) unstarted(tb testing.TB) *Replicator {
	tb.Helper()
	src, err := cdc.New(cdc.Config{DSN: e.dsn, Slot: e.slot, Mapping: &e.mapping, Logger: quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := nats.Connect(e.nats.URL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	r, err := New(Config{SourceRegion: source, TargetRegion: "eu-west-1", Logger: quiet(),
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond},
		src, nc, checkpoint.NewPGStore(e.pool, e.slot), NewPGDeadLetters(e.pool, e.slot))
	if err != nil {
		tb.Fatal(err)
	}
	r.reconnected = make(chan nats.Status, 1) // Run's, as pause reads it
	return r
}
