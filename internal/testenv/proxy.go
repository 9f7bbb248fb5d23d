package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy between a client under test and one server, for fault
// injection and WAN emulation: it adds latency to each direction, cuts
// connections, and partitions (black-holes) traffic until healed.
//
// Latency models a link's propagation delay, not its bandwidth: every chunk
// read is stamped with readTime+latency and written out at that time, in
// order, by a writer goroutine per direction, while the reader goes on
// reading. So a pipelined client still gets high throughput through a long
// round trip, as it would over a real WAN; only a ping-pong client is slowed
// to one exchange per round trip. Each direction queues at most
// [proxyQueueBytes] bytes; beyond that the reader stops reading and TCP flow
// control pushes back on the sender.
//
// A partition ([Proxy.Blackhole]) keeps every connection open and forwards
// nothing, in either direction; connections accepted during it are held
// open and never reach the target. Bytes read or queued during the
// partition are dropped. [Proxy.Heal] ends the partition by cutting every
// connection that existed during it, as a real partition ends once the
// peers' TCP sessions have timed out: clients must reconnect, and their
// reconnections are forwarded normally. Cutting (rather than resuming the
// held sessions) is the harder case for the client, and the one a
// partition longer than the TCP and application timeouts produces.
type Proxy struct {
	target string
	ln     net.Listener

	latency atomic.Int64 // one way, nanoseconds

	// blackholed is written under mu (so Heal cuts exactly the connections
	// that saw the partition) and read without it on every chunk.
	blackholed atomic.Bool

	mu          sync.Mutex
	conns       map[*proxyConn]struct{}
	closed      bool
	wg          sync.WaitGroup // accept loop and every connection's goroutines
	dialTimeout time.Duration
}

// proxyQueueBytes bounds the bytes queued (read, not yet written) in one
// direction of one connection: enough for ~40 MB/s at 100 ms one-way delay.
const proxyQueueBytes = 4 << 20

// proxyChunk is the most read in one go from either side.
const proxyChunk = 32 << 10

// NewProxy starts a proxy listening on a free port of 127.0.0.1 that
// forwards every connection to target (host:port). Call Close when done.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[*proxyConn]struct{}), dialTimeout: 5 * time.Second}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// StartProxy starts a proxy to target that tb's cleanup closes.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := NewProxy(target)
	if err != nil {
		tb.Fatalf("start proxy: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's listening address, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's listening port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetLatency sets the delay added to each direction (the round trip grows by
// twice oneWay). It applies to bytes read from now on, on current and new
// connections; order is kept when the latency shrinks.
func (p *Proxy) SetLatency(oneWay time.Duration) { p.latency.Store(int64(max(oneWay, 0))) }

// Cut closes every current connection, both sides, at once; bytes still
// queued are lost. New connections are accepted as before.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.takeConns()
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Blackhole starts a partition: current connections stay open but nothing is
// forwarded either way, and new connections are accepted but never reach the
// target. It lasts until Heal.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.blackholed.Store(true)
	p.mu.Unlock()
}

// Heal ends a partition: every connection that existed during it is cut (see
// [Proxy]), and forwarding resumes for new connections. Without a partition
// it does nothing.
func (p *Proxy) Heal() {
	p.mu.Lock()
	if !p.blackholed.Load() {
		p.mu.Unlock()
		return
	}
	p.blackholed.Store(false)
	conns := p.takeConns()
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Close stops listening, closes every connection and waits for all of the
// proxy's goroutines to end. It is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return
	}
	p.closed = true
	conns := p.takeConns()
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.close()
	}
	p.wg.Wait()
}

// takeConns empties the connection set; p.mu must be held.
func (p *Proxy) takeConns() []*proxyConn {
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
		delete(p.conns, c)
	}
	return conns
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off briefly.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		c := &proxyConn{client: client, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			return
		}
		p.conns[c] = struct{}{}
		held := p.blackholed.Load()
		if !held {
			p.wg.Add(1)
		}
		p.mu.Unlock()
		if held {
			// Accepted during a partition: held open, never dialled, closed
			// on Heal, Cut or Close.
			continue
		}
		go p.serve(c)
	}
}

// serve dials the target for c and runs both directions until c is closed
// or both sides have finished.
func (p *Proxy) serve(c *proxyConn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, p.dialTimeout)
	if err != nil {
		p.drop(c)
		return
	}
	c.mu.Lock()
	if c.isClosed() {
		c.mu.Unlock()
		server.Close()
		return
	}
	c.server = server
	c.mu.Unlock()

	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() { defer dirs.Done(); p.forward(c, client2server(c)) }()
	go func() { defer dirs.Done(); p.forward(c, server2client(c)) }()
	dirs.Wait()
	p.drop(c)
}

// drop closes c and forgets it.
func (p *Proxy) drop(c *proxyConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.close()
}

// proxyConn is one proxied connection: the accepted client side and, once
// dialled, the server side.
type proxyConn struct {
	client net.Conn
	done   chan struct{} // closed by close

	mu     sync.Mutex
	server net.Conn
	once   sync.Once
}

func (c *proxyConn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// close closes both sides and wakes every goroutine of c.
func (c *proxyConn) close() {
	c.once.Do(func() {
		c.mu.Lock()
		close(c.done)
		server := c.server
		c.mu.Unlock()
		c.client.Close()
		if server != nil {
			server.Close()
		}
	})
}

type direction struct{ src, dst net.Conn }

func client2server(c *proxyConn) direction { return direction{src: c.client, dst: c.server} }
func server2client(c *proxyConn) direction { return direction{src: c.server, dst: c.client} }

type proxyChunkT struct {
	b   []byte
	due time.Time
}

// pipe is the queue of one direction: chunks stamped with their due time,
// bounded in bytes.
type pipe struct {
	mu     sync.Mutex
	q      []proxyChunkT // q[head:] is waiting
	head   int
	queued int
	eof    bool          // the reader has finished
	wake   chan struct{} // wakes the writer
	space  chan struct{} // wakes the reader
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// forward runs one direction: a reader (this goroutine) and a writer.
func (p *Proxy) forward(c *proxyConn, d direction) {
	pp := &pipe{wake: make(chan struct{}, 1), space: make(chan struct{}, 1)}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		p.write(c, d, pp)
	}()
	p.read(c, d, pp)
	<-writerDone
}

func (p *Proxy) read(c *proxyConn, d direction, pp *pipe) {
	defer func() {
		pp.mu.Lock()
		pp.eof = true
		pp.mu.Unlock()
		notify(pp.wake)
	}()
	buf := make([]byte, proxyChunk)
	for {
		n, err := d.src.Read(buf)
		if n > 0 {
			if p.blackholed.Load() {
				// Partitioned: drop what was read and stop reading, so the
				// sender's socket buffer fills as it would on a dead link.
				// Heal, Cut or Close end the connection.
				<-c.done
				return
			}
			ch := proxyChunkT{b: append([]byte(nil), buf[:n]...),
				due: time.Now().Add(time.Duration(p.latency.Load()))}
			if !pp.push(c, ch) {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.close() // reset or cut: end both directions
			}
			return
		}
	}
}

// push queues ch, waiting for space; false when c was closed meanwhile.
func (pp *pipe) push(c *proxyConn, ch proxyChunkT) bool {
	for {
		pp.mu.Lock()
		if pp.queued == 0 || pp.queued+len(ch.b) <= proxyQueueBytes {
			pp.q = append(pp.q, ch)
			pp.queued += len(ch.b)
			pp.mu.Unlock()
			notify(pp.wake)
			return true
		}
		pp.mu.Unlock()
		select {
		case <-pp.space:
		case <-c.done:
			return false
		}
	}
}

// write sends queued chunks to d.dst at their due times, in order, writing
// every chunk already due in one writev.
func (p *Proxy) write(c *proxyConn, d direction, pp *pipe) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch net.Buffers
	for {
		pp.mu.Lock()
		if pp.head == len(pp.q) {
			eof := pp.eof
			pp.mu.Unlock()
			if eof {
				// The source half-closed: pass the FIN on.
				if tc, ok := d.dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				return
			}
			select {
			case <-pp.wake:
				continue
			case <-c.done:
				return
			}
		}
		due := pp.q[pp.head].due
		pp.mu.Unlock()
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-c.done:
				return
			}
		}
		now := time.Now()
		batch = batch[:0]
		n := 0
		pp.mu.Lock()
		for ; pp.head < len(pp.q) && !pp.q[pp.head].due.After(now); pp.head++ {
			batch = append(batch, pp.q[pp.head].b)
			n += len(pp.q[pp.head].b)
			pp.q[pp.head] = proxyChunkT{}
		}
		if pp.head == len(pp.q) {
			pp.q, pp.head = pp.q[:0], 0 // reuse the array
		}
		pp.queued -= n
		pp.mu.Unlock()
		notify(pp.space)
		if p.blackholed.Load() {
			clear(batch)
			continue // in flight when the partition began: lost
		}
		bufs := batch // WriteTo consumes its receiver
		_, err := bufs.WriteTo(d.dst)
		clear(batch)
		if err != nil {
			c.close()
			return
		}
	}
}
