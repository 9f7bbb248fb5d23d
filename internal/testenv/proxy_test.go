package testenv

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoServer echoes every connection back and counts the connections it
// accepted; it is closed by tb's cleanup.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func startEcho(tb testing.TB) *echoServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	e := &echoServer{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close(); e.wg.Wait() })
	return e
}

func dial(tb testing.TB, p *Proxy) net.Conn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads back as many bytes, within timeout.
func roundTrip(c net.Conn, msg []byte, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs from what was sent")
	}
	return nil
}

// closedByPeer reports whether reading c ends with EOF or a reset within
// timeout (and not with the read deadline).
func closedByPeer(c net.Conn, timeout time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		return true // EOF
	}
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// proxyGoroutines counts the goroutines running the proxy's code.
func proxyGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "testenv.(*Proxy)") {
			n++
		}
	}
	return n
}

func TestProxy(t *testing.T) {
	t.Run("forwards both ways intact", func(t *testing.T) {
		e := startEcho(t)
		p := StartProxy(t, e.ln.Addr().String())
		if got, want := p.Addr(), "127.0.0.1:"; !strings.HasPrefix(got, want) || p.Port() == 0 {
			t.Fatalf("Addr() = %q, Port() = %d", got, p.Port())
		}
		c := dial(t, p)
		msg := make([]byte, 8<<20)
		rand.Read(msg)
		// Write and read concurrently: 8 MiB does not fit the socket buffers.
		errc := make(chan error, 1)
		go func() { _, err := c.Write(msg); errc <- err }()
		got := make([]byte, len(msg))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatal("8 MiB came back different")
		}
	})

	t.Run("half close passes the FIN on", func(t *testing.T) {
		e := startEcho(t)
		p := StartProxy(t, e.ln.Addr().String())
		c := dial(t, p)
		c.Write([]byte("bye"))
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "bye" {
			t.Fatalf("got %q, %v; want \"bye\" then EOF", got, err)
		}
	})

	t.Run("latency on a ping-pong", func(t *testing.T) {
		e := startEcho(t)
		p := StartProxy(t, e.ln.Addr().String())
		const oneWay = 20 * time.Millisecond
		p.SetLatency(oneWay)
		c := dial(t, p)
		var rtts []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			if err := roundTrip(c, []byte("ping"), 10*time.Second); err != nil {
				t.Fatal(err)
			}
			rtts = append(rtts, time.Since(start))
		}
		t.Logf("round trips at %v one way: %v", oneWay, rtts)
		for _, rtt := range rtts {
			if rtt < 2*oneWay {
				t.Fatalf("round trip %v, want at least %v", rtt, 2*oneWay)
			}
		}
		p.SetLatency(0)
		start := time.Now()
		if err := roundTrip(c, []byte("ping"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("round trip at no latency: %v", time.Since(start))
	})

	t.Run("latency does not limit a pipelined client", func(t *testing.T) {
		e := startEcho(t)
		p := StartProxy(t, e.ln.Addr().String())
		const oneWay = 25 * time.Millisecond
		p.SetLatency(oneWay)
		c := dial(t, p)
		// 400 lines written 1 ms apart, so each is its own chunk: a proxy
		// that forwarded one chunk per round trip would need 400 * 50 ms.
		const lines = 400
		start := time.Now()
		go func() {
			for i := 0; i < lines; i++ {
				if _, err := c.Write([]byte(strings.Repeat("x", 99) + "\n")); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		r := bufio.NewReader(c)
		var first time.Duration
		for i := 0; i < lines; i++ {
			if _, err := r.ReadString('\n'); err != nil {
				t.Fatalf("line %d: %v", i, err)
			}
			if i == 0 {
				first = time.Since(start)
			}
		}
		elapsed := time.Since(start)
		t.Logf("%d lines through %v round trip: first after %v, all after %v (%.0f lines per round trip)",
			lines, 2*oneWay, first, elapsed, float64(lines)/(float64(elapsed)/float64(2*oneWay)))
		if first < 2*oneWay {
			t.Fatalf("first line back after %v, want at least %v", first, 2*oneWay)
		}
		// Writing takes >= 400 ms; serialising on the round trip would take
		// 20 s. Allow a loaded machine plenty of room between the two.
		if elapsed > 5*time.Second {
			t.Fatalf("%d pipelined lines took %v: latency is limiting throughput", lines, elapsed)
		}
	})

	t.Run("cut closes current connections and accepts new ones", func(t *testing.T) {
		e := startEcho(t)
		p := StartProxy(t, e.ln.Addr().String())
		a, b := dial(t, p), dial(t, p)
		for _, c := range []net.Conn{a, b} {
			if err := roundTrip(c, []byte("hello"), 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		p.Cut()
		for _, c := range []net.Conn{a, b} {
			if !closedByPeer(c, 5*time.Second) {
				t.Fatal("connection still open after Cut")
			}
		}
		if err := roundTrip(dial(t, p), []byte("again"), 5*time.Second); err != nil {
			t.Fatalf("new connection after Cut: %v", err)
		}
	})

	t.Run("blackhole forwards nothing until heal cuts", func(t *testing.T) {
		e := startEcho(t)
		p := StartProxy(t, e.ln.Addr().String())
		old := dial(t, p)
		if err := roundTrip(old, []byte("before"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		accepted := e.accepted.Load()

		p.Blackhole()
		if err := roundTrip(old, []byte("during"), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("existing connection during partition: got %v, want a timeout", err)
		}
		held := dial(t, p) // accepted by the proxy...
		if err := roundTrip(held, []byte("during"), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("new connection during partition: got %v, want a timeout", err)
		}
		if got := e.accepted.Load(); got != accepted { // ...but never reaches the target
			t.Fatalf("target accepted %d connections during the partition, want 0", got-accepted)
		}

		p.Heal()
		for name, c := range map[string]net.Conn{"existing": old, "held": held} {
			if !closedByPeer(c, 5*time.Second) {
				t.Fatalf("%s connection still open after Heal", name)
			}
		}
		if err := roundTrip(dial(t, p), []byte("after"), 5*time.Second); err != nil {
			t.Fatalf("new connection after Heal: %v", err)
		}
		p.Heal() // no partition: nothing to cut
	})

	t.Run("close leaves no goroutine behind", func(t *testing.T) {
		e := startEcho(t)
		p, err := NewProxy(e.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		p.SetLatency(50 * time.Millisecond)
		var conns []net.Conn
		for i := 0; i < 4; i++ {
			c := dial(t, p)
			c.Write(make([]byte, 64<<10)) // in flight when Close comes
			conns = append(conns, c)
		}
		p.Blackhole()
		conns = append(conns, dial(t, p)) // held
		if proxyGoroutines() == 0 {
			t.Fatal("found no proxy goroutine to begin with")
		}
		p.Close()
		p.Close()
		// Close waits for them all; a goroutine past its last Done may still
		// be on its way out for a moment.
		Eventually(t, 5*time.Second, func() bool { return proxyGoroutines() == 0 },
			"proxy goroutines still running after Close")
		for _, c := range conns {
			if !closedByPeer(c, 5*time.Second) {
				t.Fatal("client connection still open after Close")
			}
		}
		if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
			t.Fatal("proxy still accepts after Close")
		}
	})
}
