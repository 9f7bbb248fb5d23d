package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `goos: linux
pkg: github.com/qx-platform/regions/replication
BenchmarkReplicator_CatchUp/backlog=200k
    bench_test.go:1: catch-up of 200000: 3.3s
BenchmarkReplicator_CatchUp/backlog=200k-2   1  7144404417 ns/op  116085 L1-events/s  97244 L2-events/s  60504 events/s  0.6222 x_min_L1_L2
BenchmarkReplicator_CatchUp/backlog=200k-2   1  8503728924 ns/op  105990 L1-events/s  75864 L2-events/s  51106 events/s  0.6736 x_min_L1_L2
BenchmarkReplicator_CatchUp/backlog=200k-2   1  8503728924 ns/op  105990 L1-events/s  75864 L2-events/s  55000 events/s  0.7000 x_min_L1_L2
PASS
pkg: github.com/qx-platform/regions/router
BenchmarkMiddleware_Local-2   4416930   50.92 ns/op   0 B/op   0 allocs/op
ok  	github.com/qx-platform/regions/router	0.600s
`

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(strings.NewReader(sample), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"replication Replicator_CatchUp/backlog=200k  events/s  55000  51106  60504  3",
		"router Middleware_Local  ns/op  50.9",
		"catch-up: 55000 events/s = 0.67x min(L1, L2)\n",
	} {
		if !strings.Contains(strings.Join(strings.Fields(got), "  "), strings.Join(strings.Fields(want), "  ")) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "backlog=200k  ns/op") || strings.Contains(strings.Join(strings.Fields(got), " "), "backlog=200k ns/op") {
		t.Errorf("ns/op of a benchmark with its own metrics is shown:\n%s", got)
	}
	if !strings.HasSuffix(got, "min(L1, L2)\n") {
		t.Errorf("output does not end with the catch-up line:\n%s", got)
	}
}

func TestRun_Failures(t *testing.T) {
	for name, in := range map[string]string{
		"failed":  sample + "--- FAIL: BenchmarkReplicator_Steady\nFAIL\n",
		"missing": "pkg: x/router\nBenchmarkMiddleware_Local-2   10   50.92 ns/op\n",
		"empty":   "",
	} {
		if err := run(strings.NewReader(in), &bytes.Buffer{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
