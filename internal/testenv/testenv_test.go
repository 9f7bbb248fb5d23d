package testenv

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

var pg *Postgres

func TestMain(m *testing.M) { MainPostgres(m, &pg) }

func count(tb testing.TB, dsn string) int {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		tb.Fatalf("count: %v", err)
	}
	return n
}

func TestPostgres(t *testing.T) {
	ctx := t.Context()
	t.Run("logical wal level and fresh databases", func(t *testing.T) {
		dsn := pg.NewDatabase(t)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var level string
		if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
			t.Fatal(err)
		}
		if level != "logical" {
			t.Fatalf("wal_level = %q, want logical", level)
		}
		if other := pg.NewDatabase(t); other == dsn {
			t.Fatalf("NewDatabase returned the same DSN twice")
		}
	})

	t.Run("restart and kill keep committed data", func(t *testing.T) {
		p, err := StartPostgres(PGOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.Exec(ctx, "postgres", "CREATE TABLE t (x int); INSERT INTO t VALUES (1),(2)"); err != nil {
			t.Fatal(err)
		}
		port := p.Port
		for _, stop := range []struct {
			name string
			fn   func() error
		}{{"fast", p.StopFast}, {"immediate", p.StopImmediate}, {"kill", p.Kill}} {
			pid := p.PID()
			if err := stop.fn(); err != nil {
				t.Fatalf("%s: %v", stop.name, err)
			}
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Fatalf("%s: postmaster %d still alive", stop.name, pid)
			}
			if err := p.Start(); err != nil {
				t.Fatalf("start after %s: %v", stop.name, err)
			}
			if p.Port != port {
				t.Fatalf("port changed: got %d, want %d", p.Port, port)
			}
			if got := count(t, p.DSN("postgres")); got != 2 {
				t.Fatalf("after %s: got %d rows, want 2", stop.name, got)
			}
		}
	})

	t.Run("close removes everything", func(t *testing.T) {
		p, err := StartPostgres(PGOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pid := p.PID()
		p.Close()
		if _, err := os.Stat(p.Dir); !os.IsNotExist(err) {
			t.Fatalf("dir %s still exists", p.Dir)
		}
		Eventually(t, 5*time.Second, func() bool { return errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH) },
			"postgres process group %d still alive", pid)
	})
}

func publishAndCount(tb testing.TB, url string, publish int) uint64 {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := js.StreamInfo("T"); err != nil {
		if _, err := js.AddStream(&nats.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < publish; i++ {
		if _, err := js.Publish("t.x", []byte("hi")); err != nil {
			tb.Fatal(err)
		}
	}
	si, err := js.StreamInfo("T")
	if err != nil {
		tb.Fatal(err)
	}
	return si.State.Msgs
}

func TestNATS(t *testing.T) {
	for _, kind := range []struct {
		name  string
		start func(testing.TB, NATSOptions) *NATS
	}{{"embedded", StartNATS}, {"process", StartNATSProcess}} {
		t.Run(kind.name, func(t *testing.T) {
			n := kind.start(t, NATSOptions{})
			if got := publishAndCount(t, n.URL(), 3); got != 3 {
				t.Fatalf("got %d msgs, want 3", got)
			}
			if err := n.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := n.Start(); err != nil {
				t.Fatal(err)
			}
			if got := publishAndCount(t, n.URL(), 1); got != 4 {
				t.Fatalf("after restart: got %d msgs, want 4", got)
			}
			if kind.name == "process" {
				pid := n.PID()
				if err := n.Kill(); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Fatalf("nats-server %d still alive after kill", pid)
				}
				if err := n.Start(); err != nil {
					t.Fatal(err)
				}
				if got := publishAndCount(t, n.URL(), 0); got != 4 {
					t.Fatalf("after kill: got %d msgs, want 4", got)
				}
			}
		})
	}
}

func TestStartRegions(t *testing.T) {
	start := time.Now()
	rs := StartRegions(t, "us-east-1", "eu-west-1")
	t.Logf("two regions (2 Postgres + 2 NATS) started in %v", time.Since(start))
	for _, r := range rs {
		if err := r.PG.Exec(t.Context(), "postgres", "CREATE TABLE t (x int)"); err != nil {
			t.Fatalf("%s postgres: %v", r.Name, err)
		}
		if got := publishAndCount(t, r.NATS.URL(), 1); got != 1 {
			t.Fatalf("%s nats: got %d msgs, want 1", r.Name, got)
		}
	}
	if rs[0].PG.Port == rs[1].PG.Port || rs[0].NATS.Port == rs[1].NATS.Port {
		t.Fatalf("regions share a port")
	}
}
