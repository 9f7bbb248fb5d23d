package resolver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

const minReconnectDelay = 100 * time.Millisecond

// Run listens on [Channel] and evicts every tenant that a notification names
// (all of them for an empty payload). It holds one connection taken out of
// the pool for good, and blocks until ctx ends, then returns nil.
//
// When the connection fails, Run gets another one, backing off up to
// MaxReconnectDelay, and logs the first failure and the recovery. Each time
// it starts listening it empties the cache: notifications may have been
// missed in between. Only one Run may be active at a time.
func (d *DB) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("run db resolver: already running")
	}
	defer d.running.Store(false)

	delay := minReconnectDelay
	var downSince time.Time // zero while no failure is unreported as recovered
	for {
		err := d.listen(ctx, func() {
			delay = minReconnectDelay
			if !downSince.IsZero() {
				d.log.Info("resolver listener up again, cache emptied", "channel", Channel,
					"down_for", time.Since(downSince).Round(time.Millisecond).String())
				downSince = time.Time{}
			}
		})
		d.setListening(false)
		if ctx.Err() != nil {
			return nil
		}
		d.m.errors.WithLabelValues("listen").Inc()
		if downSince.IsZero() {
			downSince = time.Now()
			d.log.Warn("resolver listener down, retrying; cached tenants are served but may go stale",
				"channel", Channel, "err", err)
		}
		// Full jitter over the upper half keeps resolvers restarted together
		// from reconnecting in lockstep.
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(delay*2, d.cfg.MaxReconnectDelay)
	}
}

// listen runs one LISTEN connection until it fails or ctx ends. It calls up
// once the cache has been emptied and the listener is live.
func (d *DB) listen(ctx context.Context, up func()) error {
	pc, err := d.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listener connection: %w", err)
	}
	// Hijacked, the connection leaves the pool for good (the pool makes a
	// new one when it needs it) but was made with the pool's settings and
	// hooks.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("listen %s: %w", Channel, err)
	}
	// Order matters: listening first, then emptying the cache, then letting
	// lookups fill it. A change committed before LISTEN is covered by the
	// purge; one after it by its notification. The purge bumps every
	// generation, so no query read before it can store its answer.
	d.forgetAll()
	d.setListening(true)
	up()
	for {
		wctx, cancel := context.WithTimeout(ctx, d.pingEvery)
		n, err := conn.WaitForNotification(wctx)
		timedOut := wctx.Err() != nil
		cancel()
		switch {
		case err == nil:
			if n.Payload == "" {
				d.forgetAll()
			} else {
				d.forget(n.Payload)
			}
			if h := d.testHookNotified; h != nil {
				h(n.Payload)
			}
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !timedOut:
			return fmt.Errorf("wait for notification: %w", err)
		}
		// Quiet for a while: make sure the connection is still there, since
		// a silently dropped one would otherwise go unnoticed for minutes.
		pctx, cancel := context.WithTimeout(ctx, d.cfg.QueryTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("ping listener connection: %w", err)
		}
	}
}

func (d *DB) setListening(up bool) {
	d.listening.Store(up)
	if up {
		d.m.listenerUp.Set(1)
	} else {
		d.m.listenerUp.Set(0)
	}
}
