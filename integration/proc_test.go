package integration

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qx-platform/regions/internal/testenv"
)

// proc is one run of the qx-regions binary. Its stderr (JSON logs) is kept
// in memory and written to the test log only when the test fails.
type proc struct {
	name    string
	cmd     *exec.Cmd
	stderr  *testenv.Buffer
	started time.Time
	exited  chan struct{}
	state   *os.ProcessState // valid once exited is closed
}

// environ is the test process's environment without any QX_ setting (so
// the runner's own shell cannot change a scenario), plus env.
func environ(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QX_") {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// startProc runs the binary with args and env. The test's cleanup kills it
// if it is still running and, when the test failed (or QX_FAULT_LOGS is
// set), logs its stderr.
func startProc(tb testing.TB, name string, env map[string]string, args ...string) *proc {
	tb.Helper()
	p := &proc{name: name, stderr: &testenv.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = environ(env)
	p.cmd.Stdout = p.stderr // setup prints one line; keep it with the logs
	p.cmd.Stderr = p.stderr
	if err := testenv.StartProcess(p.cmd); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p.started = time.Now()
	go func() {
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	tb.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.exited
		if tb.Failed() || os.Getenv("QX_FAULT_LOGS") != "" {
			tb.Logf("--- %s (pid %d, %s) stderr:\n%s", p.name, p.cmd.Process.Pid, p.describe(), p.stderr.String())
		}
	})
	return p
}

func (p *proc) signal(sig syscall.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		panic(err) // only a bad pid could cause this
	}
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.exited
}

// wait waits up to timeout for the process to exit; ok is false if it is
// still running then.
func (p *proc) wait(timeout time.Duration) (code int, ok bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.state.ExitCode(), true
	case <-t.C:
		return 0, false
	}
}

func (p *proc) describe() string {
	select {
	case <-p.exited:
		return p.state.String()
	default:
		return "running"
	}
}

// logged reports whether the process logged a line containing every one of
// parts.
func (p *proc) logged(parts ...string) bool {
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		all := true
		for _, s := range parts {
			if !strings.Contains(line, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// countLogged counts the lines containing s.
func (p *proc) countLogged(s string) int {
	return strings.Count(p.stderr.String(), s)
}
