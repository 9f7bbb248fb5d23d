package replication

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

// A backlog found at start is one "catching up" line and one "caught up"
// line, not a line per event or per batch.
func TestReplicator_CatchUpLog(t *testing.T) {
	oldBehind, oldCaught := behindAfter, caughtUpUnder
	behindAfter, caughtUpUnder = 300*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { behindAfter, caughtUpUnder = oldBehind, oldCaught })

	n := testenv.StartNATS(t, testenv.NATSOptions{})
	e := newEnv(t, pg, n)
	e.insert(t, 20, 100)
	old := time.Now()
	testenv.Eventually(t, 5*time.Second, func() bool { return time.Since(old) > 2*behindAfter })

	var logs testenv.Buffer
	e.start(t, options{logger: slog.New(slog.NewTextHandler(&logs, nil))})
	waitStream(t, n.URL(), stream, 2000, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "caught up") },
		"no \"caught up\" line after the backlog:\n%s", &logs)
	out := logs.String()
	if got := strings.Count(out, "msg=\"catching up\""); got != 1 {
		t.Errorf("%d \"catching up\" lines, want 1:\n%s", got, out)
	}
	if got := strings.Count(out, "msg=\"caught up\""); got != 1 {
		t.Errorf("%d \"caught up\" lines, want 1:\n%s", got, out)
	}
	// It counts the events forwarded since the "catching up" line.
	var got int
	if i := strings.Index(out, "events="); i < 0 {
		t.Errorf("the caught-up line has no event count:\n%s", out)
	} else if fmt.Sscanf(out[i:], "events=%d", &got); got <= 0 || got > 2000 {
		t.Errorf("caught up after %d events, want 1..2000:\n%s", got, out)
	}
}
