package resolver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the DB resolver's Prometheus metrics. Hits are counted inside
// the cache shards, under locks a hit takes anyway, and read at scrape time:
// one shared atomic counter would put every parallel hit on one cache line.
type metrics struct {
	misses        prometheus.Counter
	staleHits     prometheus.Counter
	queries       prometheus.Counter
	queryDuration prometheus.Histogram
	invalidations *prometheus.CounterVec // scope: tenant | all
	errors        *prometheus.CounterVec // op: query | listen | set | delete
	listenerUp    prometheus.Gauge
}

func newMetrics(c *cache) (*metrics, []prometheus.Collector) {
	m := &metrics{
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qx_resolver_cache_misses_total",
			Help: "Lookups that found no fresh cache entry and went to the database (or joined a lookup in flight).",
		}),
		staleHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qx_resolver_cache_stale_hits_total",
			Help: "Lookups answered from an expired cache entry because the database could not be asked.",
		}),
		queries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qx_resolver_queries_total",
			Help: "Queries sent to the database for one tenant's region.",
		}),
		queryDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "qx_resolver_query_duration_seconds",
			Help:    "Time taken by a query for one tenant's region, failed ones included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qx_resolver_invalidations_total",
			Help: "Cache invalidations: scope=tenant for one tenant (NOTIFY, Set, Delete), scope=all for the whole cache (listener (re)connect, TRUNCATE).",
		}, []string{"scope"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qx_resolver_errors_total",
			Help: "Errors by operation: query (a lookup failed), listen (the LISTEN connection failed or broke), set, delete.",
		}, []string{"op"}),
		listenerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qx_resolver_listener_up",
			Help: "1 while the LISTEN connection is up and the cache is kept fresh, 0 otherwise.",
		}),
	}
	for _, scope := range []string{"tenant", "all"} {
		m.invalidations.WithLabelValues(scope)
	}
	for _, op := range []string{"query", "listen", "set", "delete"} {
		m.errors.WithLabelValues(op)
	}
	hits := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "qx_resolver_cache_hits_total",
		Help: "Lookups answered from a fresh cache entry of a known tenant.",
	}, func() float64 { _, h, _ := c.stats(); return float64(h) })
	negHits := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "qx_resolver_cache_negative_hits_total",
		Help: "Lookups answered from a fresh cache entry saying the tenant has no row.",
	}, func() float64 { _, _, n := c.stats(); return float64(n) })
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "qx_resolver_cache_entries",
		Help: "Entries in the cache, negative and expired ones included.",
	}, func() float64 { n, _, _ := c.stats(); return float64(n) })
	return m, []prometheus.Collector{
		m.misses, m.staleHits, m.queries, m.queryDuration, m.invalidations, m.errors, m.listenerUp,
		hits, negHits, entries,
	}
}

// register registers every collector on reg, or none of them.
func register(reg prometheus.Registerer, cs []prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
