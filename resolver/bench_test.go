package resolver

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// benchDB returns a running DB over n tenants t0..t(n-1), all cached.
func benchDB(b *testing.B, n int, before ...func(*DB)) (*DB, string, []string) {
	b.Helper()
	dsn, pool := newSchema(b)
	execSQL(b, dsn, `INSERT INTO qx_tenant_regions (tenant_id, region)
		SELECT 'tenant-' || i, 'eu-west-1' FROM generate_series(0, $1 - 1) i`, n)
	d, _ := startDB(b, pool, DBConfig{TTL: time.Hour}, before...)
	tenants := make([]string, n)
	for i := range tenants {
		tenants[i] = fmt.Sprint("tenant-", i)
		mustResolve(b, d, tenants[i], "eu-west-1")
	}
	return d, dsn, tenants
}

// BenchmarkDB_ResolveCached is the hot path: a tenant in the cache.
func BenchmarkDB_ResolveCached(b *testing.B) {
	d, _, tenants := benchDB(b, 1024)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := d.Resolve(ctx, tenants[i&1023]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkDB_ResolveCachedParallel is the hot path from every core at
// once: the figure that shows the shards at work.
func BenchmarkDB_ResolveCachedParallel(b *testing.B) {
	d, _, tenants := benchDB(b, 1024)
	ctx := context.Background()
	var goroutines atomic.Int64
	b.ReportAllocs()
	b.ResetTimer() // RunParallel, unlike b.Loop, would count the setup
	b.RunParallel(func(pb *testing.PB) {
		// Each goroutine walks the tenants from its own place: in lockstep
		// they would all queue on the same shard.
		i := int(goroutines.Add(1)) * 337
		for pb.Next() {
			if _, err := d.Resolve(ctx, tenants[i&1023]); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

// BenchmarkDB_ResolveCold is a lookup that has to ask the database (over
// loopback TCP): one query through the pool, then the cache fill.
func BenchmarkDB_ResolveCold(b *testing.B) {
	d, _, tenants := benchDB(b, 1024)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t := tenants[i&1023]
		d.cache.remove(t)
		if _, err := d.Resolve(ctx, t); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkDB_NotifyInvalidation measures how long a change takes to evict
// the tenant from the cache: ns/op runs from the start of the UPDATE (its
// commit included) to the eviction, after-commit-ns/op from the moment the
// UPDATE returned to the eviction.
func BenchmarkDB_NotifyInvalidation(b *testing.B) {
	evicted := make(chan time.Time, 1)
	d, dsn, _ := benchDB(b, 1, func(d *DB) {
		d.testHookNotified = func(string) {
			select {
			case evicted <- time.Now():
			default:
			}
		}
	})
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	ctx := context.Background()
	regions := []string{"us-east-1", "eu-west-1"}
	var afterCommit time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := d.Resolve(ctx, "tenant-0"); err != nil { // cache it again
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := conn.Exec(ctx, `UPDATE qx_tenant_regions SET region = $1 WHERE tenant_id = 'tenant-0'`, regions[i%2]); err != nil {
			b.Fatal(err)
		}
		committed := time.Now()
		select {
		case at := <-evicted:
			afterCommit += max(at.Sub(committed), 0)
		case <-time.After(5 * time.Second):
			b.Fatal("no invalidation within 5s")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(afterCommit.Nanoseconds())/float64(b.N), "after-commit-ns/op")
}
