package integration

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/replication"
)

// counts prints a result's fields (result's String is for the log).
type counts result

// The checker must see each kind of fault, or a green suite means nothing.
func TestCompare(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tenant := "tenant-1"
	var rows []outboxRow
	var good []storedMsg
	// Two writers, two transactions each of two events.
	for n := 0; n < 8; n++ {
		w, s, i := n%2, n/4, n/2%2
		id := fmt.Sprintf("00000000-0000-0000-0000-%012d", n)
		payload := fmt.Sprintf(`{"i": %d, "s": %d, "w": %d}`, i, s, w)
		rows = append(rows, outboxRow{id: id, tenant: &tenant, payload: payload, createdAt: t0})
		good = append(good, storedMsg{seq: uint64(n + 1), ts: t0.Add(time.Duration(n+1) * time.Millisecond),
			msgID: source + ":" + id, eventID: id, tenant: tenant, data: []byte(payload),
			pos: replication.Position{LSN: cdc.LSN(100 * (n/2 + 1)), Index: n % 2}})
	}
	// In the writers' order, as the positions say.
	slices.SortStableFunc(good, func(a, b storedMsg) int {
		if a.pos.Less(b.pos) {
			return -1
		}
		return 1
	})
	edit := func(f func(m []storedMsg) []storedMsg) []storedMsg { return f(slices.Clone(good)) }
	for _, tc := range []struct {
		name string
		msgs []storedMsg
		dead []deadLetter
		o    checkOptions
		want result
	}{
		{name: "all there", msgs: good},
		{name: "missing", msgs: edit(func(m []storedMsg) []storedMsg { return slices.Delete(m, 3, 4) }),
			want: result{Missing: 1}},
		{name: "duplicated", msgs: edit(func(m []storedMsg) []storedMsg {
			d := m[2]
			d.pos.Index += 10 // a resend stamped anew would still be a duplicate
			return slices.Insert(m, 3, d)
		}), want: result{Duplicated: 1, OutOfOrder: 2}}, // it breaks the order too: the writer's, then the positions'
		{name: "swapped", msgs: edit(func(m []storedMsg) []storedMsg { m[4], m[5] = m[5], m[4]; return m }),
			want: result{OutOfOrder: 1}},
		{name: "writer order only", msgs: edit(func(m []storedMsg) []storedMsg {
			// Positions in order, but a writer's transactions reversed.
			m[0].data, m[6].data = m[6].data, m[0].data
			m[0].eventID, m[6].eventID = m[6].eventID, m[0].eventID
			m[0].msgID, m[6].msgID = m[6].msgID, m[0].msgID
			return m
		}), want: result{OutOfOrder: 2}},
		{name: "rolled back event", msgs: edit(func(m []storedMsg) []storedMsg {
			x := m[7]
			x.eventID, x.msgID, x.pos.Index = "rolled-back", source+":rolled-back", 5
			return append(m, x)
		}), want: result{Unexpected: 1}},
		{name: "body changed", msgs: edit(func(m []storedMsg) []storedMsg { m[1].data = []byte(`{}`); return m }),
			want: result{Corrupt: 1}},
		{name: "dead letter expected, absent", msgs: good[1:], o: checkOptions{DeadLettered: map[string]string{good[0].eventID: "max_payload"}},
			want: result{BadDeadLetters: 1}},
		{name: "dead letter present", msgs: good[1:], dead: []deadLetter{{eventID: good[0].eventID, reason: "message exceeds the target's max_payload"}},
			o: checkOptions{DeadLettered: map[string]string{good[0].eventID: "max_payload"}}, want: result{DeadLetters: 1}},
		{name: "dead letter and stored", msgs: good, dead: []deadLetter{{eventID: good[0].eventID, reason: "too large"}},
			o: checkOptions{Either: map[string]bool{good[0].eventID: true}}, want: result{Unexpected: 1, DeadLetters: 1}},
		{name: "unexpected dead letter", msgs: good[1:], dead: []deadLetter{{eventID: good[0].eventID, reason: "x"}},
			want: result{BadDeadLetters: 1, DeadLetters: 1, Missing: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := compare(rows, tc.msgs, tc.dead, tc.o)
			g := result{Missing: got.Missing, Duplicated: got.Duplicated, OutOfOrder: got.OutOfOrder, Unexpected: got.Unexpected,
				Corrupt: got.Corrupt, DeadLetters: got.DeadLetters, BadDeadLetters: got.BadDeadLetters}
			if g != tc.want {
				t.Errorf("got %+v, want %+v; problems: %q", counts(g), counts(tc.want), problems)
			}
			if tc.want.ok() != (len(problems) == 0) {
				t.Errorf("problems %q, want none exactly when the result is ok", problems)
			}
		})
	}
}
