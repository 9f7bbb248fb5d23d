package resolver

import (
	"hash/maphash"
	"sync"
)

// cache is a bounded map from tenant id to region, split into shards so that
// parallel lookups of different tenants rarely meet on one lock. Each shard
// has its own share of the capacity and evicts by SIEVE (Zhang et al., NSDI
// 2024, https://cachemon.github.io/SIEVE-website/): a hit only sets the
// entry's visited bit, where LRU would relink the entry and its neighbours.
// That keeps a hit from writing to memory that other shards' entries share,
// which is what makes hits scale across cores. A hit allocates nothing and
// reads no wall clock: expiry times are on the owner's monotonic clock.
//
// Every shard has a generation that each removal bumps. A loader notes the
// generation before it queries and stores its answer only if the generation
// is unchanged, so an answer read before a NOTIFY can never be cached after
// the NOTIFY has been handled.
type cache struct {
	seed   maphash.Seed
	mask   uint64
	shards []shard
}

type shard struct {
	mu      sync.Mutex
	m       map[string]*entry
	list    entry  // sentinel: list.next is the newest entry, list.prev the oldest
	hand    *entry // SIEVE's hand: the next eviction candidate, nil for the oldest
	cap     int
	gen     uint64
	hits    uint64 // fresh positive hits
	negHits uint64 // fresh negative hits
	_       [64]byte
}

type entry struct {
	key        string
	region     string
	found      bool  // false: the tenant has no row (negative entry)
	visited    bool  // hit since the hand last passed
	expires    int64 // on the owner's monotonic clock, nanoseconds
	prev, next *entry
}

// lookup is the outcome of [cache.get].
type lookup int

const (
	miss    lookup = iota // nothing cached
	hit                   // fresh positive entry
	negHit                // fresh negative entry
	expired               // an entry is there but past its TTL
)

// newCache returns a cache for at most size entries (at least one).
func newCache(size int) *cache {
	size = max(size, 1)
	// Enough shards to spread lock traffic, few enough that each keeps a
	// useful share of the capacity (so the LRU order stays meaningful).
	n := 1
	for n < 64 && size/(n*2) >= 16 {
		n *= 2
	}
	c := &cache{seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]shard, n)}
	for i := range c.shards {
		s := &c.shards[i]
		s.m = make(map[string]*entry)
		s.cap = size / n
		s.list.next, s.list.prev = &s.list, &s.list
	}
	return c
}

func (c *cache) shard(key string) *shard {
	return &c.shards[maphash.String(c.seed, key)&c.mask]
}

// get looks key up at time now and returns the region of a positive entry
// (fresh or expired) and the shard's generation. A fresh entry counts as a
// hit (or negative hit) in [cache.stats].
func (c *cache) get(key string, now int64) (region string, l lookup, gen uint64) {
	return c.find(key, now, true)
}

// peek is get without counting: for a second look within one lookup,
// which has been counted already.
func (c *cache) peek(key string, now int64) (region string, l lookup, gen uint64) {
	return c.find(key, now, false)
}

func (c *cache) find(key string, now int64, count bool) (region string, l lookup, gen uint64) {
	s := c.shard(key)
	s.mu.Lock()
	e, ok := s.m[key]
	switch {
	case !ok:
		l = miss
	case now >= e.expires:
		l, region = expired, e.region
	case e.found:
		l, region = hit, e.region
		if count {
			s.hits++
		}
		s.visit(e)
	default:
		l = negHit
		if count {
			s.negHits++
		}
		s.visit(e)
	}
	gen = s.gen
	s.mu.Unlock()
	return region, l, gen
}

// stale returns the region of a positive entry for key even if it has
// expired: what is served while the database cannot be asked.
func (c *cache) stale(key string) (string, bool) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok && e.found {
		return e.region, true
	}
	return "", false
}

// put stores an answer for key unless the shard's generation has moved on
// from gen (an invalidation happened while the answer was being read). It
// reports whether the answer was stored.
func (c *cache) put(key, region string, found bool, expires int64, gen uint64) bool {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return false
	}
	if e, ok := s.m[key]; ok {
		e.region, e.found, e.expires = region, found, expires
		return true
	}
	var e *entry
	if len(s.m) >= s.cap {
		e = s.evict() // and reuse it for the new entry
	} else {
		e = new(entry)
	}
	*e = entry{key: key, region: region, found: found, expires: expires}
	s.m[key] = e
	s.pushFront(e)
	return true
}

// remove drops key and bumps its shard's generation, whether or not key was
// cached, so that a load in flight does not store what it read.
func (c *cache) remove(key string) {
	s := c.shard(key)
	s.mu.Lock()
	s.gen++
	if e, ok := s.m[key]; ok {
		s.unlink(e)
		delete(s.m, key)
	}
	s.mu.Unlock()
}

// purge drops every entry and bumps every generation.
func (c *cache) purge() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		clear(s.m)
		s.list.next, s.list.prev = &s.list, &s.list
		s.hand = nil
		s.mu.Unlock()
	}
}

// stats sums the shards' counters.
func (c *cache) stats() (entries int, hits, negHits uint64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		entries += len(s.m)
		hits += s.hits
		negHits += s.negHits
		s.mu.Unlock()
	}
	return entries, hits, negHits
}

// visit marks e as hit. It writes only when the bit is clear, so a hot
// entry is read, not written, by its hits.
func (s *shard) visit(e *entry) {
	if !e.visited {
		e.visited = true
	}
}

// evict removes and returns the entry SIEVE picks: the hand walks from old
// to new, clearing visited bits, and stops at the first entry not visited
// since its last pass. The shard must not be empty.
func (s *shard) evict() *entry {
	e := s.hand
	if e == nil {
		e = s.list.prev
	}
	for e.visited {
		e.visited = false
		if e = e.prev; e == &s.list {
			e = s.list.prev
		}
	}
	s.hand = e // unlink moves it on to the next newer entry
	s.unlink(e)
	delete(s.m, e.key)
	return e
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = &s.list, s.list.next
	s.list.next.prev = e
	s.list.next = e
}

// unlink takes e out of the list, moving the hand off it first.
func (s *shard) unlink(e *entry) {
	if s.hand == e {
		s.hand = e.prev
		if s.hand == &s.list {
			s.hand = nil
		}
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}
