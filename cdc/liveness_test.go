package cdc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

// A partition that keeps the TCP session open (no reset, no FIN) must not
// leave the stream "connected" forever: an idle walsender that has every
// position confirmed sends nothing, so the stream asks for replies and
// gives the connection up when none come.
func TestStream_HalfOpenConnection(t *testing.T) {
	f := newFixture(t, pg)
	proxy := testenv.StartProxy(t, "127.0.0.1:"+portOf(t, f.dsn))
	dsn := strings.Replace(f.dsn, "127.0.0.1:"+portOf(t, f.dsn), proxy.Addr(), 1)
	r := startStream(t, Config{DSN: dsn, Slot: f.slot, StatusInterval: 200 * time.Millisecond,
		ReceiveTimeout: 2 * time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	f.insertTx(t, 3, "t")
	r.collect(t, 1, true)
	testenv.Eventually(t, 10*time.Second, r.s.Connected)

	proxy.Blackhole()
	testenv.Eventually(t, 10*time.Second, func() bool { return !r.s.Connected() },
		"stream still connected through a partition")
	proxy.Heal()
	testenv.Eventually(t, 30*time.Second, r.s.Connected, "stream did not reconnect after the partition healed")

	f.insertTx(t, 2, "t")
	evs, _ := r.collect(t, 1, true)
	if len(evs) != 2 {
		t.Fatalf("got %d events after healing, want 2", len(evs))
	}
}

// An idle stream stays connected: asking for replies keeps a silent but
// healthy walsender talking.
func TestStream_IdleStaysConnected(t *testing.T) {
	f := newFixture(t, pg)
	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot, StatusInterval: 100 * time.Millisecond,
		ReceiveTimeout: time.Second})
	testenv.Eventually(t, 10*time.Second, r.s.Connected)
	for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !r.s.Connected() {
			t.Fatal("an idle, healthy stream reconnected: replies were not requested")
		}
	}
}

// A mapped column that the table lacks, or one column mapped twice, stops
// the stream at start, before any outbox row arrives.
func TestStream_MappingCheckedAtStart(t *testing.T) {
	f := newFixture(t, pg)
	for name, edit := range map[string]func(*Mapping){
		"missing column": func(m *Mapping) { m.Columns[FieldAggregateID] = "no_such_column" },
		"wrong type":     func(m *Mapping) { m.Columns[FieldCreatedAt] = "tenant_id" },
		"mapped twice":   func(m *Mapping) { m.Columns[FieldAggregateID] = "tenant_id" },
	} {
		t.Run(name, func(t *testing.T) {
			m := DefaultMapping()
			edit(&m)
			r := startStream(t, Config{DSN: f.dsn, Slot: f.slot, Mapping: &m})
			select {
			case err := <-r.errc:
				r.errc <- err
				if !errors.Is(err, ErrOutboxTable) {
					t.Fatalf("Run: %v, want ErrOutboxTable", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("stream started with a mapping that does not match the table")
			}
		})
	}
}

// portOf is the port of a harness DSN.
func portOf(tb testing.TB, dsn string) string {
	tb.Helper()
	rest, ok := strings.CutPrefix(dsn[strings.Index(dsn, "@")+1:], "127.0.0.1:")
	if !ok {
		tb.Fatalf("DSN %s is not on 127.0.0.1", dsn)
	}
	return rest[:strings.IndexAny(rest, "/?")]
}

// Without a ReceiveTimeout the silence limit follows the server's
// wal_sender_timeout (60s by default): twice it.
func TestStream_SilenceLimitFollowsServer(t *testing.T) {
	f := newFixture(t, pg)
	r := startStream(t, Config{DSN: f.dsn, Slot: f.slot})
	f.insertTx(t, 1, "t")
	r.collect(t, 1, true) // streaming: the session has read the setting
	r.stop()
	if got, want := r.s.receiveTimeout, 2*time.Minute; got != want {
		t.Fatalf("silence limit %v, want %v (twice wal_sender_timeout)", got, want)
	}
}
