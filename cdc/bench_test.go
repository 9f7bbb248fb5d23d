package cdc

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// backlog is a database holding a streamed-once backlog of outbox rows and
// a template slot created before it, copied for each measured run.
type backlog struct {
	f      *fixture
	rows   int
	endLSN LSN
}

// payloadSQL builds a ~250-byte JSON payload.
const payloadSQL = `jsonb_build_object('order_id', 'ord-' || g, 'customer', 'cust-' || (g % 977),
	'amount_cents', g * 7 % 100000, 'currency', 'EUR', 'status', 'created',
	'note', repeat('x', 120), 'items', jsonb_build_array(jsonb_build_object('sku', 'sku-' || (g % 50), 'qty', 1 + g % 3)))`

func newBacklog(tb testing.TB, rows, perTxn int) *backlog {
	tb.Helper()
	ctx := context.Background()
	f := newFixture(tb, pg)
	for done := 0; done < rows; done += perTxn {
		_, err := f.conn.Exec(ctx, `
			INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers)
			SELECT 'tenant-' || (g % 17), 'order', 'ord-' || g, 'order.created', `+payloadSQL+`,
			       '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
			FROM generate_series($1::int, $2::int) g`, done, done+perTxn-1)
		if err != nil {
			tb.Fatal(err)
		}
	}
	// Settle what the inserts leave behind (autovacuum of the new rows,
	// dirty buffers) before anything is timed, so it does not land in
	// one side's measurement.
	for _, sql := range []string{"VACUUM ANALYZE qx_outbox", "CHECKPOINT"} {
		if _, err := f.conn.Exec(ctx, sql); err != nil {
			tb.Fatal(err)
		}
	}
	var end string
	if err := f.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		tb.Fatal(err)
	}
	lsn, _ := ParseLSN(end)
	return &backlog{f: f, rows: rows, endLSN: lsn}
}

// copySlot makes a fresh slot at the template's position (before the backlog).
func (bl *backlog) copySlot(tb testing.TB, name string) {
	tb.Helper()
	ctx := context.Background()
	bl.f.conn.Exec(ctx, "SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1", name)
	if _, err := bl.f.conn.Exec(ctx, "SELECT pg_copy_logical_replication_slot($1, $2)", bl.f.slot, name); err != nil {
		tb.Fatal(err)
	}
}

// streamAll streams the whole backlog from slot and returns the time from
// start to the last commit. A consumer that pauses after each batch is
// slower than the decoder, so the stream must hold back.
func (bl *backlog) streamAll(tb testing.TB, slot string, pause time.Duration) time.Duration {
	tb.Helper()
	s, err := New(Config{DSN: bl.f.dsn, Slot: slot, Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	events := 0
	for batch := range s.Messages() {
		if pause > 0 {
			time.Sleep(pause)
		}
		for _, m := range batch {
			switch m := m.(type) {
			case *Event:
				events++
			case *Commit:
				s.SetSafe(m.EndLSN)
				if events >= bl.rows {
					elapsed := time.Since(start)
					cancel()
					for range s.Messages() {
					}
					<-done
					return elapsed
				}
			}
		}
	}
	tb.Fatalf("stream ended after %d events: %v", events, <-done)
	return 0
}

// recvlogical decodes the backlog with pg_recvlogical (pgoutput, TCP) and
// returns its run time.
func (bl *backlog) recvlogical(tb testing.TB, slot string) time.Duration {
	tb.Helper()
	bin, err := exec.LookPath(filepath.Join(pg.BinDir, "pg_recvlogical"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", bl.f.dsn, "--slot", slot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names="+DefaultPublication,
		"--endpos", bl.endLSN.String(), "-f", "/dev/null")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("pg_recvlogical: %v\n%s", err, out)
	}
	return time.Since(start)
}

// BenchmarkStream_Backlog decodes a 200,000-row backlog (1,000 rows per
// transaction, ~250-byte payloads) over TCP and compares with pg_recvlogical
// decoding the same backlog with pgoutput in the same run.
func BenchmarkStream_Backlog(b *testing.B) {
	bl := newBacklog(b, 200_000, 1_000)
	var ours, theirs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bl.copySlot(b, "bench_recv")
		theirs += bl.recvlogical(b, "bench_recv")
		bl.copySlot(b, "bench_ours")
		ours += bl.streamAll(b, "bench_ours", 0)
	}
	b.StopTimer()
	oursRate := float64(bl.rows*b.N) / ours.Seconds()
	theirRate := float64(bl.rows*b.N) / theirs.Seconds()
	b.ReportMetric(oursRate, "events/s")
	b.ReportMetric(theirRate, "recvlogical-events/s")
	b.ReportMetric(oursRate/theirRate, "x_pg_recvlogical")
}

// BenchmarkStream_LargeTransaction streams one transaction of 1,000,000
// outbox rows through a consumer slower than the decoder (5 ms per batch of
// 256, about 50k events/s) and reports the peak Go heap, which must stay
// bounded (under 64 MiB) whatever the transaction size: the stream waits
// for the consumer rather than buffering the transaction.
func BenchmarkStream_LargeTransaction(b *testing.B) {
	const rows = 1_000_000
	bl := newBacklog(b, rows, rows)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	b.ResetTimer()
	var took time.Duration
	for i := 0; i < b.N; i++ {
		bl.copySlot(b, "bench_large")
		took += bl.streamAll(b, "bench_large", 5*time.Millisecond)
	}
	b.StopTimer()
	close(stop)
	<-sampled
	b.ReportMetric(float64(rows*b.N)/took.Seconds(), "events/s")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
	if peak.Load() > 64<<20 {
		b.Fatalf("peak heap %d MiB, want under 64 MiB", peak.Load()>>20)
	}
}
