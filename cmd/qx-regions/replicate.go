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
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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
// ready, when not nil, is told the admin server's address.
func replicate(ctx context.Context, c *pairConfig, log *slog.Logger, ready func(adminAddr string)) error {
	log.Info("replicator starting", "version", version, "source_dsn", redactDSN(c.sourceDSN),
		"target_nats", redactNATS(c.natsURL), "slot", c.slot, "stream", c.stream)

	pool, err := pgxpool.New(ctx, c.sourceDSN)
	if err != nil {
		return fmt.Errorf("source DSN %s: %w", redactDSN(c.sourceDSN), err)
	}
	defer pool.Close()
	store := checkpoint.NewPGStore(pool, c.slot)
	start, err := loadCheckpoint(ctx, store, log)
	if err != nil {
		return err
	}
	if err := checkSlot(ctx, pool, c.slot, start); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	src, err := cdc.New(cdc.Config{
		DSN: c.sourceDSN, Slot: c.slot, Publication: c.publication, Mapping: &c.mapping,
		StartLSN: start, StatusInterval: c.statusInterval, Logger: log,
	})
	if err != nil {
		return err
	}
	nc, err := connectNATS(c.natsURL, "qx-regions "+c.slot, c.nats, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	rep, err := replication.New(replication.Config{
		SourceRegion: c.source, TargetRegion: c.target, Mapping: &c.mapping,
		SubjectTemplate: c.subject, Stream: c.stream, DuplicateWindow: c.dupWindow,
		MaxInFlight: c.maxInFlight, PublishTimeout: c.publishTimeout, ShutdownTimeout: c.shutdownTimeout,
		Logger: log, Registerer: reg,
	}, src, nc, store, replication.NewPGDeadLetters(pool, c.slot))
	if err != nil {
		return err
	}

	var g oklogrun.Group
	{ // the replicator
		rctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
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
		srv := &http.Server{Handler: adminHandler(rep, reg, c.readyMaxLag), ReadHeaderTimeout: 5 * time.Second}
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

func loadCheckpoint(ctx context.Context, store *checkpoint.PGStore, log *slog.Logger) (cdc.LSN, error) {
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		lsn, err := store.Load(ctx)
		if err == nil {
			return lsn, nil
		}
		if isUndefinedTable(err) {
			return 0, fmt.Errorf("%w: run `qx-regions setup` first", err)
		}
		log.Warn("source database not reachable, retrying", "err", err)
		select {
		case <-ctx.Done():
			return 0, nil
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

// adminHandler serves /healthz (the process is alive), /readyz (source and
// target connected, lag under the threshold) and /metrics.
func adminHandler(rep *replication.Replicator, reg *prometheus.Registry, maxLag time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		st := rep.Status()
		body := map[string]any{
			"source_connected": st.SourceConnected, "target_connected": st.TargetConnected,
			"lag_seconds": st.LagSeconds, "lag_bytes": st.LagBytes, "in_flight": st.InFlight,
			"safe_lsn": st.SafeLSN.String(),
		}
		var problems []string
		if !st.SourceConnected {
			problems = append(problems, "source not connected")
		}
		if !st.TargetConnected {
			problems = append(problems, "target not connected")
		}
		if st.LagSeconds > maxLag.Seconds() {
			problems = append(problems, fmt.Sprintf("lag %.1fs above %s", st.LagSeconds, maxLag))
		}
		body["ready"] = len(problems) == 0
		if len(problems) > 0 {
			body["problems"] = problems
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
