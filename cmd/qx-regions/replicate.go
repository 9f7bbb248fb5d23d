package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	oklogrun "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/checkpoint"
	"github.com/qx-platform/regions/replication"
)

func runReplicate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	s := newSettings("replicate", getenv, stderr)
	p := addPairSettings(s, true)
	if err := s.parse(args); err != nil {
		return err
	}
	c, err := p.load()
	if err != nil {
		return err
	}
	log := newLogger(stderr, c.logFormat, c.logLevel).With("source", c.source, "target", c.target)
	return replicate(ctx, c, log, nil)
}

// replicate runs one pair until ctx ends (a signal) or a fatal error.
// ready, when not nil, is told the admin server's address. The admin
// server starts first, so liveness probes answer while the source or the
// target is still unreachable; /readyz says "starting" until the
// replicator runs.
func replicate(ctx context.Context, c *pairConfig, log *slog.Logger, ready func(adminAddr string)) error {
	log.Info("replicator starting", "version", version, "source_dsn", redactDSN(c.sourceDSN),
		"target_nats", redactNATS(c.natsURL), "slot", c.slot, "stream", c.stream)

	// pgxpool connects lazily: this parses the (validated) DSN only.
	pool, err := pgxpool.New(context.Background(), c.sourceDSN)
	if err != nil {
		return fmt.Errorf("source DSN %s: %w", redactDSN(c.sourceDSN), err)
	}
	defer pool.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st := &readiness{}
	st.starting("starting: waiting for the source database", "source not connected")

	var g oklogrun.Group
	{ // the replicator: wait for the source, then stream until interrupted
		rctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			rep, nc, err := startReplicator(rctx, c, pool, reg, st, log)
			if err != nil {
				return err
			}
			defer nc.Close()
			st.rep.Store(rep)
			return rep.Run(rctx)
		}, func(error) {
			cancel()
		})
	}
	if c.adminAddr != "" { // the admin server
		ln, err := net.Listen("tcp", c.adminAddr)
		if err != nil {
			return fmt.Errorf("admin server %s (QX_ADMIN__ADDR): %w", c.adminAddr, err)
		}
		srv := &http.Server{Handler: adminHandler(st, reg, c.readyMaxLag), ReadHeaderTimeout: 5 * time.Second}
		g.Add(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin server: %w", err)
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		})
		log.Info("admin server listening", "addr", ln.Addr().String())
		if ready != nil {
			ready(ln.Addr().String())
		}
	}
	{ // the signal: ctx is cancelled by SIGINT/SIGTERM in main
		done := make(chan struct{})
		g.Add(func() error {
			select {
			case <-ctx.Done():
				log.Info("signal received, draining")
				return errSignal
			case <-done:
				return nil
			}
		}, func(error) { close(done) })
	}
	err = g.Run()
	if errors.Is(err, errSignal) {
		return nil
	}
	return err
}

var errSignal = errors.New("signal received")

// startReplicator waits for the source database, checks the slot, and
// builds the replicator; it returns ctx's error when cancelled meanwhile.
func startReplicator(ctx context.Context, c *pairConfig, pool *pgxpool.Pool, reg prometheus.Registerer,
	st *readiness, log *slog.Logger) (*replication.Replicator, *nats.Conn, error) {
	store := checkpoint.NewPGStore(pool, c.slot)
	start, err := loadCheckpoint(ctx, store, log)
	if err != nil {
		return nil, nil, err
	}
	st.starting("starting: checking the slot")
	if err := checkSlot(ctx, pool, c.slot, start); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	src, err := cdc.New(cdc.Config{
		DSN: c.sourceDSN, Slot: c.slot, Publication: c.publication, Mapping: &c.mapping,
		StartLSN: start, StatusInterval: c.statusInterval, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	st.starting("starting: connecting to the target", "target not connected")
	nc, err := connectNATS(c.natsURL, "qx-regions "+c.slot, c.nats, log)
	if err != nil {
		return nil, nil, err
	}
	rep, err := replication.New(replicationConfig(c, log, reg), src, nc, store, replication.NewPGDeadLetters(pool, c.slot))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return rep, nc, nil
}

// replicationConfig passes every setting to the library explicitly: a
// zero would silently become the library's default, not ours.
func replicationConfig(c *pairConfig, log *slog.Logger, reg prometheus.Registerer) replication.Config {
	return replication.Config{
		SourceRegion: c.source, TargetRegion: c.target, Mapping: &c.mapping,
		SubjectTemplate: c.subject, Stream: c.stream, DuplicateWindow: c.dupWindow,
		MaxInFlight: c.maxInFlight, PublishTimeout: c.publishTimeout, ShutdownTimeout: c.shutdownTimeout,
		Logger: log, Registerer: reg,
	}
}

// loadCheckpoint reads the checkpoint, retrying while the source is
// unreachable; it logs the first failure and the recovery.
func loadCheckpoint(ctx context.Context, store *checkpoint.PGStore, log *slog.Logger) (cdc.LSN, error) {
	var failingSince time.Time
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		lsn, err := store.Load(ctx)
		if err == nil {
			if !failingSince.IsZero() {
				log.Info("source database reachable", "after", time.Since(failingSince).Round(time.Millisecond).String())
			}
			return lsn, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if isUndefinedTable(err) {
			return 0, fmt.Errorf("%w: run `qx-regions setup` first", err)
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
			log.Warn("source database not reachable, retrying", "err", err)
		} else {
			log.Debug("source database still not reachable", "err", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(backoff):
		}
	}
}

// checkSlot refuses to start when a checkpoint exists but the slot does
// not (creating it would skip events), or the slot is lost.
func checkSlot(ctx context.Context, pool *pgxpool.Pool, slot string, checkpointLSN cdc.LSN) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil // the stream retries the connection itself
	}
	defer conn.Release()
	info, ok, err := cdc.ReadSlot(ctx, conn.Conn(), slot)
	if err != nil {
		return nil
	}
	switch {
	case !ok && checkpointLSN != 0:
		return fmt.Errorf("%w: %s is gone but its checkpoint is at %s; events since may be lost. Check the target, then `qx-regions setup --force-new-slot`",
			cdc.ErrSlotMissing, slot, checkpointLSN)
	case !ok:
		return fmt.Errorf("%w: %s does not exist; run `qx-regions setup` first", cdc.ErrSlotMissing, slot)
	case info.WALStatus == "lost":
		return fmt.Errorf("%w: %s", cdc.ErrSlotLost, slot)
	}
	return nil
}

// readiness is what /readyz reports: the start phase's problems until
// the replicator exists, then the replicator's status.
type readiness struct {
	phase atomic.Pointer[[]string]
	rep   atomic.Pointer[replication.Replicator]
}

func (r *readiness) starting(problems ...string) { r.phase.Store(&problems) }

// adminHandler serves /healthz (the process is alive), /readyz (source and
// target connected, lag under the threshold) and /metrics.
func adminHandler(st *readiness, reg *prometheus.Registry, maxLag time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rep := st.rep.Load()
		if rep == nil {
			writeReady(w, map[string]any{"starting": true, "source_connected": false, "target_connected": false},
				*st.phase.Load())
			return
		}
		s := rep.Status()
		body := map[string]any{
			"source_connected": s.SourceConnected, "target_connected": s.TargetConnected,
			"lag_seconds": s.LagSeconds, "lag_bytes": s.LagBytes, "in_flight": s.InFlight,
			"safe_lsn": s.SafeLSN.String(),
		}
		var problems []string
		if !s.SourceConnected {
			problems = append(problems, "source not connected")
		}
		if !s.TargetConnected {
			problems = append(problems, "target not connected")
		}
		if s.LagSeconds > maxLag.Seconds() {
			problems = append(problems, fmt.Sprintf("lag %.1fs above %s", s.LagSeconds, maxLag))
		}
		writeReady(w, body, problems)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// writeReady answers /readyz: 200 without problems, 503 with them, JSON
// either way.
func writeReady(w http.ResponseWriter, body map[string]any, problems []string) {
	body["ready"] = len(problems) == 0
	w.Header().Set("Content-Type", "application/json")
	if len(problems) > 0 {
		body["problems"] = problems
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(body)
}
