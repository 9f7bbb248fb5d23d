// Package testenv starts the real servers that tests run against: PostgreSQL
// clusters with wal_level=logical (from the machine's server binaries) and
// NATS JetStream servers (embedded in the test process, or as an OS process
// for tests that must kill it), on free loopback ports, in temp dirs that are
// removed afterwards.
//
// One Postgres cluster serves a whole test package (started in TestMain with
// [StartPostgres] or [MainPostgres]); each test takes a fresh database from it
// with [Postgres.NewDatabase].
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres means no PostgreSQL server binaries were found.
var ErrNoPostgres = errors.New("PostgreSQL server binaries not found: install them with `apt-get install postgresql` or set QX_TEST_PG_BIN to the directory holding initdb and postgres")

// PGBinDir finds the directory holding initdb and postgres: QX_TEST_PG_BIN,
// then PATH, then the newest /usr/lib/postgresql/*/bin.
func PGBinDir() (string, error) {
	if d := os.Getenv("QX_TEST_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("QX_TEST_PG_BIN=%s: no initdb there", d)
		}
		return d, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			// Follow links (/usr/local/bin/initdb → /usr/lib/postgresql/15/bin)
			// so pg_recvlogical and the other tools are found beside it.
			if real, err := filepath.EvalSymlinks(p); err == nil {
				p = real
			}
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Postgres is one PostgreSQL cluster run by the test process.
type Postgres struct {
	BinDir string
	Dir    string // temp dir holding data, socket and log
	Port   int

	cred *syscall.Credential
	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
	dbs  atomic.Int64
}

// PGOptions tunes a cluster; the zero value is what most tests want.
type PGOptions struct {
	// Settings are extra `-c name=value` server settings.
	Settings map[string]string
}

// StartPostgres runs initdb in a new temp dir and starts the server on a free
// port of 127.0.0.1. When the process runs as root, the cluster is owned by
// and run as the postgres OS user (the server refuses to run as root).
func StartPostgres(opts PGOptions) (*Postgres, error) {
	bin, err := PGBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "qx-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{BinDir: bin, Dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs the postgres OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", p.dataDir(), "-U", "postgres",
		"--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	initdb.Dir = dir
	out, err := runAs(initdb, p.cred)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	conf := map[string]string{
		"listen_addresses":                    "'127.0.0.1'",
		"unix_socket_directories":             "'" + dir + "'",
		"wal_level":                           "logical",
		"max_replication_slots":               "32",
		"max_wal_senders":                     "32",
		"max_connections":                     "200",
		"fsync":                               "off", // the OS never crashes under a test; process crashes keep the page cache
		"full_page_writes":                    "off",
		"max_wal_size":                        "1GB",
		"wal_sender_timeout":                  "60s",
		"logging_collector":                   "off",
		"log_min_messages":                    "warning",
		"shared_buffers":                      "64MB",
		"wal_keep_size":                       "0",
		"checkpoint_timeout":                  "30s",
		"log_replication_commands":            "off",
		"idle_in_transaction_session_timeout": "0",
	}
	for k, v := range opts.Settings {
		conf[k] = v
	}
	var sb strings.Builder
	for _, k := range sortedKeys(conf) {
		fmt.Fprintf(&sb, "%s = %s\n", k, conf[k])
	}
	if err := appendFile(filepath.Join(p.dataDir(), "postgresql.conf"), sb.String()); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := appendFile(filepath.Join(p.dataDir(), "pg_hba.conf"),
		"host replication all 127.0.0.1/32 trust\nlocal replication all trust\n"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p.Port = port
	if err := p.Start(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// MainPostgres starts the package's cluster for TestMain, runs the tests and
// removes the cluster, then runs cleanups (it exits the process, so a
// TestMain's own defers would never run). It exits with the tests' status.
//
//	func TestMain(m *testing.M) { testenv.MainPostgres(m, &pg) }
func MainPostgres(m *testing.M, pg **Postgres, cleanups ...func()) {
	p, err := StartPostgres(PGOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		for _, c := range cleanups {
			c()
		}
		os.Exit(1)
	}
	*pg = p
	code := m.Run()
	p.Close()
	for _, c := range cleanups {
		c()
	}
	os.Exit(code)
}

func (p *Postgres) dataDir() string { return filepath.Join(p.Dir, "data") }
func (p *Postgres) logFile() string { return filepath.Join(p.Dir, "postgres.log") }

// Start starts the server (again) on the same port and data dir and waits
// until it accepts connections.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return errors.New("postgres already running")
	}
	logf, err := os.OpenFile(p.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(p.BinDir, "postgres"), "-D", p.dataDir(), "-p", strconv.Itoa(p.Port))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := startChild(cmd, p.cred); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	p.cmd = cmd
	exit := make(chan struct{})
	p.exit = exit
	go func() { cmd.Wait(); logf.Close(); close(exit) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exit:
			p.cmd = nil
			return fmt.Errorf("postgres exited at start:\n%s", p.LogTail(20))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, p.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after 30s: %v\n%s", err, p.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StopFast stops the server with SIGINT (fast shutdown: sessions are
// terminated, a checkpoint is written).
func (p *Postgres) StopFast() error { return p.stop(syscall.SIGINT, false) }

// StopImmediate stops the server with SIGQUIT (immediate shutdown: no
// checkpoint, crash recovery on the next start).
func (p *Postgres) StopImmediate() error { return p.stop(syscall.SIGQUIT, false) }

// Kill sends SIGKILL to the postmaster and all its children: a crash.
func (p *Postgres) Kill() error { return p.stop(syscall.SIGKILL, true) }

// Restart stops the server fast and starts it again.
func (p *Postgres) Restart() error {
	if err := p.StopFast(); err != nil {
		return err
	}
	return p.Start()
}

func (p *Postgres) stop(sig syscall.Signal, group bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	var err error
	if group {
		err = killGroup(p.cmd.Process, sig)
	} else {
		err = p.cmd.Process.Signal(sig)
	}
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	killed := false
	select {
	case <-p.exit:
	case <-time.After(60 * time.Second):
		killGroup(p.cmd.Process, syscall.SIGKILL)
		<-p.exit
		killed = true
	}
	if group || killed || sig == syscall.SIGQUIT {
		// Children of a killed postmaster exit when they notice. They are
		// not in its process group (each backend calls setsid), so find
		// them by their working directory, the data dir: a restart must
		// not find them holding the shared memory.
		waitGroupGone(p.cmd.Process.Pid, 10*time.Second)
		waitDirUnused(p.dataDir(), group, 10*time.Second)
	}
	p.cmd = nil
	return nil
}

// waitDirUnused waits until no live process has dir as its working
// directory, sending them SIGKILL first when kill is set (and at the end,
// whatever is left).
func waitDirUnused(dir string, kill bool, timeout time.Duration) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	deadline := time.Now().Add(timeout)
	for {
		pids := processesIn(dir)
		if len(pids) == 0 {
			return
		}
		if kill || time.Now().After(deadline) {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if time.Now().After(deadline.Add(time.Second)) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processesIn lists the live processes whose working directory is dir
// (a zombie has none).
func processesIn(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitGroupGone(pgid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// Running reports whether the server process is up.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// PID is the postmaster's process id, 0 when stopped.
func (p *Postgres) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Close stops the server immediately and removes its temp dir.
func (p *Postgres) Close() {
	p.stop(syscall.SIGQUIT, false)
	os.RemoveAll(p.Dir)
}

// DSN is a URL for database db as the superuser postgres over TCP.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// LogTail returns the last n lines of the server log.
func (p *Postgres) LogTail(n int) string {
	b, _ := os.ReadFile(p.logFile())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Exec runs SQL statements in database db.
func (p *Postgres) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, p.DSN(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// NewDatabase creates a fresh database for one test and returns its DSN. The
// database (and any replication slot in it) is dropped when the test ends.
func (p *Postgres) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), p.dbs.Add(1))
	ctx := context.Background()
	if err := p.Exec(ctx, "postgres", "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		if !p.Running() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := p.Exec(ctx, "postgres", `
			SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		if err == nil {
			// Slots block DROP DATABASE; wait until their walsenders are gone.
			for i := 0; i < 200; i++ {
				err = p.Exec(ctx, "postgres", `
					SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, name)
				var n int
				conn, cerr := pgx.Connect(ctx, p.DSN("postgres"))
				if cerr == nil {
					conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&n)
					conn.Close(ctx)
				}
				if n == 0 {
					break
				}
				time.Sleep(25 * time.Millisecond)
			}
			err = p.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		}
		if err != nil {
			tb.Logf("drop database %s: %v", name, err)
		}
	})
	return p.DSN(name)
}

func runAs(cmd *exec.Cmd, cred *syscall.Credential) ([]byte, error) {
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	return cmd.CombinedOutput()
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
