package testenv

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// Servers are started from one OS thread that never exits, so that
// Pdeathsig (which Linux ties to the creating thread, not the process) only
// fires when the test process itself dies. This is what keeps a test binary
// killed by -timeout from leaving Postgres or NATS processes behind.
type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var spawnCh = make(chan spawnReq)

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the process
		for req := range spawnCh {
			req.done <- req.cmd.Start()
		}
	}()
}

// startChild starts cmd in its own process group, to be killed with the
// test process, optionally as another user.
func startChild(cmd *exec.Cmd, cred *syscall.Credential) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr.Credential = cred
	done := make(chan error, 1)
	spawnCh <- spawnReq{cmd: cmd, done: done}
	return <-done
}

// killGroup sends sig to the whole process group led by p.
func killGroup(p *os.Process, sig syscall.Signal) error {
	return syscall.Kill(-p.Pid, sig)
}

// StartProcess starts cmd in its own process group, killed (SIGKILL) when
// the test process dies, also when -timeout kills it. Tests that run the
// qx-regions binary or a server as a subprocess start it with this.
func StartProcess(cmd *exec.Cmd) error { return startChild(cmd, nil) }
