package replication

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/checkpoint"
	"github.com/qx-platform/regions/internal/testenv"
)

// startVia runs a replicator like env.start, but connected to NATS at url
// (a proxy).
func (e *env) startVia(tb testing.TB, url string, cfg Config) *runner {
	tb.Helper()
	store := checkpoint.NewPGStore(e.pool, e.slot)
	start, err := store.Load(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	src, err := cdc.New(cdc.Config{DSN: e.dsn, Slot: e.slot, Mapping: &e.mapping, StartLSN: start, Logger: quiet(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, SlotInUseWait: 30 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	cfg.SourceRegion, cfg.TargetRegion, cfg.Mapping, cfg.Logger = source, "eu-west-1", &e.mapping, quiet()
	if cfg.MaxBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 300*time.Millisecond
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = 2 * time.Second
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	r, err := New(cfg, src, nc, store, NewPGDeadLetters(e.pool, e.slot))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &runner{r: r, src: src, nc: nc, cancel: cancel, done: make(chan error, 1), reg: reg}
	go func() { run.done <- r.Run(ctx) }()
	tb.Cleanup(func() { run.stop(tb) })
	return run
}

// The first events published into an empty stream carry no
// Nats-Expected-Last-Msg-Id. When they were stored but their acks were lost
// and the target stays unreachable longer than the duplicate window, the
// resend stores them a second time, after themselves.
func TestReview_FirstMessageResentBeyondDuplicateWindow(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	px := testenv.StartProxy(t, fmt.Sprintf("127.0.0.1:%d", n.Port))
	e := newEnv(t, pg, n)
	px.SetLatency(300 * time.Millisecond)
	r := e.startVia(t, "nats://"+px.Addr(), Config{DuplicateWindow: time.Second})

	direct, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	js, _ := jetstream.New(direct)
	msgs := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return 0
		}
		return s.CachedInfo().State.Msgs
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.Stream(ctx, stream)
		return err == nil
	}, "the replicator did not create the stream")
	time.Sleep(2 * time.Second) // the replicator has read the (empty) tail

	e.insert(t, 1, 3)
	deadline := time.Now().Add(20 * time.Second)
	for msgs() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("events not stored")
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Stored; the acks are still on their way back through the proxy: lose
	// them, and keep the target unreachable beyond the duplicate window.
	px.Blackhole()
	px.Cut()
	time.Sleep(3 * time.Second)
	px.SetLatency(0)
	px.Heal()

	e.insert(t, 1, 1)
	time.Sleep(5 * time.Second)
	r.stop(t)
	got := readStream(t, n.URL(), stream)
	for i, p := range got.pos {
		t.Logf("stream message %d: %s %s", i+1, p, got.msg[i].Headers().Get(HeaderMsgID))
	}
	got.check(t, 4)
}
