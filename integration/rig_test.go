package integration

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qx-platform/regions/internal/testenv"
)

const (
	source = "us-east-1"
	target = "eu-west-1"
	slot   = "qx_us_east_1_to_eu_west_1"
	stream = "QX_EVENTS_US_EAST_1"
)

// rigOptions shape one scenario's pair.
type rigOptions struct {
	// PG is the source cluster; nil means the package's.
	PG *testenv.Postgres
	// MaxPayload of the NATS server (0: its default, 1 MiB).
	MaxPayload int32
	// Env overrides replicate settings (e.g. QX_REPLICATION__MAX_IN_FLIGHT).
	Env map[string]string
}

// rig is one source → target pair as an operator runs it: a fresh source
// database, a nats-server process, a proxy in front of each (the replicator
// reaches both servers only through them), and the settings of the pair.
// The load writer and the checker talk to the servers directly.
type rig struct {
	tb        testing.TB
	pg        *testenv.Postgres
	dsn       string // direct
	pool      *pgxpool.Pool
	nats      *testenv.NATS
	pgProxy   *testenv.Proxy
	natsProxy *testenv.Proxy
	env       map[string]string
	backlogs  int // backlog writers so far

	// expect says which rows must not reach the target; checked is set
	// once the final check ran.
	expect  checkOptions
	checked bool
}

func newRig(tb testing.TB, o rigOptions) *rig {
	tb.Helper()
	r := &rig{tb: tb, pg: o.PG}
	if r.pg == nil {
		r.pg = pg
	}
	r.dsn = r.pg.NewDatabase(tb)
	r.nats = testenv.StartNATSProcess(tb, testenv.NATSOptions{MaxPayload: o.MaxPayload})
	r.pgProxy = testenv.StartProxy(tb, net.JoinHostPort("127.0.0.1", strconv.Itoa(r.pg.Port)))
	r.natsProxy = testenv.StartProxy(tb, net.JoinHostPort("127.0.0.1", strconv.Itoa(r.nats.Port)))

	u, err := url.Parse(r.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	u.Host = r.pgProxy.Addr()
	r.env = map[string]string{
		"QX_REGION__NAME":                  source,
		"QX_REPLICATION__SOURCE_DSN":       u.String(),
		"QX_REPLICATION__TARGET_REGION":    target,
		"QX_REPLICATION__TARGET_NATS_URL":  "nats://" + r.natsProxy.Addr(),
		"QX_REPLICATION__DUPLICATE_WINDOW": "2s",
		"QX_REPLICATION__PUBLISH_TIMEOUT":  "2s",
		"QX_REPLICATION__SHUTDOWN_TIMEOUT": "5s",
		"QX_REPLICATION__STATUS_INTERVAL":  "500ms",
		"QX_ADMIN__ADDR":                   "127.0.0.1:0",
		"QX_LOG__FORMAT":                   "json",
		"QX_LOG__LEVEL":                    "info",
	}
	for k, v := range o.Env {
		r.env[k] = v
	}

	r.setup()
	pool, err := pgxpool.New(context.Background(), r.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	r.pool = pool
	tb.Cleanup(func() {
		// The scenario failed before its final check (a wait timed out):
		// still say what the target holds.
		if tb.Failed() && !r.checked {
			tb.Log("the scenario failed before its final check; checking now")
			record(tb, check(tb, r, r.expect))
		}
	})
	return r
}

// setup runs `qx-regions setup` and requires it to succeed.
func (r *rig) setup() {
	r.tb.Helper()
	p := startProc(r.tb, "setup", r.env, "setup")
	code, ok := p.wait(60 * time.Second)
	if !ok || code != 0 {
		r.tb.Fatalf("qx-regions setup: exit %d (finished %v):\n%s", code, ok, p.stderr.String())
	}
}

// replicate starts `qx-regions replicate` with the rig's settings and extra.
func (r *rig) replicate(name string, extra ...string) *proc {
	r.tb.Helper()
	env := r.env
	if len(extra) > 0 {
		env = make(map[string]string, len(r.env)+len(extra)/2)
		for k, v := range r.env {
			env[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			env[extra[i]] = extra[i+1]
		}
	}
	return startProc(r.tb, name, env, "replicate")
}

// stored is how many messages the target stream holds (0 while it does not
// exist or the server is down). It asks the server directly.
func (r *rig) stored() uint64 {
	nc, err := nats.Connect(r.nats.URL(), nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return 0
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	return s.CachedInfo().State.Msgs
}

// waitStored waits until the target stream holds at least n messages.
func (r *rig) waitStored(n uint64, timeout time.Duration) {
	r.tb.Helper()
	var got uint64
	testenv.Eventually(r.tb, timeout, func() bool {
		got = r.stored()
		return got >= n
	}, "target stream holds fewer than %d messages", n)
}

// committed is the number of committed outbox rows.
func (r *rig) committed() int {
	r.tb.Helper()
	var n int
	if err := r.pool.QueryRow(context.Background(), "SELECT count(*) FROM qx_outbox").Scan(&n); err != nil {
		r.tb.Fatalf("count outbox: %v", err)
	}
	return n
}

// checkpoint is the saved safe LSN of the pair ("" when none).
func (r *rig) checkpoint() string {
	r.tb.Helper()
	var lsn string
	err := r.pool.QueryRow(context.Background(),
		"SELECT coalesce((SELECT lsn::text FROM qx_replication_checkpoints WHERE name = $1), '')", slot).Scan(&lsn)
	if err != nil {
		r.tb.Fatalf("read checkpoint: %v", err)
	}
	return lsn
}

func (r *rig) String() string {
	return fmt.Sprintf("pg :%d via proxy %s, nats :%d via proxy %s", r.pg.Port, r.pgProxy.Addr(), r.nats.Port, r.natsProxy.Addr())
}
