package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/replication"
)

// pairStatus is what `status --json` prints.
type pairStatus struct {
	Source      string        `json:"source"`
	Target      string        `json:"target"`
	SourceDSN   string        `json:"source_dsn"`
	Slot        slotStatus    `json:"slot"`
	Checkpoint  string        `json:"checkpoint_lsn"`
	Stream      *streamStatus `json:"stream,omitempty"`
	StreamError string        `json:"stream_error,omitempty"`
	LagBytes    int64         `json:"lag_bytes"`
	DeadLetters int64         `json:"dead_letters"`
}

type slotStatus struct {
	Name              string `json:"name"`
	Exists            bool   `json:"exists"`
	Active            bool   `json:"active"`
	WALStatus         string `json:"wal_status"`
	RetainedWALBytes  int64  `json:"retained_wal_bytes"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn"`
}

type streamStatus struct {
	Name            string  `json:"name"`
	Messages        uint64  `json:"messages"`
	LastSequence    uint64  `json:"last_sequence"`
	DuplicateWindow string  `json:"duplicate_window"`
	LastPosition    string  `json:"last_position,omitempty"`
	Bytes           uint64  `json:"bytes"`
	Consumers       int     `json:"consumers"`
	FirstSequence   uint64  `json:"first_sequence"`
	AgeSeconds      float64 `json:"-"`
}

func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	s := newSettings("status", getenv, stderr)
	p := addPairSettings(s, true)
	asJSON := s.fs.Bool("json", false, "print JSON for scripts")
	if err := s.parse(args); err != nil {
		return err
	}
	c, err := p.load()
	if err != nil {
		return err
	}
	log := newLogger(stderr, c.logFormat, c.logLevel)
	st, err := collectStatus(ctx, c, log)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "pair\t%s → %s\n", st.Source, st.Target)
	fmt.Fprintf(tw, "source\t%s\n", st.SourceDSN)
	fmt.Fprintf(tw, "slot\t%s (exists %v, active %v, wal_status %s)\n", st.Slot.Name, st.Slot.Exists, st.Slot.Active, st.Slot.WALStatus)
	fmt.Fprintf(tw, "confirmed flush\t%s\n", st.Slot.ConfirmedFlushLSN)
	fmt.Fprintf(tw, "retained WAL\t%d bytes\n", st.Slot.RetainedWALBytes)
	fmt.Fprintf(tw, "checkpoint\t%s\n", st.Checkpoint)
	fmt.Fprintf(tw, "lag\t%d bytes\n", st.LagBytes)
	if st.Stream != nil {
		fmt.Fprintf(tw, "target stream\t%s: %d messages, last sequence %d, duplicate window %s, last position %s\n",
			st.Stream.Name, st.Stream.Messages, st.Stream.LastSequence, st.Stream.DuplicateWindow, st.Stream.LastPosition)
	} else {
		fmt.Fprintf(tw, "target stream\tunavailable: %s\n", st.StreamError)
	}
	fmt.Fprintf(tw, "dead letters\t%d\n", st.DeadLetters)
	return tw.Flush()
}

func collectStatus(ctx context.Context, c *pairConfig, log *slog.Logger) (*pairStatus, error) {
	st := &pairStatus{Source: c.source, Target: c.target, SourceDSN: redactDSN(c.sourceDSN), Slot: slotStatus{Name: c.slot}}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, c.sourceDSN)
	if err != nil {
		return nil, fmt.Errorf("connect source %s: %w", redactDSN(c.sourceDSN), err)
	}
	defer conn.Close(context.Background())
	info, ok, err := cdc.ReadSlot(cctx, conn, c.slot)
	if err != nil {
		return nil, err
	}
	if ok {
		st.Slot = slotStatus{Name: c.slot, Exists: true, Active: info.Active, WALStatus: info.WALStatus,
			RetainedWALBytes: info.RetainedBytes, ConfirmedFlushLSN: info.ConfirmedFlushLSN.String()}
		if err := conn.QueryRow(cctx, "SELECT (pg_current_wal_lsn() - $1::pg_lsn)::bigint", info.ConfirmedFlushLSN.String()).Scan(&st.LagBytes); err != nil {
			return nil, fmt.Errorf("read lag: %w", err)
		}
	}
	var lsn string
	err = conn.QueryRow(cctx, "SELECT lsn::text FROM qx_replication_checkpoints WHERE name = $1", c.slot).Scan(&lsn)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		st.Checkpoint = "none"
	case isUndefinedTable(err):
		st.Checkpoint = "no table (run setup)"
	case err != nil:
		return nil, fmt.Errorf("read checkpoint: %w", err)
	default:
		st.Checkpoint = lsn
	}
	err = conn.QueryRow(cctx, "SELECT count(*) FROM qx_replication_dead_letters WHERE slot = $1", c.slot).Scan(&st.DeadLetters)
	if err != nil && !isUndefinedTable(err) {
		return nil, fmt.Errorf("count dead letters: %w", err)
	}

	nc, err := connectNATSOnce(c, log)
	if err != nil {
		st.StreamError = err.Error()
		return st, nil
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(cctx, c.stream)
	if err != nil {
		st.StreamError = err.Error()
		return st, nil
	}
	si := s.CachedInfo()
	st.Stream = &streamStatus{Name: c.stream, Messages: si.State.Msgs, LastSequence: si.State.LastSeq,
		FirstSequence: si.State.FirstSeq, Bytes: si.State.Bytes, Consumers: si.State.Consumers,
		DuplicateWindow: si.Config.Duplicates.String()}
	if si.State.Msgs > 0 {
		if m, err := s.GetMsg(cctx, si.State.LastSeq); err == nil {
			st.Stream.LastPosition = m.Header.Get(replication.HeaderSourceLSN)
		}
	}
	return st, nil
}

func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}
