package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/internal/testenv"
	"github.com/qx-platform/regions/replication"
)

var (
	pg  *testenv.Postgres
	bin string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qx-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "qx-regions")
	out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build qx-regions: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	testenv.MainPostgres(m, &pg, func() { os.RemoveAll(dir) })
}

const secret = "s3cret-Pw-7781"

// pairEnv is the environment of a us-east-1 → eu-west-1 pair whose DSN
// carries a password (trust auth ignores it; it must never be printed).
func pairEnv(dsn, natsURL string) []string {
	withSecret := strings.Replace(dsn, "postgres@", "postgres:"+secret+"@", 1)
	return []string{
		"QX_REGION__NAME=us-east-1",
		"QX_REGION__URLS=us-east-1=https://us.example.com,eu-west-1=https://eu.example.com",
		"QX_REPLICATION__SOURCE_DSN=" + withSecret,
		"QX_REPLICATION__TARGET_REGION=eu-west-1",
		"QX_REPLICATION__TARGET_NATS_URL=" + natsURL,
		"QX_ADMIN__ADDR=127.0.0.1:0",
		"QX_LOG__FORMAT=json",
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func runBin(tb testing.TB, env []string, args ...string) result {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		tb.Fatal(err)
	}
	r := result{code, o.String(), e.String()}
	if strings.Contains(r.stdout+r.stderr, secret) {
		tb.Errorf("qx-regions %v printed the DSN's password:\n%s%s", args, r.stdout, r.stderr)
	}
	return r
}

func TestBinary_Setup(t *testing.T) {
	dsn := pg.NewDatabase(t)
	env := pairEnv(dsn, "nats://127.0.0.1:1")
	for i := 0; i < 2; i++ {
		r := runBin(t, env, "setup")
		if r.code != 0 {
			t.Fatalf("setup #%d: exit %d\n%s", i+1, r.code, r.stderr)
		}
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE tablename IN
		('qx_outbox', 'qx_tenant_regions', 'qx_replication_checkpoints', 'qx_replication_dead_letters')`).Scan(&n)
	if err != nil || n != 4 {
		t.Fatalf("tables: got %d (%v), want 4", n, err)
	}
	var slot string
	if err := conn.QueryRow(t.Context(), "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()").Scan(&slot); err != nil || slot != "qx_us_east_1_to_eu_west_1" {
		t.Fatalf("slot: got %q, %v", slot, err)
	}
	r := runBin(t, nil, "setup", "--print-sql", "--region-name", "us-east-1", "--replication-target-region", "eu-west-1")
	for _, want := range []string{"CREATE TABLE IF NOT EXISTS qx_outbox", "qx_tenant_regions", "pg_notify",
		"CREATE PUBLICATION qx_outbox_pub", "pg_create_logical_replication_slot('qx_us_east_1_to_eu_west_1', 'pgoutput')"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--print-sql lacks %q", want)
		}
	}
}

func TestBinary_BadConfig(t *testing.T) {
	base := pairEnv("postgres://postgres@127.0.0.1:1/x", "nats://127.0.0.1:1")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"missing dsn", []string{"QX_REPLICATION__SOURCE_DSN="}, nil, "QX_REPLICATION__SOURCE_DSN is required"},
		{"bad region", []string{"QX_REGION__NAME=US_EAST"}, nil, "QX_REGION__NAME"},
		{"bad urls", []string{"QX_REGION__URLS=us-east-1=ftp://x"}, nil, "QX_REGION__URLS"},
		{"bad number", []string{"QX_REPLICATION__MAX_IN_FLIGHT=lots"}, nil, "QX_REPLICATION__MAX_IN_FLIGHT"},
		{"bad duration", []string{"QX_REPLICATION__DUPLICATE_WINDOW=2 minutes"}, nil, "QX_REPLICATION__DUPLICATE_WINDOW"},
		{"flag overrides env", nil, []string{"--replication-max-in-flight", "-3"}, "--replication-max-in-flight"},
		{"same region", []string{"QX_REPLICATION__TARGET_REGION=us-east-1"}, nil, "QX_REPLICATION__TARGET_REGION"},
		{"bad log level", []string{"QX_LOG__LEVEL=loud"}, nil, "QX_LOG__LEVEL"},
		{"bad admin addr", []string{"QX_ADMIN__ADDR=9180"}, nil, "QX_ADMIN__ADDR"},
		{"bad subject template", []string{"QX_REPLICATION__SUBJECT_TEMPLATE=orders.{event_type}"}, nil, "QX_REPLICATION__SUBJECT_TEMPLATE"},
		{"nats password without user", []string{"QX_NATS__PASSWORD=" + secret}, nil, "QX_NATS__PASSWORD"},
		{"unknown flag", nil, []string{"--no-such-flag"}, "no-such-flag"},
		{"malformed dsn", []string{"QX_REPLICATION__SOURCE_DSN=postgres://postgres:" + secret + "@127.0.0.1:port/x"}, nil, "QX_REPLICATION__SOURCE_DSN: "},
		// The secret split by characters a URL password must escape: the
		// message must show neither half.
		{"dsn password with slash", []string{"QX_REPLICATION__SOURCE_DSN=postgres://postgres:" + secret[:7] + "/" + secret[7:] + "@127.0.0.1/x"}, nil, "QX_REPLICATION__SOURCE_DSN: "},
		{"dsn password with at", []string{"QX_REPLICATION__SOURCE_DSN=postgres://postgres:" + secret[:7] + "@" + secret[7:] + "@127.0.0.1/x"}, nil, "QX_REPLICATION__SOURCE_DSN: "},
		{"dsn keyword/value", []string{"QX_REPLICATION__SOURCE_DSN=host=127.0.0.1 password='" + secret}, nil, "QX_REPLICATION__SOURCE_DSN: "},
		{"dsn flag", nil, []string{"--replication-source-dsn", "postgres://postgres:" + secret[:7] + "%zz" + secret[7:] + "@127.0.0.1/x"}, "--replication-source-dsn: "},
		{"zero duration", []string{"QX_REPLICATION__SHUTDOWN_TIMEOUT=0s"}, nil, "QX_REPLICATION__SHUTDOWN_TIMEOUT"},
		{"negative duration", []string{"QX_REPLICATION__PUBLISH_TIMEOUT=-5s"}, nil, "QX_REPLICATION__PUBLISH_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := runBin(t, append(append([]string{}, base...), tc.env...), append([]string{"replicate"}, tc.args...)...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if !strings.Contains(lines[len(lines)-1], tc.want) {
				t.Fatalf("error %q does not name %q", r.stderr, tc.want)
			}
			for _, part := range []string{secret[:7], secret[7:]} {
				if strings.Contains(r.stderr, part) {
					t.Errorf("error %q shows part of the password (%q)", r.stderr, part)
				}
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("took %v: a config error must stop before any connection", time.Since(start))
			}
		})
	}
	for _, tc := range []struct{ name, env, want string }{
		{"resolver dsn", "QX_RESOLVER__DSN=postgres://postgres:" + secret + "@127.0.0.1:port/x", "QX_RESOLVER__DSN: "},
		{"source dsn as resolver dsn", "QX_REPLICATION__SOURCE_DSN=host=127.0.0.1 password=" + secret + " x", "QX_REPLICATION__SOURCE_DSN: "},
	} {
		r := runBin(t, []string{tc.env}, "resolve", "acme")
		if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("resolve, %s: exit %d, want 2 and one line naming %q:\n%s", tc.name, r.code, tc.want, r.stderr)
		}
	}
	if r := runBin(t, nil, "bogus"); r.code != 2 {
		t.Errorf("unknown command: exit %d, want 2", r.code)
	}
	r := runBin(t, nil, "replicate", "--help")
	if r.code != 0 || !strings.Contains(r.stderr, "QX_REPLICATION__TARGET_NATS_URL, --replication-target-nats-url") ||
		!strings.Contains(r.stderr, "QX_ADMIN__ADDR, --admin-addr (default 127.0.0.1:9180)") {
		t.Errorf("--help: exit %d\n%s", r.code, r.stderr)
	}
	r = runBin(t, nil, "demo", "--help")
	if r.code != 0 || !strings.Contains(r.stderr, "--events int (default 2000)") || !strings.Contains(r.stderr, "--duration duration (default 5s)") {
		t.Errorf("demo --help: exit %d\n%s", r.code, r.stderr)
	}
	if r := runBin(t, nil, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "qx-regions ") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
}

// daemon is a running `qx-regions replicate`.
type daemon struct {
	cmd    *exec.Cmd
	admin  string
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
}

func startDaemon(tb testing.TB, env []string) *daemon {
	tb.Helper()
	d := &daemon{cmd: exec.Command(bin, "replicate"), exited: make(chan struct{})}
	d.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	d.cmd.Stderr = pw
	if err := testenv.StartProcess(d.cmd); err != nil {
		tb.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.stderr.WriteString(line + "\n")
			d.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "admin server listening" {
				addr <- rec["addr"].(string)
			}
		}
	}()
	go func() { d.cmd.Wait(); pw.Close(); close(d.exited) }()
	tb.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
		if tb.Failed() {
			tb.Logf("replicator log:\n%s", d.log())
		}
		if strings.Contains(d.log(), secret) {
			tb.Errorf("the replicator logged the DSN's password")
		}
	})
	select {
	case d.admin = <-addr:
	case <-d.exited:
		tb.Fatalf("replicate exited at start:\n%s", d.log())
	case <-time.After(30 * time.Second):
		tb.Fatalf("no admin server after 30s:\n%s", d.log())
	}
	return d
}

func (d *daemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

func (d *daemon) get(tb testing.TB, path string) (int, string) {
	tb.Helper()
	resp, err := http.Get("http://" + d.admin + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBinary_Replicate(t *testing.T) {
	ctx := t.Context()
	dsn := pg.NewDatabase(t)
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	env := pairEnv(dsn, n.URL())
	if r := runBin(t, env, "setup"); r.code != 0 {
		t.Fatalf("setup: %s", r.stderr)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	insert := func(k int) {
		t.Helper()
		if _, err := conn.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload)
			SELECT 't', 'order', g::text, 'created', '{}' FROM generate_series(1, $1) g`, k); err != nil {
			t.Fatal(err)
		}
	}
	insert(500)
	// A dead letter: a NULL tenant.
	conn.Exec(ctx, "ALTER TABLE qx_outbox ALTER tenant_id DROP NOT NULL")
	conn.Exec(ctx, `INSERT INTO qx_outbox (tenant_id, aggregate_type, aggregate_id, event_type, payload) VALUES (NULL, 'order', 'x', 'created', '{}')`)

	d := startDaemon(t, env)
	if code, body := d.get(t, "/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	status := func() map[string]any {
		r := runBin(t, env, "status", "--json")
		if r.code != 0 {
			t.Fatalf("status: exit %d %s", r.code, r.stderr)
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		return st
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		st := status()
		s, _ := st["stream"].(map[string]any)
		return s != nil && s["messages"] == float64(500)
	}, "stream never reached 500 messages")
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := d.get(t, "/readyz")
		return code == 200
	}, "/readyz never ready")
	_, metrics := d.get(t, "/metrics")
	for _, want := range []string{"qx_replication_events_forwarded_total", "qx_replication_lag_bytes",
		"qx_replication_publish_latency_seconds_bucket", `qx_replication_dead_letters_total{reason="null_field"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if m := regexp.MustCompile(`qx_replication_events_forwarded_total\{[^}]*\} (\d+)`).FindStringSubmatch(metrics); m == nil || m[1] != "500" {
		t.Errorf("forwarded metric: %v", m)
	}
	st := status()
	slot := st["slot"].(map[string]any)
	if st["dead_letters"] != float64(1) || slot["active"] != true || slot["wal_status"] == "" ||
		!strings.Contains(st["source_dsn"].(string), "xxxxx") || st["stream"].(map[string]any)["duplicate_window"] != "2m0s" {
		t.Errorf("status: %v", st)
	}
	// The figures against the database's and the stream's own: once the
	// checkpoint has caught up, it, the slot's confirmed position and the
	// lag agree with what Postgres reports.
	testenv.Eventually(t, 10*time.Second, func() bool {
		st := status()
		return st["checkpoint_lsn"] == st["slot"].(map[string]any)["confirmed_flush_lsn"]
	}, "checkpoint never reached the slot's confirmed position")
	var confirmedNow string
	var retained int64
	if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots
		WHERE slot_name = 'qx_us_east_1_to_eu_west_1'`).Scan(&confirmedNow, &retained); err != nil {
		t.Fatal(err)
	}
	st = status()
	slot = st["slot"].(map[string]any)
	stream := st["stream"].(map[string]any)
	if slot["confirmed_flush_lsn"] != confirmedNow || st["checkpoint_lsn"] != confirmedNow {
		t.Errorf("status: confirmed %v, checkpoint %v; the slot says %s", slot["confirmed_flush_lsn"], st["checkpoint_lsn"], confirmedNow)
	}
	if rw := slot["retained_wal_bytes"].(float64); rw <= 0 || rw > float64(retained)+16<<20 {
		t.Errorf("status: retained WAL %v bytes, Postgres says about %d", rw, retained)
	}
	if stream["messages"] != float64(500) || stream["last_sequence"] != float64(500) || stream["first_sequence"] != float64(1) {
		t.Errorf("status stream: %v, want 500 messages, sequences 1..500", stream)
	}
	if lag := st["lag_bytes"].(float64); lag < 0 || lag > 16<<20 {
		t.Errorf("status: lag %v bytes on an idle outbox", lag)
	}
	if r := runBin(t, env, "status"); r.code != 0 || !strings.Contains(r.stdout, "dead letters") {
		t.Errorf("status table: %d\n%s", r.code, r.stdout)
	}

	// SIGTERM: exit 0 with the checkpoint saved.
	insert(2000)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("replicate did not exit within 30s of SIGTERM")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
	var saved, confirmed string
	if err := conn.QueryRow(ctx, `SELECT c.lsn::text, s.confirmed_flush_lsn::text FROM qx_replication_checkpoints c
		JOIN pg_replication_slots s ON s.slot_name = c.name`).Scan(&saved, &confirmed); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	last := status()["stream"].(map[string]any)["last_position"].(string)
	lastPos, err := replication.ParsePosition(last)
	if err != nil {
		t.Fatal(err)
	}
	savedLSN, _ := cdc.ParseLSN(saved)
	confirmedLSN, _ := cdc.ParseLSN(confirmed)
	// The 2,000 events are one transaction: the checkpoint covers it when
	// all of it was stored before the drain ended, and never passes what
	// the slot was told.
	if (lastPos.Index == 1999 && savedLSN <= lastPos.LSN) || savedLSN > confirmedLSN {
		t.Errorf("checkpoint %s must cover the last fully stored transaction (last event %s) and not pass the slot's confirmed %s", saved, last, confirmed)
	}

	// A restart carries on: 2,500 events exactly once.
	d2 := startDaemon(t, env)
	testenv.Eventually(t, 30*time.Second, func() bool {
		s, _ := status()["stream"].(map[string]any)
		return s != nil && s["messages"] == float64(2500)
	}, "stream never reached 2500")
	d2.cmd.Process.Signal(syscall.SIGTERM)
	<-d2.exited
	s := status()["stream"].(map[string]any)
	if s["messages"] != float64(2500) {
		t.Fatalf("after restart: %v messages, want 2500", s["messages"])
	}
}

// TestBinary_ReplicateSourceDown: while the source database is
// unreachable the admin server answers (live, not ready) and SIGTERM
// still ends the process at once with status 0.
func TestBinary_ReplicateSourceDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	d := startDaemon(t, pairEnv("postgres://postgres@"+closed+"/x?connect_timeout=2", "nats://127.0.0.1:1"))
	testenv.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(d.log(), "source database not reachable")
	}, "no log line about the unreachable source")
	if code, body := d.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz: got %d %s, want 200", code, body)
	}
	for i := 0; i < 3; i++ { // across retries
		code, body := d.get(t, "/readyz")
		var rd struct {
			Ready           bool     `json:"ready"`
			Starting        bool     `json:"starting"`
			SourceConnected bool     `json:"source_connected"`
			Problems        []string `json:"problems"`
		}
		if err := json.Unmarshal([]byte(body), &rd); err != nil {
			t.Fatalf("/readyz body %q: %v", body, err)
		}
		if code != 503 || rd.Ready || !rd.Starting || rd.SourceConnected || !slices.Contains(rd.Problems, "source not connected") {
			t.Fatalf("/readyz: got %d %s, want 503, starting, source not connected", code, body)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if code, _ := d.get(t, "/metrics"); code != 200 {
		t.Errorf("/metrics: got %d, want 200", code)
	}
	if n := strings.Count(d.log(), "source database not reachable"); n != 1 {
		t.Errorf("the unreachable source was logged %d times, want once (first failure only)", n)
	}
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("replicate did not exit within 5s of SIGTERM while the source was down")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0\n%s", code, d.log())
	}
	// (A -race binary sleeps 1s at exit: the race detector's atexit_sleep_ms.)
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

func TestBinary_Demo(t *testing.T) {
	r := runBin(t, nil, "demo", "--events", "2000", "--duration", "2s")
	if r.code != 0 || !strings.Contains(r.stdout, "every event arrived exactly once") {
		t.Fatalf("demo: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Count(r.stdout, "missing 0, duplicated 0, out of order 0") != 2 {
		t.Fatalf("demo verification:\n%s", r.stdout)
	}
}

// TestBinary_DemoInterrupted: Ctrl-C while events stream ends the demo at
// once with status 0, its cleanup done and no server left answering.
func TestBinary_DemoInterrupted(t *testing.T) {
	cmd := exec.Command(bin, "demo", "--events", "50000", "--duration", "60s")
	var o, e testenv.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	testenv.Eventually(t, 60*time.Second, func() bool { return strings.Contains(o.String(), "replicated") },
		"demo shows no progress")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo after Ctrl-C: %v\n%s\n%s", err, o.String(), e.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("demo did not exit within 30s of Ctrl-C\n%s", o.String())
	}
	out := o.String()
	if !strings.Contains(out, "interrupted") || !strings.Contains(out, "cleaned up") {
		t.Fatalf("demo output after Ctrl-C:\n%s\n%s", out, e.String())
	}
	// Logged errors (the demo logs warnings and up) would mean a
	// replicator saw its servers vanish.
	if strings.Contains(e.String(), "level=ERROR") || strings.Contains(e.String(), `"level":"ERROR"`) {
		t.Errorf("errors logged on Ctrl-C:\n%s", e.String())
	}
	for _, m := range regexp.MustCompile(`postgres 127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(out, -1) {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+m[1], time.Second); err == nil {
			c.Close()
			t.Errorf("postgres on port %s still answers after the demo exited", m[1])
		}
	}
}
