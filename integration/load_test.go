package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// loadOptions shape a load writer.
type loadOptions struct {
	Rate    float64 // events per second, all workers together
	Workers int     // concurrent writers, each its own transactions
	Total   int     // stop after this many committed events (0: at Stop)
	// Rollback is the share of transactions rolled back (their events must
	// never reach the target).
	Rollback float64
}

// load inserts outbox events at a fixed rate from several workers in
// concurrent transactions of 1 to 5 events, for 8 tenants, rolling some
// back. Each event's payload names its worker and the worker's transaction
// sequence ({"w": 2, "s": 17, "i": 0}); a worker commits its transactions
// one after the other, so in the target its events must appear in (s, i)
// order — a check of commit order that does not trust the replicator's
// Qx-Source-LSN header.
//
// It writes straight to Postgres (not through the replicator's proxy) and
// retries through outages; what counts in the end is what the table holds.
type load struct {
	tb         testing.TB
	pool       *pgxpool.Pool
	o          loadOptions
	cancel     context.CancelFunc
	done       chan struct{}
	committed  atomic.Int64 // events whose commit succeeded
	rolledBack atomic.Int64 // events in rolled-back transactions
	failures   atomic.Int64 // statements that failed (outages)
	started    time.Time

	mu       sync.Mutex
	firstErr error
}

const insertEvents = `
INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers)
SELECT $1, 'order', $2, CASE WHEN i % 2 = 0 THEN 'order.created' ELSE 'order.paid' END,
       jsonb_build_object('w', $3::int, 's', $4::int, 'i', i, 'pad', $5::text),
       jsonb_build_object('traceparent', $6::text)
FROM generate_series(0, $7::int - 1) AS i`

// pad brings a payload to about 250 bytes, like a typical domain event.
var pad = strings.Repeat("p", 200)

func startLoad(tb testing.TB, dsn string, o loadOptions) *load {
	tb.Helper()
	if o.Workers <= 0 {
		o.Workers = 4
	}
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{tb: tb, pool: pool, o: o, cancel: cancel, done: make(chan struct{}), started: time.Now()}
	var wg sync.WaitGroup
	for w := 0; w < o.Workers; w++ {
		wg.Add(1)
		go func() { defer wg.Done(); l.worker(ctx, w) }()
	}
	go func() { wg.Wait(); pool.Close(); close(l.done) }()
	tb.Cleanup(l.stop)
	return l
}

func (l *load) worker(ctx context.Context, w int) {
	perWorker := l.o.Rate / float64(l.o.Workers)
	next := time.Now()
	for seq := 0; ctx.Err() == nil; seq++ {
		if l.o.Total > 0 && l.committed.Load() >= int64(l.o.Total) {
			return
		}
		k := 1 + rand.IntN(5)
		rollback := rand.Float64() < l.o.Rollback
		tenant := fmt.Sprintf("tenant-%d", rand.IntN(8))
		trace := fmt.Sprintf("00-%016x%016x-%016x-01", rand.Uint64(), rand.Uint64(), rand.Uint64())
		err := l.txn(ctx, rollback, tenant, fmt.Sprintf("o-%d-%d", w, seq), w, seq, trace, k)
		switch {
		case err == nil && rollback:
			l.rolledBack.Add(int64(k))
		case err == nil:
			l.committed.Add(int64(k))
		case ctx.Err() == nil:
			// An outage (Postgres restarting): the commit may or may not
			// have happened; the checker reads the table. Retry shortly.
			l.failures.Add(1)
			l.noteErr(err)
			sleepCtx(ctx, 50*time.Millisecond)
			next = time.Now()
			continue
		}
		next = next.Add(time.Duration(float64(k) / perWorker * float64(time.Second)))
		if now := time.Now(); next.Before(now.Add(-time.Second)) {
			next = now // fell behind (an outage): do not burst to catch up
		}
		sleepCtx(ctx, time.Until(next))
	}
}

func (l *load) txn(ctx context.Context, rollback bool, tenant, agg string, w, seq int, trace string, k int) error {
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, insertEvents, tenant, agg, w, seq, pad, trace, k); err != nil {
		return err
	}
	if rollback {
		return tx.Rollback(ctx)
	}
	return tx.Commit(ctx)
}

func (l *load) noteErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.firstErr == nil {
		l.firstErr = err
	}
}

// wait waits until the writer has written its Total.
func (l *load) wait(timeout time.Duration) {
	l.tb.Helper()
	select {
	case <-l.done:
	case <-time.After(timeout):
		l.tb.Fatalf("load writer: %d of %d events committed after %v", l.committed.Load(), l.o.Total, timeout)
	}
}

// stop ends the writer and waits for its workers.
func (l *load) stop() {
	l.cancel()
	<-l.done
}

func (l *load) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := fmt.Sprintf("load: %d events committed, %d rolled back, %d failed statements in %v",
		l.committed.Load(), l.rolledBack.Load(), l.failures.Load(), time.Since(l.started).Round(time.Millisecond))
	if l.firstErr != nil {
		s += fmt.Sprintf(" (first error: %v)", l.firstErr)
	}
	return s
}

// backlogWriters is the first writer id of backlogs; live workers are
// numbered from 0.
const backlogWriters = 100

// backlog writes txns transactions of n events each at once, as one
// writer (id backlogWriters and up, one sequence number per transaction).
func (r *rig) backlog(txns, n int) {
	r.tb.Helper()
	w := backlogWriters + r.backlogs
	r.backlogs++
	for s := 0; s < txns; s++ {
		if _, err := r.pool.Exec(context.Background(), insertEvents,
			fmt.Sprintf("tenant-%d", s%8), fmt.Sprintf("bulk-%d-%d", w, s), w, s, pad, "00-bulk-01", n); err != nil {
			r.tb.Fatalf("backlog: %v", err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
