package resolver

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

func TestCache(t *testing.T) {
	const never = int64(1) << 62

	t.Run("hit miss negative", func(t *testing.T) {
		c := newCache(100)
		_, _, gen := c.get("a", 0)
		c.put("a", "eu-west-1", true, never, gen)
		_, _, gen = c.get("b", 0)
		c.put("b", "", false, never, gen)
		if r, l, _ := c.get("a", 0); l != hit || r != "eu-west-1" {
			t.Errorf("get(a) = %q, %v; want eu-west-1, hit", r, l)
		}
		if _, l, _ := c.get("b", 0); l != negHit {
			t.Errorf("get(b) = %v, want negHit", l)
		}
		if _, l, _ := c.get("c", 0); l != miss {
			t.Errorf("get(c) = %v, want miss", l)
		}
		if n, h, nh := c.stats(); n != 2 || h != 1 || nh != 1 {
			t.Errorf("stats = %d, %d, %d; want 2, 1, 1", n, h, nh)
		}
	})

	t.Run("expiry keeps a stale answer", func(t *testing.T) {
		c := newCache(100)
		_, _, gen := c.get("a", 0)
		c.put("a", "eu-west-1", true, 10, gen)
		if _, l, _ := c.get("a", 9); l != hit {
			t.Errorf("before expiry: %v, want hit", l)
		}
		if r, l, _ := c.get("a", 10); l != expired || r != "eu-west-1" {
			t.Errorf("at expiry: %q, %v; want eu-west-1, expired", r, l)
		}
		if r, ok := c.stale("a"); !ok || r != "eu-west-1" {
			t.Errorf("stale = %q, %v; want eu-west-1, true", r, ok)
		}
		c.put("n", "", false, 10, gen)
		if _, ok := c.stale("n"); ok {
			t.Error("stale answer for a negative entry")
		}
	})

	t.Run("invalidation beats a load in flight", func(t *testing.T) {
		c := newCache(100)
		_, _, gen := c.get("a", 0) // a load starts
		c.remove("a")              // NOTIFY handled meanwhile
		if c.put("a", "old", true, never, gen) {
			t.Error("put after remove stored a value read before it")
		}
		_, _, gen = c.get("a", 0)
		c.purge()
		if c.put("a", "old", true, never, gen) {
			t.Error("put after purge stored a value read before it")
		}
		_, _, gen = c.get("a", 0)
		if !c.put("a", "new", true, never, gen) {
			t.Error("put with a current generation refused")
		}
	})

	t.Run("bounded, hot entries kept", func(t *testing.T) {
		const size = 64
		c := newCache(size)
		for i := range 10 * size {
			key := fmt.Sprint("t", i)
			_, _, gen := c.get(key, 0)
			c.put(key, "r", true, never, gen)
			c.get("t0", 0) // keep t0 the most recently used
			if n, _, _ := c.stats(); n > size {
				t.Fatalf("%d entries, want at most %d", n, size)
			}
		}
		if _, l, _ := c.get("t0", 0); l != hit {
			t.Errorf("most recently used entry evicted")
		}
		if _, l, _ := c.get("t1", 0); l != miss {
			t.Errorf("an early, unused entry is still cached")
		}
	})

	t.Run("random operations keep the shards consistent", func(t *testing.T) {
		c := newCache(40) // 2 shards of 20
		rng := rand.New(rand.NewPCG(1, 2))
		for range 20_000 {
			key := fmt.Sprint("t", rng.IntN(120))
			switch op := rng.IntN(10); {
			case op < 5:
				c.get(key, int64(rng.IntN(100)))
			case op < 8:
				_, _, gen := c.get(key, 0)
				c.put(key, "r", rng.IntN(4) > 0, int64(rng.IntN(100)), gen)
			case op < 9:
				c.remove(key)
			default:
				if rng.IntN(50) == 0 {
					c.purge()
				}
			}
			for i := range c.shards {
				checkShard(t, &c.shards[i])
			}
		}
	})

	t.Run("purge", func(t *testing.T) {
		c := newCache(1000)
		for i := range 500 {
			key := fmt.Sprint("t", i)
			_, _, gen := c.get(key, 0)
			c.put(key, "r", true, never, gen)
		}
		c.purge()
		if n, _, _ := c.stats(); n != 0 {
			t.Errorf("%d entries after purge, want 0", n)
		}
		_, _, gen := c.get("x", 0)
		c.put("x", "r", true, never, gen)
		if _, l, _ := c.get("x", 0); l != hit {
			t.Error("cache unusable after purge")
		}
	})

	t.Run("sizes", func(t *testing.T) {
		for _, size := range []int{0, 1, 5, 31, 32, 100, 1000, 100_000} {
			c := newCache(size)
			total := 0
			for i := range c.shards {
				total += c.shards[i].cap
			}
			if total > max(size, 1) || total < max(size, 1)-len(c.shards) || c.shards[0].cap < 1 {
				t.Errorf("size %d: %d shards, total capacity %d", size, len(c.shards), total)
			}
		}
	})

	t.Run("hit allocates nothing", func(t *testing.T) {
		c := newCache(100)
		_, _, gen := c.get("a", 0)
		c.put("a", "eu-west-1", true, never, gen)
		if n := testing.AllocsPerRun(1000, func() { c.get("a", 0) }); n != 0 {
			t.Errorf("allocs = %v, want 0", n)
		}
	})
}

func benchCache(b *testing.B) (*cache, []string) {
	c := newCache(100_000)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("tenant-", i)
		_, _, gen := c.get(keys[i], 0)
		c.put(keys[i], "eu-west-1", true, 1<<62, gen)
	}
	return c, keys
}

func BenchmarkCache_Get(b *testing.B) {
	c, keys := benchCache(b)
	i := 0
	for b.Loop() {
		c.get(keys[i&1023], 1)
		i++
	}
}

func BenchmarkCache_GetParallel(b *testing.B) {
	c, keys := benchCache(b)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(n.Add(1)) * 337
		for pb.Next() {
			c.get(keys[i&1023], 1)
			i += 7
		}
	})
}

// checkShard fails the test unless the shard's list holds exactly its map's
// entries, within capacity, and the hand is on the list.
func checkShard(t *testing.T, s *shard) {
	t.Helper()
	n, handSeen := 0, s.hand == nil
	for e := s.list.next; e != &s.list; e = e.next {
		if e.next.prev != e {
			t.Fatal("broken back link")
		}
		if s.m[e.key] != e {
			t.Fatalf("listed entry %q not in the map", e.key)
		}
		handSeen = handSeen || e == s.hand
		n++
	}
	if n != len(s.m) || n > s.cap {
		t.Fatalf("list %d, map %d, cap %d", n, len(s.m), s.cap)
	}
	if !handSeen {
		t.Fatal("hand not on the list")
	}
}
