package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond every 10 ms until it returns true, and fails the test
// when timeout passes first. It is the only way tests here wait for an
// outcome: never a bare sleep.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			if len(msgAndArgs) > 0 {
				if f, ok := msgAndArgs[0].(string); ok {
					tb.Fatalf("condition not met within %v: "+f, append([]any{timeout}, msgAndArgs[1:]...)...)
				}
			}
			tb.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	return freePort()
}
