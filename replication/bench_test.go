package replication

// Benchmarks of the replicator against real servers (issue 4, "Performance").
// Every figure that is compared is measured in the same run, on the same
// Postgres cluster and the same kind of NATS server (an OS process, so that
// the benchmark process's RSS is the replicator's, not the server's):
//
//   - L1: pg_recvlogical decoding the same backlog over TCP (pgoutput, from a
//     copy of the same template slot): the fastest the source can hand it out.
//   - L2: raw jetstream.PublishMsgAsync of as many messages of the same size,
//     with Nats-Msg-Id, into a fresh stream of the same configuration: the
//     fastest the target can take it in.
//
// Run them with `make bench` (one table) or, for example,
//
//	go test -run '^$' -bench 'Replicator_' -benchtime 1x -count 3 ./replication

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/checkpoint"
	"github.com/qx-platform/regions/internal/testenv"
)

// benchPayloadSQL builds a ~250-byte JSON payload per row (the same shape
// as cdc's backlog benchmark).
const benchPayloadSQL = `jsonb_build_object('order_id', 'ord-' || g, 'customer', 'cust-' || (g % 977),
	'amount_cents', g * 7 % 100000, 'currency', 'EUR', 'status', 'created',
	'note', repeat('x', 120), 'items', jsonb_build_array(jsonb_build_object('sku', 'sku-' || (g % 50), 'qty', 1 + g % 3)))`

const benchTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// backlog is a source database holding rows outbox events (1,000 per
// transaction) and a template slot created before them; each measured run
// streams from its own copy of the template.
type backlog struct {
	dsn      string
	pool     *pgxpool.Pool
	template string
	rows     int
	endLSN   cdc.LSN
	copies   atomic.Int64
}

var (
	backlogsMu sync.Mutex
	backlogs   = map[int]*backlog{}
)

// sharedBacklog returns the backlog of rows events, building it on first
// use. It lives as long as the package's cluster, so `-count 3` builds it
// once rather than three times.
func sharedBacklog(tb testing.TB, rows int) *backlog {
	tb.Helper()
	backlogsMu.Lock()
	defer backlogsMu.Unlock()
	if bl := backlogs[rows]; bl != nil {
		return bl
	}
	ctx := context.Background()
	name := fmt.Sprintf("bench_backlog_%d", rows)
	if err := pg.Exec(ctx, "postgres", "CREATE DATABASE "+name); err != nil {
		tb.Fatal(err)
	}
	// Slot names are cluster-wide: one template per backlog.
	bl := &backlog{dsn: pg.DSN(name), template: fmt.Sprintf("bench_template_%d", rows), rows: rows}
	pool, err := pgxpool.New(ctx, bl.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	bl.pool = pool
	for _, sql := range []string{cdc.OutboxSQL, checkpoint.SchemaSQL, DeadLettersSQL} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			tb.Fatal(err)
		}
	}
	conn, err := pgxConn(ctx, bl.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := cdc.EnsurePublication(ctx, conn, cdc.DefaultPublication, cdc.DefaultMapping()); err != nil {
		tb.Fatal(err)
	}
	if _, err := cdc.EnsureSlot(ctx, conn, bl.template, true); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	const perTxn = 1000
	for done := 0; done < rows; done += perTxn {
		_, err := conn.Exec(ctx, `
			INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers)
			SELECT 'tenant-' || (g % 17), 'order', 'ord-' || g, 'order.created', `+benchPayloadSQL+`,
			       '{"traceparent": "`+benchTraceparent+`"}'
			FROM generate_series($1::int, $2::int) g`, done, min(done+perTxn, rows)-1)
		if err != nil {
			tb.Fatal(err)
		}
	}
	// Settle the table now, not during a measurement: autovacuum would
	// otherwise analyze 200k fresh rows while the first run streams.
	for _, sql := range []string{"VACUUM ANALYZE qx_outbox", "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			tb.Fatal(err)
		}
	}
	var end string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		tb.Fatal(err)
	}
	bl.endLSN, _ = cdc.ParseLSN(end)
	tb.Logf("backlog of %d events built in %v", rows, time.Since(start).Round(time.Millisecond))
	backlogs[rows] = bl
	return bl
}

// copySlot makes a fresh slot at the template's position (before the
// backlog) and forgets any checkpoint of that name; the slot is dropped by
// tb's cleanup.
func (bl *backlog) copySlot(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("bench_copy_%d_%d", bl.rows, bl.copies.Add(1))
	if _, err := bl.pool.Exec(ctx, "SELECT pg_copy_logical_replication_slot($1, $2)", bl.template, name); err != nil {
		tb.Fatal(err)
	}
	if _, err := bl.pool.Exec(ctx, "DELETE FROM qx_replication_checkpoints WHERE name = $1", name); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { bl.dropSlot(name) })
	return name
}

func (bl *backlog) dropSlot(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		_, err := bl.pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", name)
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond) // its walsender is still exiting
	}
}

// recvlogical is L1: pg_recvlogical decoding the backlog (pgoutput, TCP)
// from a copy of the template slot, start to exit.
func (bl *backlog) recvlogical(tb testing.TB) time.Duration {
	tb.Helper()
	slot := bl.copySlot(tb)
	cmd := exec.Command(filepath.Join(pg.BinDir, "pg_recvlogical"), "-d", bl.dsn, "--slot", slot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names="+cdc.DefaultPublication,
		"--endpos", bl.endLSN.String(), "-f", "/dev/null")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("pg_recvlogical: %v\n%s", err, out)
	}
	return time.Since(start)
}

// tap sits between the cdc stream and the replicator and watches: when the
// first event arrives, each transaction's commit time, and when the safe
// LSN covers the transaction that completes `want` events. Forwarding a
// batch costs one extra channel handoff per (up to) 256 events.
type tap struct {
	*cdc.Stream
	out  chan []cdc.Message
	want int

	first   atomic.Int64  // unix nanos of the first event's arrival
	goal    atomic.Uint64 // end LSN of the transaction completing want events
	done    chan struct{} // closed when the safe LSN reaches goal
	doneAt  time.Time
	once    sync.Once
	commits sync.Map // commit LSN → txnTimes (when recordCommits)

	recordCommits bool
}

// txnTimes are when a transaction committed (Postgres's commit timestamp)
// and when its first event reached the replicator.
type txnTimes struct{ commit, decoded time.Time }

func newTap(s *cdc.Stream, want int, recordCommits bool) *tap {
	return &tap{Stream: s, out: make(chan []cdc.Message, cap(s.Messages())), want: want,
		done: make(chan struct{}), recordCommits: recordCommits}
}

func (t *tap) Messages() <-chan []cdc.Message { return t.out }

func (t *tap) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- t.Stream.Run(ctx) }()
	events := 0
	for batch := range t.Stream.Messages() {
		if t.first.Load() == 0 {
			t.first.Store(time.Now().UnixNano())
		}
		for _, m := range batch {
			switch m := m.(type) {
			case *cdc.Event:
				events++
				// Events carry their transaction's commit time (from its
				// BEGIN), and are published before its Commit arrives.
				if t.recordCommits && m.Index == 0 {
					t.commits.Store(m.CommitLSN, txnTimes{commit: m.CommitTime, decoded: time.Now()})
				}
			case *cdc.Commit:
				if t.want > 0 && events >= t.want && t.goal.Load() == 0 {
					t.goal.Store(uint64(m.EndLSN))
				}
			}
		}
		t.out <- batch
	}
	close(t.out)
	return <-errc
}

func (t *tap) SetSafe(lsn cdc.LSN) {
	t.Stream.SetSafe(lsn)
	if g := t.goal.Load(); g != 0 && uint64(lsn) >= g {
		t.once.Do(func() { t.doneAt = time.Now(); close(t.done) })
	}
}

// elapsed is first event to the safe LSN covering the last one.
func (t *tap) elapsed() time.Duration { return t.doneAt.Sub(time.Unix(0, t.first.Load())) }

// benchReplicator is one replicator with the defaults of production (only
// logging is quiet), reading from a tapped cdc stream.
type benchReplicator struct {
	tap    *tap
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func startBenchReplicator(tb testing.TB, pool *pgxpool.Pool, dsn, slot, natsURL string, want int, recordCommits bool) *benchReplicator {
	tb.Helper()
	src, err := cdc.New(cdc.Config{DSN: dsn, Slot: slot, Logger: quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		tb.Fatal(err)
	}
	t := newTap(src, want, recordCommits)
	r, err := New(Config{SourceRegion: source, TargetRegion: "eu-west-1", Logger: quiet(), Registerer: prometheus.NewRegistry()},
		t, nc, checkpoint.NewPGStore(pool, slot), NewPGDeadLetters(pool, slot))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	br := &benchReplicator{tap: t, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { br.done <- r.Run(ctx) }()
	return br
}

func (br *benchReplicator) stop(tb testing.TB) {
	tb.Helper()
	br.cancel()
	select {
	case err := <-br.done:
		if err != nil {
			tb.Errorf("replicator: %v", err)
		}
	case <-time.After(60 * time.Second):
		tb.Errorf("replicator did not stop within 60s")
	}
	br.nc.Close()
}

// wait blocks until the safe LSN covers the backlog.
func (br *benchReplicator) wait(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	select {
	case <-br.tap.done:
	case err := <-br.done:
		tb.Fatalf("replicator stopped before the backlog was forwarded: %v", err)
	case <-time.After(timeout):
		tb.Fatalf("backlog not forwarded within %v", timeout)
	}
}

// deleteStream removes the target stream so the next run starts empty.
func deleteStream(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, StreamName(source)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		tb.Fatal(err)
	}
}

func streamMsgs(tb testing.TB, js jetstream.JetStream) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, StreamName(source))
	if err != nil {
		tb.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// catchUpResult is one catch-up: first event to last ack, the process's peak
// RSS and the CPU time it used (the replicator is all that runs in it then).
type catchUpResult struct {
	took    time.Duration
	peakMiB float64
	cpu     time.Duration
}

// catchUp runs one replicator over a fresh copy of the backlog's slot into
// an empty target stream, reached at natsURL (directly or through a proxy).
func catchUp(tb testing.TB, bl *backlog, js jetstream.JetStream, natsURL string) catchUpResult {
	tb.Helper()
	deleteStream(tb, js)
	slot := bl.copySlot(tb)
	rss := startRSS(tb)
	var br *benchReplicator
	// Label the replicator's goroutines (and the NATS client's, started
	// with it), so a -cpuprofile can be narrowed to them: -tagfocus run=replicator.
	pprof.Do(context.Background(), pprof.Labels("run", "replicator"), func(context.Context) {
		br = startBenchReplicator(tb, bl.pool, bl.dsn, slot, natsURL, bl.rows, false)
	})
	br.wait(tb, 10*time.Minute)
	peak, cpu := rss.stop()
	br.stop(tb)
	if got := streamMsgs(tb, js); got != uint64(bl.rows) {
		tb.Fatalf("target stream holds %d messages, want %d", got, bl.rows)
	}
	deleteStream(tb, js)
	res := catchUpResult{took: br.tap.elapsed(), peakMiB: peak, cpu: cpu}
	tb.Logf("catch-up of %d: %v, %.0f events/s, RSS %.1f MiB before, peak %.1f MiB, %.2f µs CPU per event (%.2f cores)",
		bl.rows, res.took.Round(time.Millisecond), rate(bl.rows, res.took), float64(rss.startKiB)/1024, res.peakMiB,
		float64(cpu.Microseconds())/float64(bl.rows), cpu.Seconds()/res.took.Seconds())
	return res
}

// rawPublish is L2: rows messages shaped like the replicator's (subject,
// Nats-Msg-Id, the Qx- headers, a ~250-byte JSON body) published with
// PublishMsgAsync and the replicator's window (8192) into a fresh stream
// of the same configuration, first publish to last ack.
func rawPublish(tb testing.TB, natsURL string, rows int) time.Duration {
	tb.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	var failed atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		tb.Fatal(err)
	}
	deleteStream(tb, js)
	ctx := context.Background()
	if _, err := ensureStream(ctx, js, StreamName(source), StreamSubject(source), 2*time.Minute); err != nil {
		tb.Fatal(err)
	}
	subject := "qx.events." + source + ".order.order.created"
	note := strings.Repeat("x", 120)
	start := time.Now()
	for i := 0; i < rows; i++ {
		eventID := fmt.Sprintf("%08x-9c0b-4ef8-bb6d-%012x", i, i)
		h := nats.Header{
			HeaderMsgID:         {source + ":" + eventID},
			HeaderSourceRegion:  {source},
			HeaderSourceLSN:     {fmt.Sprintf("0/%X:%d", 0x2000000+(i/1000)*420000, i%1000)},
			HeaderEventID:       {eventID},
			HeaderTenantID:      {"tenant-" + strconv.Itoa(i%17)},
			HeaderEventType:     {"order.created"},
			HeaderAggregateType: {"order"},
			HeaderAggregateID:   {"ord-" + strconv.Itoa(i)},
			"traceparent":       {benchTraceparent},
		}
		body := fmt.Sprintf(`{"note": "%s", "items": [{"qty": %d, "sku": "sku-%d"}], "status": "created", "currency": "EUR", "customer": "cust-%d", "order_id": "ord-%d", "amount_cents": %d}`,
			note, 1+i%3, i%50, i%977, i, i*7%100000)
		// A full window waits for room (as the replicator's does), however
		// slow the server is, rather than failing after the default 200 ms.
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: subject, Header: h, Data: []byte(body)}, stallWait); err != nil {
			tb.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		tb.Fatal("raw publishes not acknowledged within 5 minutes")
	}
	took := time.Since(start)
	if n := failed.Load(); n > 0 {
		tb.Fatalf("%d raw publishes failed", n)
	}
	if got := streamMsgs(tb, js); got != uint64(rows) {
		tb.Fatalf("raw stream holds %d messages, want %d", got, rows)
	}
	deleteStream(tb, js)
	return took
}

var stallWait = jetstream.WithStallWait(time.Minute)

// rssPeak measures the process's peak resident set over an interval: the
// kernel's VmHWM after resetting it (clear_refs 5), or, where that is not
// allowed, VmRSS sampled every 5 ms.
type rssPeak struct {
	hwm      bool
	startKiB uint64        // RSS at start, after returning free heap to the OS
	cpu      time.Duration // user+system time of the process at start
	stopped  chan struct{}
	sampled  chan uint64
}

func startRSS(tb testing.TB) *rssPeak {
	tb.Helper()
	debug.FreeOSMemory() // what earlier runs left in the heap is not this run's
	r := &rssPeak{stopped: make(chan struct{}), sampled: make(chan uint64, 1), cpu: processCPU(),
		startKiB: procStatusKiB("VmRSS:")}
	r.hwm = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	go func() {
		var peak uint64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if v := procStatusKiB("VmRSS:"); v > peak {
				peak = v
			}
			select {
			case <-r.stopped:
				r.sampled <- peak
				return
			case <-t.C:
			}
		}
	}()
	return r
}

// stop returns the peak in MiB and the CPU time the process used meanwhile.
func (r *rssPeak) stop() (float64, time.Duration) {
	close(r.stopped)
	peak := <-r.sampled
	if r.hwm {
		peak = max(peak, procStatusKiB("VmHWM:"))
	}
	return float64(peak) / 1024, processCPU() - r.cpu
}

// processCPU is the user and system time this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func procStatusKiB(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			v, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

func natsJS(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

func rate(events int, d time.Duration) float64 { return float64(events) / d.Seconds() }

var backlogsFlag = flag.String("qx.backlogs", "50000,200000",
	"backlog sizes of BenchmarkReplicator_CatchUp, e.g. 50000,200000,1000000 to see that peak RSS does not grow")

func backlogSizes(tb testing.TB) []int {
	var sizes []int
	for _, f := range strings.Split(*backlogsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1000 {
			tb.Fatalf("-qx.backlogs: %q is not a size of at least 1000", f)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// BenchmarkReplicator_CatchUp forwards a backlog of outbox events (1,000 per
// transaction, ~250-byte payloads) that exists before the replicator starts,
// first event to last ack (the safe LSN covering the backlog), and in the
// same run measures L1 and L2 (see the top of this file). The two backlog
// sizes show whether peak RSS grows with the backlog.
func BenchmarkReplicator_CatchUp(b *testing.B) {
	for _, rows := range backlogSizes(b) {
		b.Run(fmt.Sprintf("backlog=%dk", rows/1000), func(b *testing.B) {
			bl := sharedBacklog(b, rows)
			n := testenv.StartNATSProcess(b, testenv.NATSOptions{})
			js := natsJS(b, n.URL())
			var ours, l1, l2, cpu time.Duration
			var peak float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				l1 += bl.recvlogical(b)
				res := catchUp(b, bl, js, n.URL())
				ours += res.took
				cpu += res.cpu
				peak = max(peak, res.peakMiB)
				l2 += rawPublish(b, n.URL(), rows)
			}
			b.StopTimer()
			events := rows * b.N
			b.ReportMetric(rate(events, ours), "events/s")
			b.ReportMetric(rate(events, l1), "L1-events/s")
			b.ReportMetric(rate(events, l2), "L2-events/s")
			b.ReportMetric(rate(events, ours)/min(rate(events, l1), rate(events, l2)), "x_min_L1_L2")
			b.ReportMetric(peak, "peak-rss-MiB")
			b.ReportMetric(float64(cpu.Microseconds())/float64(events), "cpu-us/event")
		})
	}
}

// BenchmarkReplicator_CatchUpWAN is the 200k catch-up with 25 ms added in
// each direction (50 ms round trip) between the replicator and NATS, by a
// testenv.Proxy in this process, compared with a LAN catch-up of the same
// backlog in the same run. The peak RSS includes the proxy's queues.
func BenchmarkReplicator_CatchUpWAN(b *testing.B) {
	const rows = 200_000
	bl := sharedBacklog(b, rows)
	n := testenv.StartNATSProcess(b, testenv.NATSOptions{})
	js := natsJS(b, n.URL())
	proxy := testenv.StartProxy(b, fmt.Sprintf("127.0.0.1:%d", n.Port))
	proxy.SetLatency(25 * time.Millisecond)
	var lan, wan time.Duration
	var peak float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lan += catchUp(b, bl, js, n.URL()).took
		res := catchUp(b, bl, js, "nats://"+proxy.Addr())
		wan += res.took
		peak = max(peak, res.peakMiB)
	}
	b.StopTimer()
	events := rows * b.N
	b.ReportMetric(rate(events, wan), "events/s")
	b.ReportMetric(rate(events, lan), "LAN-events/s")
	b.ReportMetric(rate(events, wan)/rate(events, lan), "x_LAN")
	b.ReportMetric(peak, "peak-rss-MiB")
}

// Steady load: a writer commits one transaction of 10 events every 5 ms
// (2,000 events/s, evenly spread) for 10 s while the replicator runs.
const (
	steadyPerTxn   = 10
	steadyInterval = 5 * time.Millisecond
	steadyFor      = 10 * time.Second
)

// BenchmarkReplicator_Steady measures commit-to-ack latency under a steady
// 2,000 events/s: for each event, from its transaction's commit time (the
// commit timestamp Postgres writes in the WAL, read from the stream) to the
// moment a consumer of the target stream (an ordered consumer on the same
// NATS server) receives it. That is later than the replicator's ack, so the
// figures are upper bounds of commit-to-ack. The source-* figures are the
// part from commit until the event reached the replicator (Postgres's
// walsender and cdc's decoding), the rest is publish, ack and delivery.
func BenchmarkReplicator_Steady(b *testing.B) {
	n := testenv.StartNATSProcess(b, testenv.NATSOptions{})
	js := natsJS(b, n.URL())
	var all steadyResult
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := steadyRun(b, n.URL(), js)
		all.total = append(all.total, r.total...)
		all.source = append(all.source, r.source...)
		all.written += r.written
		all.writing += r.writing
	}
	b.StopTimer()
	b.ReportMetric(percentileMs(all.total, 0.50), "p50-ms")
	b.ReportMetric(percentileMs(all.total, 0.99), "p99-ms")
	b.ReportMetric(percentileMs(all.total, 1), "max-ms")
	b.ReportMetric(percentileMs(all.source, 0.50), "source-p50-ms")
	b.ReportMetric(percentileMs(all.source, 0.99), "source-p99-ms")
	b.ReportMetric(rate(all.written, all.writing), "writer-events/s")
}

// percentileMs is the p-th quantile of d (which it sorts), in milliseconds.
func percentileMs(d []time.Duration, p float64) float64 {
	slices.Sort(d)
	return float64(d[min(len(d)-1, int(p*float64(len(d))))]) / float64(time.Millisecond)
}

type steadyResult struct {
	total, source []time.Duration // per event: commit → consumer, commit → replicator
	written       int
	writing       time.Duration
}

// steadyRun runs the steady load once on a fresh source database and
// target stream.
func steadyRun(b *testing.B, natsURL string, js jetstream.JetStream) steadyResult {
	b.Helper()
	ctx := context.Background()
	deleteStream(b, js)
	st, err := ensureStream(ctx, js, StreamName(source), StreamSubject(source), 2*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	e := newEnv(b, pg, nil)

	br := startBenchReplicator(b, e.pool, e.dsn, e.slot, natsURL, 0, true)
	defer br.stop(b)

	var (
		mu       sync.Mutex
		res      steadyResult
		received int
		bad      error
	)
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		p, err := ParsePosition(m.Headers().Get(HeaderSourceLSN))
		mu.Lock()
		defer mu.Unlock()
		received++
		if err != nil {
			bad = err
			return
		}
		v, ok := br.tap.commits.Load(p.LSN)
		if !ok {
			bad = fmt.Errorf("no commit time for %s", p)
			return
		}
		tt := v.(txnTimes)
		res.total = append(res.total, now.Sub(tt.commit))
		res.source = append(res.source, tt.decoded.Sub(tt.commit))
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	// The replicator is streaming once its slot is active.
	testenv.Eventually(b, 30*time.Second, func() bool { return br.tap.Connected() }, "replicator not streaming")
	written := 0
	tick := time.NewTicker(steadyInterval)
	start := time.Now()
	for time.Since(start) < steadyFor {
		<-tick.C
		_, err := e.pool.Exec(ctx, `
			INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers)
			SELECT 'tenant-' || (g % 17), 'order', 'ord-' || g, 'order.created', `+benchPayloadSQL+`,
			       '{"traceparent": "`+benchTraceparent+`"}'
			FROM generate_series($1::int, $2::int) g`, written, written+steadyPerTxn-1)
		if err != nil {
			b.Fatal(err)
		}
		written += steadyPerTxn
	}
	writing := time.Since(start)
	tick.Stop()
	testenv.Eventually(b, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return received >= written
	}, "consumer did not receive every event")
	mu.Lock()
	defer mu.Unlock()
	if bad != nil {
		b.Fatal(bad)
	}
	if received != written {
		b.Fatalf("consumer received %d events, want %d", received, written)
	}
	return steadyResult{total: slices.Clone(res.total), source: slices.Clone(res.source), written: written, writing: writing}
}

// BenchmarkBuilder_Build turns one outbox event shaped like the backlog's
// into its NATS message: the replicator's own CPU per event, apart from
// decoding and publishing.
func BenchmarkBuilder_Build(b *testing.B) {
	tpl, err := parseSubjectTemplate(DefaultSubjectTemplate)
	if err != nil {
		b.Fatal(err)
	}
	m := cdc.DefaultMapping()
	bld := newBuilder(source, tpl, &m)
	ev := &cdc.Event{CommitLSN: 0x2A3B4C5D, Index: 417}
	ev.Values[cdc.FieldEventID] = []byte("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
	ev.Values[cdc.FieldTenantID] = []byte("tenant-7")
	ev.Values[cdc.FieldAggregateType] = []byte("order")
	ev.Values[cdc.FieldAggregateID] = []byte("ord-12345")
	ev.Values[cdc.FieldEventType] = []byte("order.created")
	ev.Values[cdc.FieldPayload] = []byte(`{"note": "` + strings.Repeat("x", 120) + `", "items": [{"qty": 2, "sku": "sku-45"}], "status": "created", "currency": "EUR", "customer": "cust-627", "order_id": "ord-12345", "amount_cents": 86415}`)
	ev.Values[cdc.FieldHeaders] = []byte(`{"traceparent": "` + benchTraceparent + `"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := bld.build(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// The fast paths that BenchmarkBuilder_Build led to must give exactly what
// the general code gives.

// FuzzParseUserHeaders checks that whatever the flat-object fast path
// accepts, encoding/json reads as the same string entries.
func FuzzParseUserHeaders(f *testing.F) {
	for _, s := range []string{`{}`, `{"traceparent": "` + benchTraceparent + `"}`, `{"a": "b", "c": "d"}`,
		`{"a": "b", "a": "c"}`, `{"n": 5}`, `{"a":"b"}`, `{"a": "\u00e9"}`, `{"a": "b\"c"}`, `{"é": "x"}`,
		`[1, 2]`, `null`, `{"a": "b"} {"c": "d"}`, `{"a": "b"}}`, `{"": "x"}`, `{"a": "b", }`, `{"a": "b",  "c": "d"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		fast, ok := parseFlatHeaders(h)
		if !ok {
			return
		}
		var m map[string]any
		if err := json.NewDecoder(bytes.NewReader(h)).Decode(&m); err != nil || m == nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", h, err)
		}
		want := map[string]string{}
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				t.Fatalf("fast path accepted %q with a non-string entry %q", h, k)
			}
			want[k] = s
		}
		got := map[string]string{}
		for _, u := range fast {
			got[u.k] = u.v // a repeated key: the last one wins, as in a map and in the headers
		}
		if !maps.Equal(got, want) {
			t.Fatalf("%q: fast path got %v, encoding/json %v", h, got, want)
		}
	})
}

// TestPosition_String checks the hand-written form against the one built
// from cdc.LSN.String (it is part of message ids, so it must never change).
func TestPosition_String(t *testing.T) {
	lsns := []cdc.LSN{0, 1, 0xF, 0x10, 0xABCDEF, 1 << 32, 0x16B3748, 0x1_0000_0000_0, ^cdc.LSN(0)}
	for i := 0; i < 1000; i++ {
		lsns = append(lsns, cdc.LSN(rand.Uint64()>>rand.IntN(64)))
	}
	for _, lsn := range lsns {
		for _, idx := range []int{0, 7, 1 << 30} {
			p := Position{LSN: lsn, Index: idx}
			if got, want := p.String(), lsn.String()+":"+strconv.Itoa(idx); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	}
}
