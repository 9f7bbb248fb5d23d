package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions tunes a NATS server; the zero value is what most tests want.
type NATSOptions struct {
	// MaxPayload overrides the server's max_payload (bytes) when > 0.
	MaxPayload int32
}

// NATS is a NATS server with JetStream, run either inside the test process
// (embedded) or as a separate OS process (for tests that must kill it). Both
// kinds can be stopped and restarted on the same port and store.
type NATS struct {
	Port     int
	StoreDir string
	opts     NATSOptions

	mu       sync.Mutex
	embedded bool
	srv      *server.Server // embedded
	cmd      *exec.Cmd      // process
	exit     chan struct{}
	logPath  string
	confPath string
}

// StartNATS starts an embedded NATS server with JetStream on a free port of
// 127.0.0.1, with its store in a temp dir removed by tb's cleanup.
func StartNATS(tb testing.TB, opts NATSOptions) *NATS {
	tb.Helper()
	n, err := NewNATS(opts, true)
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	tb.Cleanup(n.Close)
	return n
}

// StartNATSProcess starts nats-server as its own OS process (built once from
// the nats-server module version in go.mod), so a test can SIGKILL it.
func StartNATSProcess(tb testing.TB, opts NATSOptions) *NATS {
	tb.Helper()
	n, err := NewNATS(opts, false)
	if err != nil {
		tb.Fatalf("start nats process: %v", err)
	}
	tb.Cleanup(n.Close)
	return n
}

// NewNATS starts a NATS server without a testing.TB (for TestMain and the
// demo); call Close when done.
func NewNATS(opts NATSOptions, embedded bool) (*NATS, error) {
	dir, err := os.MkdirTemp("", "qx-nats-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	n := &NATS{Port: port, StoreDir: filepath.Join(dir, "js"), opts: opts, embedded: embedded,
		logPath: filepath.Join(dir, "nats.log"), confPath: filepath.Join(dir, "nats.conf")}
	if err := n.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return n, nil
}

// URL is the client URL of the server.
func (n *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Start starts the server (again) on its port and store.
func (n *NATS) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.embedded {
		return n.startEmbedded()
	}
	return n.startProcess()
}

func (n *NATS) startEmbedded() error {
	if n.srv != nil {
		return errors.New("nats already running")
	}
	o := &server.Options{
		Host:      "127.0.0.1",
		Port:      n.Port,
		JetStream: true,
		StoreDir:  n.StoreDir,
		NoLog:     true,
		NoSigs:    true,
	}
	if n.opts.MaxPayload > 0 {
		o.MaxPayload = n.opts.MaxPayload
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return errors.New("embedded nats not ready after 10s")
	}
	n.srv = srv
	return nil
}

func (n *NATS) startProcess() error {
	if n.cmd != nil {
		return errors.New("nats already running")
	}
	bin, err := NATSServerBinary()
	if err != nil {
		return err
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\n", n.Port, n.StoreDir)
	if n.opts.MaxPayload > 0 {
		conf += fmt.Sprintf("max_payload: %d\n", n.opts.MaxPayload)
	}
	if err := os.WriteFile(n.confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-c", n.confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := startChild(cmd, nil); err != nil {
		logf.Close()
		return err
	}
	n.cmd = cmd
	exit := make(chan struct{})
	n.exit = exit
	go func() { cmd.Wait(); logf.Close(); close(exit) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exit:
			n.cmd = nil
			b, _ := os.ReadFile(n.logPath)
			return fmt.Errorf("nats-server exited at start:\n%s", b)
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.Port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server not listening after 20s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts the server down cleanly.
func (n *NATS) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.embedded {
		if n.srv != nil {
			n.srv.Shutdown()
			n.srv.WaitForShutdown()
			n.srv = nil
		}
		return nil
	}
	return n.signal(syscall.SIGTERM)
}

// Kill sends SIGKILL to a process server; an embedded one is shut down
// without waiting (the closest an in-process server gets to a crash).
func (n *NATS) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.embedded {
		if n.srv != nil {
			n.srv.Shutdown()
			n.srv = nil
		}
		return nil
	}
	return n.signal(syscall.SIGKILL)
}

func (n *NATS) signal(sig syscall.Signal) error {
	if n.cmd == nil {
		return nil
	}
	if err := n.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-n.exit:
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		<-n.exit
	}
	n.cmd = nil
	return nil
}

// PID is the server process's id (0 when embedded or stopped).
func (n *NATS) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Server is the embedded server (nil for a process server or when stopped).
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Close stops the server and removes its store.
func (n *NATS) Close() {
	n.Kill()
	os.RemoveAll(filepath.Dir(n.StoreDir))
}

var (
	natsBinOnce sync.Once
	natsBinPath string
	natsBinErr  error
)

// NATSServerBinary builds nats-server from the module version pinned in
// go.mod, once per version into the user cache dir, and returns its path.
func NATSServerBinary() (string, error) {
	natsBinOnce.Do(func() {
		natsBinPath, natsBinErr = buildNATSServer()
	})
	return natsBinPath, natsBinErr
}

func buildNATSServer() (string, error) {
	version := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/nats-io/nats-server/v2" {
				version = d.Version
			}
		}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "qx-regions-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server-"+version)
	if _, err := os.Stat(bin); err == nil && version != "unknown" {
		return bin, nil
	}
	// Build into a unique name and rename, so parallel test packages never
	// see a half-written binary.
	tmp := bin + ".tmp" + strconv.Itoa(os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "github.com/nats-io/nats-server/v2")
	cmd.Dir = moduleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build nats-server: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// ModuleRoot finds the directory of go.mod above the working directory
// (tests build binaries from it).
func ModuleRoot() string { return moduleRoot() }

// moduleRoot finds the directory of go.mod above the working directory, so
// the nats-server build uses this module's pinned version.
func moduleRoot() string {
	d, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return ""
		}
		d = parent
	}
}
