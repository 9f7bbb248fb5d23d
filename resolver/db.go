package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/qx-platform/regions"
)

// Defaults for the zero fields of [DBConfig].
const (
	DefaultCacheSize         = 100_000
	DefaultTTL               = 5 * time.Minute
	DefaultNegativeTTL       = 30 * time.Second
	DefaultQueryTimeout      = 2 * time.Second
	DefaultMaxReconnectDelay = 5 * time.Second
)

// DBConfig tunes a [DB]. The zero value of every field means its default.
type DBConfig struct {
	// Regions lists the regions [DB.Set] accepts (see [regions.Config.Has]);
	// a name that is not a valid region name is refused whatever it lists.
	// With the zero Config every Set is refused; Resolve does not need it.
	Regions regions.Config
	// DefaultRegion, if not "", is the answer for a tenant that has no row,
	// instead of [ErrUnknownTenant]. It is never the answer when the
	// database cannot be asked: that is [ErrUnavailable].
	DefaultRegion string
	// CacheSize bounds the number of cached tenants, negative entries
	// included (default [DefaultCacheSize]).
	CacheSize int
	// TTL is how long a tenant's region is served from the cache without
	// asking the database again (default [DefaultTTL]). NOTIFY is what keeps
	// the cache fresh; the TTL is only a safety net.
	TTL time.Duration
	// NegativeTTL is the same for a tenant that has no row (default
	// [DefaultNegativeTTL]).
	NegativeTTL time.Duration
	// QueryTimeout bounds one lookup query, whatever the callers' contexts
	// say (default [DefaultQueryTimeout]).
	QueryTimeout time.Duration
	// MaxReconnectDelay caps the backoff between attempts of [DB.Run] to get
	// its LISTEN connection back (default [DefaultMaxReconnectDelay]).
	MaxReconnectDelay time.Duration
	// Registerer, if not nil, gets the qx_resolver_* metrics.
	Registerer prometheus.Registerer
	// Logger gets the listener's first failure and its recovery (nil means
	// slog.Default()).
	Logger *slog.Logger
}

// DB resolves tenants from the qx_tenant_regions table (see [SchemaSQL]),
// through a bounded cache that [DB.Run] keeps fresh by LISTEN/NOTIFY. It is
// safe for concurrent use.
//
// Entries are added to the cache only while Run is listening, since only
// then is a change sure to evict them; without Run every lookup queries.
// When the database cannot be reached, cached tenants keep being served
// (even past their TTL) and other tenants get [ErrUnavailable].
type DB struct {
	pool  *pgxpool.Pool
	cfg   DBConfig
	log   *slog.Logger
	cache *cache
	m     *metrics
	epoch time.Time // monotonic reference of the cache's expiry times

	// flights shares one query among concurrent lookups of a tenant. An
	// invalidation must keep later lookups out of a flight that may have
	// read the row before the change: forget makes the group forget the
	// tenant, forgetAll swaps in a new group. flightsMu orders the two, so
	// that a forget never lands on a group already swapped out; lookups
	// only load the pointer.
	flightsMu sync.Mutex
	flights   atomic.Pointer[singleflight.Group]

	running   atomic.Bool
	listening atomic.Bool

	// Tests shorten these.
	pingEvery time.Duration
	// testHookNotified, if set before Run, is called after each
	// notification has been applied to the cache.
	testHookNotified func(payload string)
	// testHookMissed, if set before the first lookup, is called when a
	// lookup has missed the cache, before it starts or joins a flight.
	testHookMissed func(tenantID string)
}

var _ Resolver = (*DB)(nil)

const (
	selectSQL = `SELECT region FROM qx_tenant_regions WHERE tenant_id = $1`
	upsertSQL = `INSERT INTO qx_tenant_regions (tenant_id, region, updated_at) VALUES ($1, $2, now())
		ON CONFLICT (tenant_id) DO UPDATE SET region = EXCLUDED.region, updated_at = EXCLUDED.updated_at`
	deleteSQL = `DELETE FROM qx_tenant_regions WHERE tenant_id = $1`
)

// NewDB returns a DB reading through pool, which must reach PostgreSQL
// directly or through a session pooler: LISTEN does not work through a
// transaction pooler. Call [DB.Run] to keep the cache fresh.
func NewDB(pool *pgxpool.Pool, cfg DBConfig) (*DB, error) {
	if pool == nil {
		return nil, errors.New("new db resolver: pool is nil")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"CacheSize", int64(cfg.CacheSize)}, {"TTL", int64(cfg.TTL)}, {"NegativeTTL", int64(cfg.NegativeTTL)},
		{"QueryTimeout", int64(cfg.QueryTimeout)}, {"MaxReconnectDelay", int64(cfg.MaxReconnectDelay)},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("new db resolver: DBConfig.%s is negative", f.name)
		}
	}
	if cfg.DefaultRegion != "" {
		if err := regions.ValidateRegionName(cfg.DefaultRegion); err != nil {
			return nil, fmt.Errorf("new db resolver: DBConfig.DefaultRegion: %w", err)
		}
		if cfg.Regions.Name != "" && !cfg.Regions.Has(cfg.DefaultRegion) {
			return nil, fmt.Errorf("new db resolver: DBConfig.DefaultRegion %q: %w", cfg.DefaultRegion, ErrUnknownRegion)
		}
	}
	cfg.CacheSize = orDefault(cfg.CacheSize, DefaultCacheSize)
	cfg.TTL = orDefault(cfg.TTL, DefaultTTL)
	cfg.NegativeTTL = orDefault(cfg.NegativeTTL, DefaultNegativeTTL)
	cfg.QueryTimeout = orDefault(cfg.QueryTimeout, DefaultQueryTimeout)
	cfg.MaxReconnectDelay = orDefault(cfg.MaxReconnectDelay, DefaultMaxReconnectDelay)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := newCache(cfg.CacheSize)
	m, collectors := newMetrics(c)
	if cfg.Registerer != nil {
		if err := register(cfg.Registerer, collectors); err != nil {
			return nil, fmt.Errorf("new db resolver: %w", err)
		}
	}
	d := &DB{
		pool:      pool,
		cfg:       cfg,
		log:       cfg.Logger,
		cache:     c,
		m:         m,
		epoch:     time.Now(),
		pingEvery: 30 * time.Second,
	}
	d.flights.Store(new(singleflight.Group))
	return d, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// now reads the monotonic clock: no wall clock, no allocation.
func (d *DB) now() int64 { return int64(time.Since(d.epoch)) }

// Resolve returns the home region of tenantID: from the cache when it holds
// a fresh entry, otherwise from one query shared by every concurrent caller
// for the same tenant. A caller whose ctx ends gets ctx's error at once; the
// query goes on (bounded by QueryTimeout) for the others.
//
// A tenant without a row gets the default region, or [ErrUnknownTenant]; an
// invalid id [ErrInvalidTenant]; a failed query [ErrUnavailable], unless an
// expired entry for the tenant is still cached, which is then served.
func (d *DB) Resolve(ctx context.Context, tenantID string) (string, error) {
	if err := ValidateTenantID(tenantID); err != nil {
		return "", fmt.Errorf("resolve tenant: %w", err)
	}
	switch region, l, _ := d.cache.get(tenantID, d.now()); l {
	case hit:
		return region, nil
	case negHit:
		return d.unknown(tenantID)
	}
	d.m.misses.Inc()
	if h := d.testHookMissed; h != nil {
		h(tenantID)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("resolve tenant %q: %w", tenantID, err)
	}
	ch := d.flights.Load().DoChan(tenantID, func() (any, error) {
		// Detached from the first caller's cancellation (but not its
		// values): the other callers are waiting for this answer too.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.QueryTimeout)
		defer cancel()
		return d.fetch(qctx, tenantID)
	})
	select {
	case <-ctx.Done():
		return "", fmt.Errorf("resolve tenant %q: %w", tenantID, ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		if a := r.Val.(answer); a.found {
			return a.region, nil
		}
		return d.unknown(tenantID)
	}
}

// answer is what one fetch found.
type answer struct {
	region string
	found  bool
}

// fetch answers a lookup in flight: from the cache if another flight has
// just filled it, else from the database. Its cache check is not counted as
// a hit: the lookup has been counted as a miss already.
func (d *DB) fetch(ctx context.Context, tenantID string) (answer, error) {
	region, l, gen := d.cache.peek(tenantID, d.now())
	switch l {
	case hit:
		return answer{region, true}, nil
	case negHit:
		return answer{}, nil
	}
	region, found, err := d.query(ctx, tenantID)
	if err != nil {
		d.m.errors.WithLabelValues("query").Inc()
		if region, ok := d.cache.stale(tenantID); ok {
			d.m.staleHits.Inc()
			return answer{region, true}, nil
		}
		return answer{}, fmt.Errorf("resolve tenant %q: %w: %w", tenantID, ErrUnavailable, err)
	}
	if d.listening.Load() {
		ttl := d.cfg.TTL
		if !found {
			ttl = d.cfg.NegativeTTL
		}
		d.cache.put(tenantID, region, found, d.now()+int64(ttl), gen)
	}
	return answer{region, found}, nil
}

// query reads one tenant's row. A failure that happened before anything
// reached the server (typically a pooled connection that died while idle)
// is retried once.
func (d *DB) query(ctx context.Context, tenantID string) (region string, found bool, err error) {
	for attempt := 0; ; attempt++ {
		start := time.Now()
		err = d.pool.QueryRow(ctx, selectSQL, tenantID).Scan(&region)
		d.m.queries.Inc()
		d.m.queryDuration.Observe(time.Since(start).Seconds())
		switch {
		case err == nil:
			return region, true, nil
		case errors.Is(err, pgx.ErrNoRows):
			return "", false, nil
		case attempt == 0 && pgconn.SafeToRetry(err) && ctx.Err() == nil:
			continue
		}
		return "", false, err
	}
}

func (d *DB) unknown(tenantID string) (string, error) {
	if d.cfg.DefaultRegion != "" {
		return d.cfg.DefaultRegion, nil
	}
	return "", fmt.Errorf("resolve tenant %q: %w", tenantID, ErrUnknownTenant)
}

// Set makes region the home region of tenantID, for operators and the
// tenant-move workflow. An invalid region name, or a region that
// DBConfig.Regions does not list, gets [ErrUnknownRegion]. This DB forgets
// the tenant at once (a lookup that starts after Set returns reads the new
// region); every other DB when the NOTIFY reaches it.
func (d *DB) Set(ctx context.Context, tenantID, region string) error {
	if err := ValidateTenantID(tenantID); err != nil {
		return fmt.Errorf("set tenant region: %w", err)
	}
	// Checked apart from Has: the zero Config "has" the region "".
	if err := regions.ValidateRegionName(region); err != nil {
		return fmt.Errorf("set tenant %q region: %w: %w", tenantID, ErrUnknownRegion, err)
	}
	if !d.cfg.Regions.Has(region) {
		return fmt.Errorf("set tenant %q region: %q: %w", tenantID, region, ErrUnknownRegion)
	}
	_, err := d.pool.Exec(ctx, upsertSQL, tenantID, region)
	d.forget(tenantID) // also after an error: the write may have committed
	if err != nil {
		d.m.errors.WithLabelValues("set").Inc()
		return fmt.Errorf("set tenant %q region: %w", tenantID, err)
	}
	return nil
}

// Delete removes tenantID's row; a tenant without a row gets
// [ErrUnknownTenant]. Like [DB.Set] it evicts the tenant from this cache
// at once.
func (d *DB) Delete(ctx context.Context, tenantID string) error {
	if err := ValidateTenantID(tenantID); err != nil {
		return fmt.Errorf("delete tenant region: %w", err)
	}
	tag, err := d.pool.Exec(ctx, deleteSQL, tenantID)
	d.forget(tenantID)
	if err != nil {
		d.m.errors.WithLabelValues("delete").Inc()
		return fmt.Errorf("delete tenant %q region: %w", tenantID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete tenant %q region: %w", tenantID, ErrUnknownTenant)
	}
	return nil
}

// Listening reports whether [DB.Run] has its LISTEN connection up, that is,
// whether the cache is kept fresh. A readiness check may use it.
func (d *DB) Listening() bool { return d.listening.Load() }

// forget evicts one tenant, and the lookup in flight for it, if any: the
// callers already waiting on that lookup get its answer (their calls
// overlap the change), later ones start a new query. The bumped generation
// keeps the old lookup's answer out of the cache.
func (d *DB) forget(tenantID string) {
	d.cache.remove(tenantID)
	d.flightsMu.Lock()
	d.flights.Load().Forget(tenantID)
	d.flightsMu.Unlock()
	d.m.invalidations.WithLabelValues("tenant").Inc()
}

// forgetAll empties the cache and, like forget, leaves every lookup in
// flight to the callers already waiting on it.
func (d *DB) forgetAll() {
	d.cache.purge()
	d.flightsMu.Lock()
	d.flights.Store(new(singleflight.Group))
	d.flightsMu.Unlock()
	d.m.invalidations.WithLabelValues("all").Inc()
}
