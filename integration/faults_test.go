package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/internal/testenv"
)

// 1. SIGKILL the replicator at random instants while events stream in.
func TestFault_ReplicatorKill(t *testing.T) {
	rng := newRand(t)
	total, kills, rate := scale(50_000, 100_000), scale(5, 10), scale(5000.0, 2500.0)
	r := newRig(t, rigOptions{})
	l := startLoad(t, r.dsn, loadOptions{Rate: rate, Total: total, Rollback: 0.1})
	rep := r.replicate("replicator 1")
	gap := time.Duration(float64(total) / rate / float64(kills+1) * float64(time.Second))
	for i := 0; i < kills; i++ {
		// A kill lands while the replicator streams: once it forwards
		// again, at a random instant. (If the writer is done and the
		// target holds everything, the kill lands on an idle replicator.)
		waitProgressOrCaughtUp(t, r, l, 60*time.Second)
		time.Sleep(between(rng, gap/2, gap*3/2))
		rep.kill()
		t.Logf("kill %d: SIGKILL %s with %d events stored, %d committed", i+1, rep.name, r.stored(), l.committed.Load())
		rep = r.replicate(fmt.Sprintf("replicator %d", i+2))
	}
	l.wait(5 * time.Minute)
	t.Log(l)
	finish(t, r, rep)
}

// 2. SIGKILL the NATS server and restart it on the same store, twice.
func TestFault_NATSKill(t *testing.T) {
	rng := newRand(t)
	r := newRig(t, rigOptions{})
	l := startLoad(t, r.dsn, loadOptions{Rate: scale(2000.0, 2500.0), Rollback: 0.1})
	rep := r.replicate("replicator")
	for i := 0; i < 2; i++ {
		waitProgress(t, r, 60*time.Second)
		time.Sleep(between(rng, time.Second, scale(2*time.Second, 10*time.Second)))
		stored := r.stored()
		if err := r.nats.Kill(); err != nil {
			t.Fatal(err)
		}
		down := scale(time.Second, 5*time.Second)
		time.Sleep(down) // the target stays down
		if err := r.nats.Start(); err != nil {
			t.Fatal(err)
		}
		t.Logf("kill %d: SIGKILL nats-server with %d events stored, restarted after %v", i+1, stored, down)
	}
	waitProgress(t, r, 60*time.Second)
	time.Sleep(scale(2*time.Second, 10*time.Second))
	l.stop()
	t.Log(l)
	finish(t, r, rep)
}

// 3. Restart the source Postgres, fast then immediate, while events stream.
func TestFault_PostgresRestart(t *testing.T) {
	rng := newRand(t)
	p, err := testenv.StartPostgres(testenv.PGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	r := newRig(t, rigOptions{PG: p})
	l := startLoad(t, r.dsn, loadOptions{Rate: scale(2000.0, 2500.0), Rollback: 0.1})
	rep := r.replicate("replicator")
	for _, mode := range []string{"fast", "immediate"} {
		waitProgress(t, r, 60*time.Second)
		time.Sleep(between(rng, time.Second, scale(2*time.Second, 10*time.Second)))
		stored := r.stored()
		start := time.Now()
		stop := p.StopFast
		if mode == "immediate" {
			stop = p.StopImmediate
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		stopped := time.Since(start)
		time.Sleep(scale(time.Second, 5*time.Second)) // the source stays down
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		r.pool.Reset()
		t.Logf("%s restart with %d events stored: shutdown took %v, down %v in all",
			mode, stored, stopped.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	waitProgress(t, r, 60*time.Second)
	time.Sleep(scale(2*time.Second, 10*time.Second))
	l.stop()
	t.Log(l)
	finish(t, r, rep)
}

// 4. Partition replicator↔NATS for longer than the stream's duplicate
// window (2 s), then heal.
func TestFault_NATSPartition(t *testing.T) {
	rng := newRand(t)
	r := newRig(t, rigOptions{})
	l := startLoad(t, r.dsn, loadOptions{Rate: scale(2000.0, 2500.0), Rollback: 0.1})
	rep := r.replicate("replicator")
	waitProgress(t, r, 60*time.Second)
	time.Sleep(between(rng, time.Second, 2*time.Second))
	r.natsProxy.Blackhole()
	stored := r.stored()
	partition := scale(5*time.Second, 20*time.Second)
	time.Sleep(partition) // the partition, well past the 2 s duplicate window
	r.natsProxy.Heal()
	t.Logf("partitioned replicator↔nats for %v with %d events stored; healed", partition, stored)
	waitProgress(t, r, 60*time.Second)
	time.Sleep(scale(2*time.Second, 10*time.Second))
	l.stop()
	t.Log(l)
	finish(t, r, rep)
}

// 5. Partition replicator↔Postgres, then heal.
func TestFault_PostgresPartition(t *testing.T) {
	rng := newRand(t)
	r := newRig(t, rigOptions{})
	l := startLoad(t, r.dsn, loadOptions{Rate: scale(2000.0, 2500.0), Rollback: 0.1})
	rep := r.replicate("replicator")
	waitProgress(t, r, 60*time.Second)
	time.Sleep(between(rng, time.Second, 2*time.Second))
	r.pgProxy.Blackhole()
	stored := r.stored()
	partition := scale(5*time.Second, 20*time.Second)
	time.Sleep(partition) // the partition
	r.pgProxy.Heal()
	t.Logf("partitioned replicator↔postgres for %v with %d events stored; healed", partition, stored)
	waitProgress(t, r, 60*time.Second)
	time.Sleep(scale(2*time.Second, 10*time.Second))
	l.stop()
	t.Log(l)
	finish(t, r, rep)
}

// 6. 50 ms added round trip to NATS throughout: a backlog catches up
// through it, then live load flows; same guarantees, throughput reported.
func TestFault_NATSLatency(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.natsProxy.SetLatency(25 * time.Millisecond) // each way
	n := scale(20, 100)
	r.backlog(n, 1000)
	rep := r.replicate("replicator")
	r.waitStored(1, 60*time.Second)
	start := time.Now()
	r.waitStored(uint64(n*1000), scale(2*time.Minute, 5*time.Minute))
	took := time.Since(start)
	catchUp := float64(n*1000-1) / took.Seconds()
	t.Logf("backlog of %d events caught up through 50 ms RTT in %v: %.0f events/s", n*1000, took.Round(time.Millisecond), catchUp)

	l := startLoad(t, r.dsn, loadOptions{Rate: scale(2000.0, 2500.0), Rollback: 0.1})
	time.Sleep(scale(5*time.Second, 20*time.Second)) // live load through the WAN link
	l.stop()
	t.Log(l)
	res := finish(t, r, rep)
	t.Logf("throughput through 50 ms RTT: catch-up %.0f events/s; live load at %.0f events/s, lag p50 %s p99 %s",
		catchUp, l.o.Rate, fmtDur(res.LagP50), fmtDur(res.LagP99))
	res.Throughput = catchUp
	replaceRecord(t, res)
}

// 7. Bad rows mixed into the stream: each lands in the dead letters with
// its reason, everything else arrives.
func TestFault_BadInput(t *testing.T) {
	ctx := context.Background()
	const maxPayload = 64 << 10
	r := newRig(t, rigOptions{MaxPayload: maxPayload})
	if _, err := r.pool.Exec(ctx, "ALTER TABLE qx_outbox ALTER tenant_id DROP NOT NULL"); err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, r.dsn, loadOptions{Rate: scale(2000.0, 2500.0), Rollback: 0.1})
	rep := r.replicate("replicator")
	waitProgress(t, r, 60*time.Second)

	dead := map[string]string{}
	either := map[string]bool{}
	r.expect = checkOptions{DeadLettered: dead, Either: either}
	rounds := scale(3, 10)
	for round := 0; round < rounds; round++ {
		// A transaction with good rows around a bad one, and bad rows alone.
		ids := insertRows(t, r, []row{
			{tenant: "tenant-b", agg: "good", payload: `{"n": 1}`},
			{tenant: "tenant-b", agg: "too-large", payload: fmt.Sprintf(`{"pad": "%s"}`, strings.Repeat("x", 100<<10))},
			{tenant: "tenant-b", agg: "good", payload: `{"n": 2}`},
		})
		dead[ids[1]] = "max_payload"
		ids = insertRows(t, r, []row{{tenant: "tenant-b", agg: "headers-array", payload: `{}`, headers: `[1, 2]`}})
		dead[ids[0]] = "headers are not a JSON object"
		ids = insertRows(t, r, []row{
			{tenant: "tenant-b", agg: "good", payload: `{"n": 3}`},
			{tenant: "tenant-b", agg: "header-space", payload: `{}`, headers: `{"bad name": "x"}`},
		})
		dead[ids[1]] = `header "bad name"`
		ids = insertRows(t, r, []row{{tenant: "", agg: "null-tenant", payload: `{}`}})
		dead[ids[0]] = "NULL: tenant_id"
		// At the limit: fits max_payload with the headers the replicator
		// sets, but not once the predecessor's id is chained in
		// Nats-Expected-Last-Msg-Id. Stored or dead-lettered, never stuck.
		ids = insertRows(t, r, []row{{tenant: "tenant-b", agg: "at-limit", payload: limitPayload(maxPayload)}})
		either[ids[0]] = true
		time.Sleep(scale(time.Second, 3*time.Second)) // more good load between rounds
	}
	waitProgress(t, r, 60*time.Second)
	l.stop()
	t.Log(l)
	res := finish(t, r, rep)
	rs, err := r.pool.Query(ctx, `SELECT row_data->>'aggregate_id', count(*), min(reason)
		FROM qx_replication_dead_letters GROUP BY 1 ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var kind, reason string
		var n int
		if err := rs.Scan(&kind, &n, &reason); err != nil {
			t.Fatal(err)
		}
		t.Logf("dead letters %-13s %2d  %s", kind, n, reason)
	}
	t.Logf("bad input: %d rows expected in the dead letters, %d found (with %d at-limit rows, which may go either way); %d good events arrived",
		len(dead), res.DeadLetters, len(either), res.Events-len(either))
}

type row struct {
	tenant, agg, payload, headers string
}

// insertRows commits rows in one transaction and returns their event ids.
// An empty tenant is NULL; empty headers are {}.
func insertRows(tb testing.TB, r *rig, rows []row) []string {
	tb.Helper()
	ctx := context.Background()
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var ids []string
	for _, rw := range rows {
		var tenant *string
		if rw.tenant != "" {
			tenant = &rw.tenant
		}
		headers := rw.headers
		if headers == "" {
			headers = "{}"
		}
		var id string
		err := tx.QueryRow(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload, headers)
			VALUES ($1, 'bad', $2, 'edge', $3::jsonb, $4::jsonb) RETURNING event_id::text`, tenant, rw.agg, rw.payload, headers).Scan(&id)
		if err != nil {
			tb.Fatalf("insert %s: %v", rw.agg, err)
		}
		ids = append(ids, id)
	}
	if err := tx.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
	return ids
}

// limitPayload is a JSON payload whose message, with the headers the
// replicator sets on an at-limit row (see insertRows), is 20 bytes under
// maxPayload: the replicator's size check passes it, and the
// Nats-Expected-Last-Msg-Id header it adds afterwards (~75 bytes) takes it
// over the limit.
func limitPayload(maxPayload int) string {
	uuid := strings.Repeat("0", 36)
	hdrs := map[string]string{
		"Nats-Msg-Id": source + ":" + uuid, "Qx-Source-Region": source, "Qx-Source-LSN": "0/12345678:0",
		"Qx-Tenant-Id": "tenant-b", "Qx-Event-Type": "edge", "Qx-Event-Id": uuid,
		"Qx-Aggregate-Type": "bad", "Qx-Aggregate-Id": "at-limit",
	}
	size := len("NATS/1.0\r\n\r\n")
	for k, v := range hdrs {
		size += len(k) + 2 + len(v) + 2
	}
	frame := len(`{"pad": ""}`) // jsonb's text form
	return fmt.Sprintf(`{"pad": "%s"}`, strings.Repeat("y", maxPayload-20-size-frame))
}

// 8. A second replicator for the same pair refuses to run; the first is
// unharmed.
func TestFault_SecondReplicator(t *testing.T) {
	r := newRig(t, rigOptions{})
	l := startLoad(t, r.dsn, loadOptions{Rate: scale(2000.0, 2500.0), Rollback: 0.1})
	first := r.replicate("replicator 1")
	waitProgress(t, r, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool { return first.logged("replication connected") })

	second := r.replicate("replicator 2")
	start := time.Now()
	code, ok := second.wait(60 * time.Second) // it waits cdc's SlotInUseWait (10 s) first
	if !ok {
		t.Fatalf("the second replicator still runs after %v", time.Since(start))
	}
	took := time.Since(start)
	if code == 0 {
		t.Errorf("the second replicator exited with status 0, want non-zero")
	}
	if !second.logged("in use", slot) {
		t.Errorf("the second replicator's stderr does not say the slot %s is in use:\n%s", slot, second.stderr.String())
	}
	t.Logf("second replicator refused after %v with status %d: %s", took.Round(time.Millisecond), code, lastLine(second.stderr.String()))
	if !first.running() {
		t.Fatalf("the first replicator exited: %s", first.describe())
	}
	if first.logged("replication connection failed") {
		t.Errorf("the first replicator lost its replication connection")
	}
	waitProgress(t, r, 30*time.Second) // the first still forwards
	time.Sleep(scale(time.Second, 10*time.Second))
	l.stop()
	t.Log(l)
	finish(t, r, first)
	if n := first.countLogged(`"level":"WARN"`); n > 0 {
		t.Logf("the first replicator logged %d warnings", n)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// 9. SIGTERM while a backlog drains: exit 0 within the shutdown deadline,
// the checkpoint saved at the last stored transaction, and a restart after
// the duplicate window resends nothing.
func TestFault_SIGTERMBacklog(t *testing.T) {
	ctx := context.Background()
	const shutdownTimeout = 5 * time.Second
	r := newRig(t, rigOptions{Env: map[string]string{
		"QX_REPLICATION__DUPLICATE_WINDOW": "1s",
		"QX_REPLICATION__SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
		"QX_REPLICATION__MAX_IN_FLIGHT":    "256", // with 50 ms RTT: ~5k events/s, so the backlog lasts
	}})
	r.natsProxy.SetLatency(25 * time.Millisecond)
	const perTxn = 1000
	txns := scale(20, 100)
	r.backlog(txns, perTxn)
	rep := r.replicate("replicator 1")
	r.waitStored(uint64(txns*perTxn/4), 2*time.Minute)
	took := stopGracefully(t, rep, shutdownTimeout)
	stored := readStream(t, r.nats.URL())
	t.Logf("SIGTERM with %d of %d events stored: exit 0 after %v", len(stored), txns*perTxn, took.Round(time.Millisecond))
	if len(stored) == txns*perTxn {
		t.Fatalf("the backlog was drained before SIGTERM; the scenario needs a slower replicator")
	}

	// The checkpoint covers the newest transaction the target holds whole.
	perLSN := map[cdc.LSN]int{}
	var lastWhole cdc.LSN
	for _, m := range stored {
		if perLSN[m.pos.LSN]++; perLSN[m.pos.LSN] == perTxn {
			lastWhole = m.pos.LSN
		}
	}
	saved := r.checkpoint()
	savedLSN, err := cdc.ParseLSN(saved)
	if err != nil {
		t.Fatalf("no checkpoint saved (%q): %v", saved, err)
	}
	var confirmed string
	if err := r.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint %s, slot confirmed %s, newest whole transaction in the target commits at %s", saved, confirmed, lastWhole)
	if savedLSN <= lastWhole {
		t.Errorf("checkpoint %s does not cover the newest transaction the target holds whole (%s)", saved, lastWhole)
	}
	if c, _ := cdc.ParseLSN(confirmed); c != savedLSN {
		t.Errorf("slot confirmed %s, checkpoint %s: the shutdown must confirm what it saved", confirmed, saved)
	}

	time.Sleep(1500 * time.Millisecond) // let the 1 s duplicate window pass: dedup cannot hide a resend
	r.natsProxy.SetLatency(0)
	r.backlog(2, perTxn) // and new events behind the backlog
	rep = r.replicate("replicator 2")
	testenv.Eventually(t, 30*time.Second, func() bool { return rep.logged("replication connected") })
	if !rep.logged("replication connected", `"start_lsn":"`+saved+`"`) {
		t.Errorf("the restart did not resume at the checkpoint %s", saved)
	}
	finish(t, r, rep)
}
