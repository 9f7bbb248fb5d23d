package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

var (
	// pg is the package's Postgres cluster; scenarios that restart Postgres
	// start their own.
	pg *testenv.Postgres
	// binary is the qx-regions binary built once for the whole package.
	binary string
	// soak selects the long versions of the scenarios (QX_SOAK=1).
	soak = os.Getenv("QX_SOAK") == "1"
)

// TestMain starts the cluster and builds the binary, runs the scenarios and
// prints their summary table. It does what testenv.MainPostgres does, plus
// the binary and the table, which must happen after m.Run and before exit.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "qx-fault-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "qx-regions")
	build := exec.Command("go", "build", "-o", binary, "./cmd/qx-regions")
	build.Dir = testenv.ModuleRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: go build ./cmd/qx-regions: %v\n%s", err, out)
		return 1
	}
	// The nats-server binary is built on first use; build it now so the
	// first scenario's timings do not include a compile.
	if _, err := testenv.NATSServerBinary(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	p, err := testenv.StartPostgres(testenv.PGOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer p.Close()
	pg = p
	code := m.Run()
	printSummary(os.Stdout)
	return code
}

// scale picks the short or the soak value of a scenario parameter.
func scale[T any](short, long T) T {
	if soak {
		return long
	}
	return short
}

// summaries collects every scenario's result for the table.
var summaries struct {
	sync.Mutex
	rows []summary
}

type summary struct {
	scenario string
	r        result
	failed   bool
}

func record(tb testing.TB, r result) {
	summaries.Lock()
	defer summaries.Unlock()
	summaries.rows = append(summaries.rows, summary{scenario: tb.Name(), r: r, failed: tb.Failed()})
}

func printSummary(w io.Writer) {
	summaries.Lock()
	defer summaries.Unlock()
	if len(summaries.rows) == 0 {
		return
	}
	rows := summaries.rows // in the order the scenarios ran: source order
	mode := "short"
	if soak {
		mode = "soak"
	}
	fmt.Fprintf(w, "\nfault suite (%s), %s\n\n", mode, time.Now().UTC().Format(time.DateOnly))
	fmt.Fprintln(w, "| scenario | events | missing | duplicated | out of order | dead letters | throughput | p99 lag |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range rows {
		name := strings.TrimPrefix(s.scenario, "TestFault_")
		if n := scenarioNumber[name]; n > 0 {
			name = fmt.Sprintf("%d. %s", n, name)
		}
		if s.failed {
			name += " (FAILED)"
		}
		lag := "n/a"
		if s.r.Lagged > 0 {
			lag = fmtDur(s.r.LagP99)
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %.0f ev/s | %s |\n", name, s.r.Events, s.r.Missing,
			s.r.Duplicated, s.r.OutOfOrder, s.r.DeadLetters, s.r.Throughput, lag)
	}
	fmt.Fprintln(w)
}

// scenarioNumber is each scenario's number in issue 8.
var scenarioNumber = map[string]int{
	"ReplicatorKill": 1, "NATSKill": 2, "PostgresRestart": 3, "NATSPartition": 4, "PostgresPartition": 5,
	"NATSLatency": 6, "BadInput": 7, "SecondReplicator": 8, "SIGTERMBacklog": 9,
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}

// replaceRecord replaces the scenario's recorded result.
func replaceRecord(tb testing.TB, r result) {
	summaries.Lock()
	defer summaries.Unlock()
	for i := range summaries.rows {
		if summaries.rows[i].scenario == tb.Name() {
			summaries.rows[i].r = r
			summaries.rows[i].failed = tb.Failed()
		}
	}
}
