package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qx-platform/regions/replication"
)

// result is what the checker found; every count but Events, Stored and
// DeadLetters must be 0.
type result struct {
	Events      int // events that must be in the target (committed, not dead-lettered)
	Stored      int // messages in the target stream
	Missing     int
	Duplicated  int
	OutOfOrder  int
	Unexpected  int // in the target but not a committed outbox row (e.g. rolled back), or dead-lettered
	Corrupt     int // body, dedup id or tenant differ from the outbox row
	DeadLetters int
	// BadDeadLetters counts dead letters that should not be there, expected
	// ones that are not, and ones with the wrong reason.
	BadDeadLetters int
	Throughput     float64 // stored messages per second, first to last stored
	// Lag is stored time (the stream's timestamp) minus created_at, over
	// the load writer's live events: a backlog written before the
	// replicator started would only measure how long it waited.
	Lagged         int // events the lag figures cover
	LagP50, LagP99 time.Duration
	LagMax         time.Duration
}

func (r result) ok() bool {
	return r.Missing == 0 && r.Duplicated == 0 && r.OutOfOrder == 0 && r.Unexpected == 0 &&
		r.Corrupt == 0 && r.BadDeadLetters == 0
}

func (r result) String() string {
	return fmt.Sprintf("checked %d events against %d stored messages: missing %d, duplicated %d, out of order %d, "+
		"unexpected %d, corrupt %d, dead letters %d (wrong %d); throughput %.0f events/s; lag of %d live events p50 %s p99 %s max %s",
		r.Events, r.Stored, r.Missing, r.Duplicated, r.OutOfOrder, r.Unexpected, r.Corrupt, r.DeadLetters,
		r.BadDeadLetters, r.Throughput, r.Lagged, fmtDur(r.LagP50), fmtDur(r.LagP99), fmtDur(r.LagMax))
}

// checkOptions say which outbox rows are not to reach the target.
type checkOptions struct {
	// DeadLettered maps event ids that must be dead-lettered to a phrase
	// their reason must contain.
	DeadLettered map[string]string
	// Either lists event ids that may be stored or dead-lettered (exactly
	// one of the two).
	Either map[string]bool
}

type outboxRow struct {
	id        string
	tenant    *string
	payload   string
	createdAt time.Time
}

type storedMsg struct {
	seq     uint64
	ts      time.Time
	msgID   string
	eventID string
	tenant  string
	pos     replication.Position
	posErr  error
	data    []byte
}

// check reads every committed outbox row and the whole target stream and
// compares them: each event exactly once, in commit order, unchanged. It
// logs the counts, fails the test when one is not 0, and returns them.
func check(tb testing.TB, r *rig, o checkOptions) result {
	tb.Helper()
	res, problems := compare(readOutbox(tb, r), readStream(tb, r.nats.URL()), readDeadLetters(tb, r), o)
	tb.Logf("%s", res)
	if !res.ok() {
		tb.Errorf("target stream does not match the outbox:\n  %s", strings.Join(problems, "\n  "))
	}
	return res
}

// compare is the checker's logic: the committed outbox rows, the target
// stream in stream order and the dead letters in, counts and the first
// problems found (for the log) out.
func compare(rows []outboxRow, msgs []storedMsg, dead []deadLetter, o checkOptions) (result, []string) {
	res := result{Stored: len(msgs), DeadLetters: len(dead)}
	var problems []string
	note := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}

	byID := make(map[string]*outboxRow, len(rows))
	for i := range rows {
		byID[rows[i].id] = &rows[i]
	}
	// Dead letters: exactly the expected ones, with their reasons.
	deadIDs := map[string]bool{}
	for _, d := range dead {
		deadIDs[d.eventID] = true
		want, expected := o.DeadLettered[d.eventID]
		switch {
		case o.Either[d.eventID]:
		case !expected:
			res.BadDeadLetters++
			note("unexpected dead letter %s at %s: %s", d.eventID, d.pos, d.reason)
		case !strings.Contains(d.reason, want):
			res.BadDeadLetters++
			note("dead letter %s: reason %q, want it to mention %q", d.eventID, d.reason, want)
		}
	}
	for id := range o.DeadLettered {
		if !deadIDs[id] {
			res.BadDeadLetters++
			note("event %s is not in the dead letters", id)
		}
	}

	seen := make(map[string]int, len(msgs))
	type wpos struct{ s, i int }
	lastOfWriter := map[int]wpos{}
	lags := make([]time.Duration, 0, len(msgs))
	for k, m := range msgs {
		seen[m.eventID]++
		if seen[m.eventID] == 2 {
			note("duplicate: event %s again at stream seq %d (%s)", m.eventID, m.seq, m.pos)
		}
		row := byID[m.eventID]
		switch {
		case row == nil:
			res.Unexpected++
			note("stream seq %d: event %s is not a committed outbox row", m.seq, m.eventID)
			continue
		case deadIDs[m.eventID] || o.DeadLettered[m.eventID] != "":
			res.Unexpected++
			note("stream seq %d: event %s is dead-lettered and stored", m.seq, m.eventID)
		}
		if m.msgID != source+":"+m.eventID || string(m.data) != row.payload || row.tenant == nil || m.tenant != *row.tenant {
			res.Corrupt++
			note("stream seq %d: event %s differs from its outbox row (msg id %q, tenant %q)", m.seq, m.eventID, m.msgID, m.tenant)
		}
		// Order, two ways: the source position the replicator stamped, and
		// each writer's own transaction sequence.
		disorder := false
		if m.posErr != nil {
			disorder = true
			note("stream seq %d: %v", m.seq, m.posErr)
		} else if k > 0 && msgs[k-1].posErr == nil && !msgs[k-1].pos.Less(m.pos) {
			disorder = true
			note("stream seq %d: position %s after %s", m.seq, m.pos, msgs[k-1].pos)
		}
		var p struct {
			W *int `json:"w"`
			S int  `json:"s"`
			I int  `json:"i"`
		}
		if json.Unmarshal(m.data, &p) == nil && p.W != nil {
			cur := wpos{p.S, p.I}
			if last, ok := lastOfWriter[*p.W]; ok && (cur.s < last.s || cur.s == last.s && cur.i <= last.i) {
				disorder = true
				note("stream seq %d: writer %d event (%d, %d) after (%d, %d)", m.seq, *p.W, cur.s, cur.i, last.s, last.i)
			}
			lastOfWriter[*p.W] = cur
			if *p.W < backlogWriters {
				lags = append(lags, m.ts.Sub(row.createdAt))
			}
		}
		if disorder {
			res.OutOfOrder++
		}
	}
	for _, n := range seen {
		if n > 1 {
			res.Duplicated += n - 1
		}
	}
	for _, row := range rows {
		if o.DeadLettered[row.id] != "" || o.Either[row.id] && deadIDs[row.id] {
			continue
		}
		res.Events++
		if seen[row.id] == 0 {
			res.Missing++
			note("missing: event %s (created %s, payload %.60s)", row.id, row.createdAt.Format(time.StampMicro), row.payload)
		}
	}
	if len(msgs) > 1 {
		if span := msgs[len(msgs)-1].ts.Sub(msgs[0].ts); span > 0 {
			res.Throughput = float64(len(msgs)-1) / span.Seconds()
		}
	}
	res.Lagged = len(lags)
	if len(lags) > 0 {
		slices.Sort(lags)
		res.LagP50 = lags[len(lags)*50/100]
		res.LagP99 = lags[min(len(lags)-1, len(lags)*99/100)]
		res.LagMax = lags[len(lags)-1]
	}
	return res, problems
}

func readOutbox(tb testing.TB, r *rig) []outboxRow {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs, err := r.pool.Query(ctx, "SELECT event_id::text, tenant_id, payload::text, created_at FROM qx_outbox ORDER BY id")
	if err != nil {
		tb.Fatalf("read outbox: %v", err)
	}
	defer rs.Close()
	var rows []outboxRow
	for rs.Next() {
		var row outboxRow
		if err := rs.Scan(&row.id, &row.tenant, &row.payload, &row.createdAt); err != nil {
			tb.Fatalf("read outbox: %v", err)
		}
		rows = append(rows, row)
	}
	if err := rs.Err(); err != nil {
		tb.Fatalf("read outbox: %v", err)
	}
	return rows
}

type deadLetter struct {
	eventID, pos, reason string
}

func readDeadLetters(tb testing.TB, r *rig) []deadLetter {
	tb.Helper()
	rs, err := r.pool.Query(context.Background(), `
		SELECT coalesce(row_data->>'event_id', ''), commit_lsn::text || ':' || idx, reason
		FROM qx_replication_dead_letters WHERE slot = $1 ORDER BY commit_lsn, idx`, slot)
	if err != nil {
		tb.Fatalf("read dead letters: %v", err)
	}
	defer rs.Close()
	var out []deadLetter
	for rs.Next() {
		var d deadLetter
		if err := rs.Scan(&d.eventID, &d.pos, &d.reason); err != nil {
			tb.Fatalf("read dead letters: %v", err)
		}
		out = append(out, d)
	}
	if err := rs.Err(); err != nil {
		tb.Fatalf("read dead letters: %v", err)
	}
	return out
}

// readStream reads the whole target stream, in stream order, straight from
// the server.
func readStream(tb testing.TB, url string) []storedMsg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatalf("connect nats: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		tb.Fatalf("target stream %s: %v", stream, err)
	}
	total := s.CachedInfo().State.Msgs
	out := make([]storedMsg, 0, total)
	if total == 0 {
		return out
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatalf("read target stream: %v", err)
	}
	for uint64(len(out)) < total {
		batch, err := c.Fetch(4000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			tb.Fatalf("read target stream after %d of %d: %v", len(out), total, err)
		}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				tb.Fatalf("message metadata: %v", err)
			}
			h := m.Headers()
			sm := storedMsg{seq: meta.Sequence.Stream, ts: meta.Timestamp, msgID: h.Get(replication.HeaderMsgID),
				eventID: h.Get(replication.HeaderEventID), tenant: h.Get(replication.HeaderTenantID), data: m.Data()}
			sm.pos, sm.posErr = replication.ParsePosition(h.Get(replication.HeaderSourceLSN))
			out = append(out, sm)
		}
		if err := batch.Error(); err != nil {
			tb.Fatalf("read target stream after %d of %d: %v", len(out), total, err)
		}
		if ctx.Err() != nil {
			tb.Fatalf("read target stream: %d of %d after 2m", len(out), total)
		}
	}
	return out
}
