package replication

import "github.com/prometheus/client_golang/prometheus"

// metrics of one replicator; registered on the registry in Config.
type metrics struct {
	forwarded   prometheus.Counter
	bytes       prometheus.Counter
	inFlight    prometheus.Gauge
	latency     prometheus.Histogram
	retries     prometheus.Counter
	deadLetters *prometheus.CounterVec
	skipped     prometheus.Counter
	safeLSN     prometheus.Gauge
	lagBytes    prometheus.Gauge
	lagSeconds  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, labels prometheus.Labels) *metrics {
	m := &metrics{
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "qx_replication_events_forwarded_total",
			Help: "Events stored by the target stream (acknowledged).", ConstLabels: labels}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "qx_replication_bytes_forwarded_total",
			Help: "Payload bytes of acknowledged events.", ConstLabels: labels}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "qx_replication_in_flight",
			Help: "Events published and not yet acknowledged.", ConstLabels: labels}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "qx_replication_publish_latency_seconds",
			Help: "Time from publish to acknowledgement.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "qx_replication_retries_total",
			Help: "Times the in-flight window was resent after a publish error.", ConstLabels: labels}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qx_replication_dead_letters_total",
			Help: "Rows written to qx_replication_dead_letters, by reason.", ConstLabels: labels}, []string{"reason"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "qx_replication_skipped_total",
			Help: "Events not forwarded because they came from another region (loop guard).", ConstLabels: labels}),
		safeLSN: prometheus.NewGauge(prometheus.GaugeOpts{Name: "qx_replication_safe_lsn",
			Help: "Position before which the target holds every event: the end LSN of the newest transaction it fully stored, or the source's confirmed position when further.", ConstLabels: labels}),
		lagBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "qx_replication_lag_bytes",
			Help: "Server WAL end minus the safe LSN.", ConstLabels: labels}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "qx_replication_lag_seconds",
			Help: "Now minus the commit time of the oldest unacknowledged event.", ConstLabels: labels}),
	}
	if reg != nil {
		reg.MustRegister(m.forwarded, m.bytes, m.inFlight, m.latency, m.retries, m.deadLetters,
			m.skipped, m.safeLSN, m.lagBytes, m.lagSeconds)
	}
	return m
}
