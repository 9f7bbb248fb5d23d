package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/checkpoint"
	"github.com/qx-platform/regions/replication"
	"github.com/qx-platform/regions/resolver"
)

func runSetup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	s := newSettings("setup", getenv, stderr)
	p := addPairSettings(s, false)
	printSQL := s.fs.Bool("print-sql", false, "print the DDL instead of running it (for your own migration tool)")
	forceNewSlot := s.fs.Bool("force-new-slot", false,
		"create the slot although a checkpoint says one existed, and drop that checkpoint: events written while the slot was gone are NOT replicated")
	if err := s.parse(args); err != nil {
		return err
	}
	if *printSQL {
		return printSetupSQL(stdout, p)
	}
	c, err := p.load()
	if err != nil {
		return err
	}
	log := newLogger(stderr, c.logFormat, c.logLevel)
	created, err := setupPair(ctx, c, *forceNewSlot, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "setup done: slot %s (%s), publication %s, outbox %s\n", c.slot,
		map[bool]string{true: "created", false: "exists"}[created], c.publication, c.mapping.QualifiedTable())
	return nil
}

// setupPair creates (idempotently) everything one pair needs in its source
// database; created reports whether the slot is new.
func setupPair(ctx context.Context, c *pairConfig, forceNewSlot bool, log *slog.Logger) (created bool, err error) {
	conn, err := pgx.Connect(ctx, c.sourceDSN)
	if err != nil {
		return false, fmt.Errorf("connect source %s: %w", redactDSN(c.sourceDSN), err)
	}
	defer conn.Close(context.Background())

	steps := []struct{ what, sql string }{
		{"checkpoint table", checkpoint.SchemaSQL},
		{"dead-letter table", replication.DeadLettersSQL},
		{"tenant region table", resolver.SchemaSQL},
	}
	if c.mapping.Schema == "public" && c.mapping.Table == "qx_outbox" {
		steps = append([]struct{ what, sql string }{{"outbox table", cdc.OutboxSQL}}, steps...)
	}
	for _, st := range steps {
		if _, err := conn.Exec(ctx, st.sql); err != nil {
			return false, fmt.Errorf("create %s: %w", st.what, err)
		}
	}
	if err := cdc.CheckPrerequisites(ctx, conn, c.mapping, c.slot); err != nil {
		return false, err
	}
	if err := cdc.EnsurePublication(ctx, conn, c.publication, c.mapping); err != nil {
		return false, err
	}
	var hasCheckpoint bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM qx_replication_checkpoints WHERE name = $1)", c.slot).Scan(&hasCheckpoint); err != nil {
		return false, fmt.Errorf("read checkpoint: %w", err)
	}
	created, err = cdc.EnsureSlot(ctx, conn, c.slot, !hasCheckpoint || forceNewSlot)
	if err != nil {
		return false, err
	}
	if created && hasCheckpoint {
		if _, err := conn.Exec(ctx, "DELETE FROM qx_replication_checkpoints WHERE name = $1", c.slot); err != nil {
			return false, fmt.Errorf("drop stale checkpoint: %w", err)
		}
		log.Warn("created a new slot over a stale checkpoint: events written while the slot was missing are not replicated", "slot", c.slot)
	}
	log.Info("setup done", "source", c.source, "target", c.target, "slot", c.slot, "slot_created", created,
		"publication", c.publication, "outbox", c.mapping.QualifiedTable())
	return created, nil
}

// printSetupSQL prints what setup would run. The slot is named from the
// region settings when they are given.
func printSetupSQL(w io.Writer, p *pairSettings) error {
	slot := p.slot.value
	if slot == "" && p.regionName.value != "" && p.targetRegion.value != "" {
		slot, _ = cdc.SlotName(p.regionName.value, p.targetRegion.value)
	}
	if slot == "" {
		slot = "qx_<source>_to_<target>"
	}
	m, err := p.parseMapping()
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("-- qx-regions setup: run on the source region's database.\n\n")
	if m.Schema == "public" && m.Table == "qx_outbox" {
		b.WriteString("-- The default outbox (pgcrypto's gen_random_uuid is built in from PostgreSQL 13).\n" + cdc.OutboxSQL + "\n")
	}
	b.WriteString(checkpoint.SchemaSQL + "\n" + replication.DeadLettersSQL + "\n" + resolver.SchemaSQL + "\n")
	fmt.Fprintf(&b, "-- Publish the outbox's inserts only (a partitioned outbox's under its own name).\nCREATE PUBLICATION %s FOR TABLE %s WITH (%s);\n\n",
		p.publication.value, m.QualifiedTable(), cdc.PublicationOptions)
	fmt.Fprintf(&b, "-- One slot per target region.\nSELECT pg_create_logical_replication_slot('%s', 'pgoutput');\n", slot)
	_, err = io.WriteString(w, b.String())
	return err
}
