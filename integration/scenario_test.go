package integration

import (
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

// newRand returns the scenario's random source, logging its seed;
// QX_FAULT_SEED replays a run.
func newRand(tb testing.TB) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("QX_FAULT_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	tb.Logf("random seed %d (QX_FAULT_SEED replays it)", seed)
	return rand.New(rand.NewPCG(seed, seed>>32|1))
}

// between is a random duration in [lo, hi).
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// waitProgress waits until the target has stored more than it holds now:
// the replicator is streaming.
func waitProgress(tb testing.TB, r *rig, timeout time.Duration) {
	tb.Helper()
	r.waitStored(r.stored()+1, timeout)
}

// waitProgressOrCaughtUp is waitProgress for a load with a Total: once the
// writer is done and the target holds every committed event there is no
// progress to wait for.
func waitProgressOrCaughtUp(tb testing.TB, r *rig, l *load, timeout time.Duration) {
	tb.Helper()
	before := r.stored()
	testenv.Eventually(tb, timeout, func() bool {
		n := r.stored()
		if n > before {
			return true
		}
		select {
		case <-l.done:
			return n >= uint64(r.committed())
		default:
			return false
		}
	}, "the replicator forwards nothing (%d stored)", before)
}

// stopGracefully sends SIGTERM and requires exit status 0 within timeout.
func stopGracefully(tb testing.TB, p *proc, timeout time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	p.signal(syscall.SIGTERM)
	code, ok := p.wait(timeout)
	took := time.Since(start)
	if !ok {
		tb.Fatalf("%s did not exit within %v of SIGTERM", p.name, timeout)
	}
	if code != 0 {
		tb.Fatalf("%s exited with status %d on SIGTERM, want 0", p.name, code)
	}
	return took
}

// finish waits until the target holds every committed event that must
// reach it (all but r.expect's), stops the replicator with SIGTERM, checks
// the stream against the outbox and records the result for the summary
// table.
func finish(tb testing.TB, r *rig, p *proc) result {
	tb.Helper()
	want := r.committed() - len(r.expect.DeadLettered) - len(r.expect.Either)
	r.waitStored(uint64(want), scale(90*time.Second, 5*time.Minute))
	if p != nil {
		stopGracefully(tb, p, 30*time.Second)
	}
	r.checked = true
	res := check(tb, r, r.expect)
	record(tb, res)
	return res
}
