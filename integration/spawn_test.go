package integration

import (
	"os/exec"
	"runtime"
	"syscall"
)

// Children are started from one OS thread that lives as long as the test
// process: Linux ties Pdeathsig to the creating thread, so this is what makes
// a replicator die with a test binary killed by -timeout, and only then.
type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var spawns = make(chan spawnReq)

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked
		for req := range spawns {
			req.done <- req.cmd.Start()
		}
	}()
}

// startChild starts cmd in its own process group, killed with the test.
func startChild(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	done := make(chan error, 1)
	spawns <- spawnReq{cmd: cmd, done: done}
	return <-done
}
