// Package checkpoint keeps the replicator's safe LSN per slot in the source
// database, in the table qx_replication_checkpoints. The replicator loads it
// on start and saves it as the target acknowledges events; a saved position
// never moves backwards, and is never ahead of what the target stored
// (the replicator only saves its safe LSN).
package checkpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SchemaSQL creates the checkpoint table.
const SchemaSQL = `CREATE TABLE IF NOT EXISTS qx_replication_checkpoints (
    name       text PRIMARY KEY,
    lsn        pg_lsn NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
`

// PGStore is the checkpoint of one slot, kept in Postgres.
type PGStore struct {
	pool *pgxpool.Pool
	name string
}

// NewPGStore returns the store of the checkpoint named name (the slot name).
func NewPGStore(pool *pgxpool.Pool, name string) *PGStore {
	return &PGStore{pool: pool, name: name}
}

// Setup creates the checkpoint table if it does not exist.
func (s *PGStore) Setup(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, SchemaSQL); err != nil {
		return fmt.Errorf("create checkpoint table: %w", err)
	}
	return nil
}

// Load returns the saved LSN; zero when nothing was saved yet.
func (s *PGStore) Load(ctx context.Context) (pglogrepl.LSN, error) {
	var text string
	err := s.pool.QueryRow(ctx, "SELECT lsn::text FROM qx_replication_checkpoints WHERE name = $1", s.name).Scan(&text)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load checkpoint %s: %w", s.name, err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return 0, fmt.Errorf("load checkpoint %s: %w", s.name, err)
	}
	return lsn, nil
}

// Save records lsn unless a later position is saved already.
func (s *PGStore) Save(ctx context.Context, lsn pglogrepl.LSN) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO qx_replication_checkpoints (name, lsn, updated_at) VALUES ($1, $2::pg_lsn, now())
		ON CONFLICT (name) DO UPDATE SET lsn = GREATEST(qx_replication_checkpoints.lsn, EXCLUDED.lsn), updated_at = now()`,
		s.name, lsn.String())
	if err != nil {
		return fmt.Errorf("save checkpoint %s at %s: %w", s.name, lsn, err)
	}
	return nil
}
