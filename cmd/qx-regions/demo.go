package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/internal/testenv"
	"github.com/qx-platform/regions/replication"
)

// demoRegion is one local region: its Postgres, its NATS, its writer.
type demoRegion struct {
	name    string
	pg      *testenv.Postgres
	nats    *testenv.NATS
	pool    *pgxpool.Pool
	tenants []string
	written atomic.Int64
}

func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	s := newSettings("demo", getenv, stderr)
	events := s.fs.Int("events", 2000, "events written in each region")
	duration := s.fs.Duration("duration", 5*time.Second, "how long the writers spread their events over")
	logLevel := s.add("QX_LOG__LEVEL", "warn", "log level of the replicators: debug, info, warn or error")
	if err := s.parse(args); err != nil {
		return err
	}
	if *events <= 0 {
		return usageErrorf("--events: %d is not a positive number", *events)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel.value)); err != nil {
		return usageErrorf("%s: %q is not one of debug, info, warn, error", logLevel.name(), logLevel.value)
	}
	log := newLogger(stderr, "auto", level)
	out := &demoOutput{w: stdout, tty: isTerminal(stdout)}

	out.line("starting two regions: Postgres (wal_level=logical) from %s, NATS JetStream in process", pgBinOrHint())
	names := []string{"us-east-1", "eu-west-1"}
	rs := make([]*demoRegion, len(names))
	defer func() {
		for _, r := range rs {
			if r == nil {
				continue
			}
			if r.pool != nil {
				r.pool.Close()
			}
			if r.nats != nil {
				r.nats.Close()
			}
			if r.pg != nil {
				r.pg.Close()
			}
		}
		out.line("cleaned up: servers stopped, temp dirs removed")
	}()
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		rs[i] = &demoRegion{name: n}
		for t := 1; t <= 3; t++ {
			rs[i].tenants = append(rs[i].tenants, fmt.Sprintf("%s-tenant-%d", strings.SplitN(n, "-", 2)[0], t))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rs[i]
			if r.pg, errs[i] = testenv.StartPostgres(testenv.PGOptions{}); errs[i] != nil {
				return
			}
			if r.nats, errs[i] = testenv.NewNATS(testenv.NATSOptions{}, true); errs[i] != nil {
				return
			}
			r.pool, errs[i] = pgxpool.New(ctx, r.pg.DSN("postgres"))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("start regions: %w", err)
	}
	const urls = "us-east-1=http://127.0.0.1:8081,eu-west-1=http://127.0.0.1:8082"
	for _, r := range rs {
		out.line("  %-10s postgres 127.0.0.1:%d  nats %s", r.name, r.pg.Port, r.nats.URL())
	}

	// One replicator per direction, each set up as `qx-regions setup` would.
	type pair struct {
		from, to *demoRegion
		cfg      *pairConfig
	}
	type stopped struct {
		slot string
		err  error
	}
	var pairs []*pair
	for _, from := range rs {
		for _, to := range rs {
			if from == to {
				continue
			}
			region, _ := regions.ParseConfig(from.name, urls)
			c := &pairConfig{
				region: region, source: from.name, target: to.name,
				sourceDSN: from.pg.DSN("postgres"), natsURL: to.nats.URL(),
				publication: "qx_outbox_pub", stream: replication.StreamName(from.name),
				subject: replication.DefaultSubjectTemplate, dupWindow: 2 * time.Minute,
				maxInFlight: 8192, publishTimeout: 10 * time.Second, shutdownTimeout: 10 * time.Second,
				statusInterval: time.Second, readyMaxLag: time.Minute, logFormat: "auto", logLevel: level,
			}
			c.slot = "qx_" + strings.ReplaceAll(from.name, "-", "_") + "_to_" + strings.ReplaceAll(to.name, "-", "_")
			c.mapping = cdc.DefaultMapping()
			if _, err := setupPair(ctx, c, false, log); err != nil {
				return fmt.Errorf("setup %s: %w", c, err)
			}
			pairs = append(pairs, &pair{from: from, to: to, cfg: c})
		}
	}
	// Every region knows every tenant's home (the resolver's table).
	for _, r := range rs {
		for _, home := range rs {
			for _, t := range home.tenants {
				if _, err := r.pool.Exec(ctx, `INSERT INTO qx_tenant_regions (tenant_id, region) VALUES ($1, $2)
					ON CONFLICT (tenant_id) DO UPDATE SET region = EXCLUDED.region`, t, home.name); err != nil {
					return fmt.Errorf("seed tenants: %w", err)
				}
			}
		}
	}
	rctx, stopReplicators := context.WithCancel(context.Background())
	repDone := make(chan stopped, len(pairs))
	running := len(pairs)
	// On every way out (Ctrl-C, a failed writer or replicator) the
	// replicators drain and stop before the servers under them do (the
	// servers' cleanup was deferred earlier, so it runs later).
	defer func() {
		stopReplicators()
		for ; running > 0; running-- {
			<-repDone
		}
	}()
	for _, p := range pairs {
		go func() { repDone <- stopped{p.cfg.slot, replicate(rctx, p.cfg, log.With("pair", p.cfg.slot), nil)} }()
		out.line("replicator %s → %s: slot %s, stream %s on %s", p.from.name, p.to.name, p.cfg.slot, p.cfg.stream, p.to.name)
	}

	// Writers: each region's tenants write events in small transactions.
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	werrs := make(chan error, len(rs))
	for _, r := range rs {
		go func() { werrs <- r.write(wctx, *events, *duration) }()
	}
	counts := make([]*streamCounter, len(pairs))
	for i, p := range pairs {
		counts[i] = &streamCounter{url: p.to.nats.URL(), stream: p.cfg.stream}
		defer counts[i].close()
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	writersDone := 0
	deadline := time.Now().Add(*duration + 60*time.Second)
	for {
		select {
		case <-ctx.Done():
			out.done()
			out.line("interrupted")
			return nil
		case err := <-werrs:
			if err != nil {
				return fmt.Errorf("writer: %w", err)
			}
			writersDone++
		case st := <-repDone:
			running--
			out.done()
			return fmt.Errorf("replicator %s stopped: %v", st.slot, st.err)
		case <-tick.C:
		}
		all := writersDone == len(rs)
		var parts []string
		for i, p := range pairs {
			got := counts[i].count()
			want := p.from.written.Load()
			parts = append(parts, out.progress(p.from.name+" → "+p.to.name, got, int64(*events), want-got))
			if got < want {
				all = false
			}
		}
		if all {
			out.status(parts)
			out.done()
			if !out.tty {
				out.line("%s", strings.Join(parts, "  |  "))
			}
			break
		}
		out.status(parts)
		if time.Now().After(deadline) {
			out.done()
			return errors.New("replication did not catch up within 60s of the writers finishing")
		}
	}
	out.done()

	// Verify: every outbox row of each region arrived exactly once, in
	// commit order, in the other region's stream.
	failed := false
	for _, p := range pairs {
		v, err := verifyPair(ctx, p.from.pool, p.to.nats.URL(), p.cfg.stream)
		if err != nil {
			return fmt.Errorf("verify %s → %s: %w", p.from.name, p.to.name, err)
		}
		ok := v.missing == 0 && v.duplicated == 0 && v.outOfOrder == 0 && v.unexpected == 0
		failed = failed || !ok
		mark := "ok"
		if !ok {
			mark = "FAILED"
		}
		out.line("verify %s → %s: %d events written, %d in the stream: missing %d, duplicated %d, out of order %d, unexpected %d  %s",
			p.from.name, p.to.name, v.written, v.stored, v.missing, v.duplicated, v.outOfOrder, v.unexpected, mark)
	}
	stopReplicators()
	for ; running > 0; running-- {
		if st := <-repDone; st.err != nil {
			running--
			return fmt.Errorf("replicator %s: %w", st.slot, st.err)
		}
	}
	if failed {
		return errors.New("verification failed")
	}
	out.line("every event arrived exactly once, in order, on the other side")
	return nil
}

func pgBinOrHint() string {
	d, err := testenv.PGBinDir()
	if err != nil {
		return "(not found: apt-get install postgresql)"
	}
	return d
}

// write inserts n events for the region's tenants over d, in transactions
// of 1 to 20 events.
func (r *demoRegion) write(ctx context.Context, n int, d time.Duration) error {
	start := time.Now()
	for done := 0; done < n; {
		k := min(1+rand.IntN(20), n-done)
		tenant := r.tenants[rand.IntN(len(r.tenants))]
		_, err := r.pool.Exec(ctx, `
			INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers)
			SELECT $1, 'order', 'ord-' || ($2::int + g), 'order.created',
			       jsonb_build_object('order', $2::int + g, 'tenant', $1::text, 'amount_cents', (random() * 10000)::int),
			       jsonb_build_object('traceparent', '00-' || md5(random()::text) || '-' || substr(md5(random()::text), 1, 16) || '-01')
			FROM generate_series(1, $3::int) g`, tenant, done, k)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		done += k
		r.written.Add(int64(k))
		// Pace the writes over d.
		if ahead := time.Duration(float64(d)*float64(done)/float64(n)) - time.Since(start); ahead > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(ahead):
			}
		}
	}
	return nil
}

// streamCounter reads a target stream's message count.
type streamCounter struct {
	url, stream string
	nc          *nats.Conn
	js          jetstream.JetStream
}

func (c *streamCounter) count() int64 {
	if c.nc == nil {
		nc, err := nats.Connect(c.url)
		if err != nil {
			return 0
		}
		c.nc = nc
		c.js, _ = jetstream.New(nc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, c.stream)
	if err != nil {
		return 0
	}
	return int64(s.CachedInfo().State.Msgs)
}

func (c *streamCounter) close() {
	if c.nc != nil {
		c.nc.Close()
	}
}

type verification struct {
	written, stored                             int
	missing, duplicated, outOfOrder, unexpected int
}

// verifyPair compares a source outbox with the target stream.
func verifyPair(ctx context.Context, pool *pgxpool.Pool, url, stream string) (verification, error) {
	var v verification
	want := map[string]bool{}
	rows, err := pool.Query(ctx, "SELECT event_id::text FROM qx_outbox")
	if err != nil {
		return v, err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return v, err
		}
		want[id] = true
	}
	if err := rows.Err(); err != nil {
		return v, err
	}
	v.written = len(want)
	nc, err := nats.Connect(url)
	if err != nil {
		return v, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return v, err
	}
	total := s.CachedInfo().State.Msgs
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return v, err
	}
	seen := map[string]bool{}
	var prev replication.Position
	for uint64(v.stored) < total {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return v, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			v.stored++
			id := m.Headers().Get(replication.HeaderEventID)
			switch {
			case seen[id]:
				v.duplicated++
			case !want[id]:
				v.unexpected++
			}
			seen[id] = true
			pos, err := replication.ParsePosition(m.Headers().Get(replication.HeaderSourceLSN))
			if err != nil || (v.stored > 1 && !prev.Less(pos)) {
				v.outOfOrder++
			}
			prev = pos
		}
		if err := batch.Error(); err != nil {
			return v, err
		}
		if n == 0 {
			break
		}
	}
	for id := range want {
		if !seen[id] {
			v.missing++
		}
	}
	return v, nil
}

// demoOutput shows progress: a bar redrawn in place on a terminal, plain
// lines (one a second) otherwise.
type demoOutput struct {
	w     io.Writer
	tty   bool
	drawn bool
	last  time.Time
	mu    sync.Mutex
}

func (o *demoOutput) line(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.drawn {
		fmt.Fprintln(o.w)
		o.drawn = false
	}
	fmt.Fprintf(o.w, format+"\n", args...)
}

func (o *demoOutput) progress(label string, got, total, behind int64) string {
	if !o.tty {
		return fmt.Sprintf("%s replicated %d/%d (behind %d)", label, got, total, behind)
	}
	const width = 24
	filled := int(float64(width) * float64(min(got, total)) / float64(total))
	return fmt.Sprintf("%s [%s%s] %d/%d behind %d", label, strings.Repeat("#", filled), strings.Repeat(".", width-filled), got, total, behind)
}

func (o *demoOutput) status(parts []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	text := strings.Join(parts, "  |  ")
	if o.tty {
		fmt.Fprintf(o.w, "\r\033[K%s", text)
		o.drawn = true
		return
	}
	if time.Since(o.last) >= time.Second {
		fmt.Fprintln(o.w, text)
		o.last = time.Now()
	}
}

func (o *demoOutput) done() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.drawn {
		fmt.Fprintln(o.w)
		o.drawn = false
	}
}
