package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/qx-platform/regions/cdc"
)

// DeadLettersSQL creates the table of rows that could not be forwarded.
// Replays of the same WAL do not add a row twice.
const DeadLettersSQL = `CREATE TABLE IF NOT EXISTS qx_replication_dead_letters (
    id         bigserial PRIMARY KEY,
    slot       text        NOT NULL,
    commit_lsn pg_lsn      NOT NULL,
    idx        integer     NOT NULL,
    reason     text        NOT NULL,
    row_data   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (slot, commit_lsn, idx)
);
`

// DeadLetter is an outbox row that the target can never accept.
type DeadLetter struct {
	Position Position
	Reason   string
	// Row is the row's mapped columns, column name → text value (nil for
	// NULL); a value that is not UTF-8 text is given as hex.
	Row map[string]*string
}

// PGDeadLetters writes dead letters to qx_replication_dead_letters in the
// source database, where an operator can see them beside the outbox.
type PGDeadLetters struct {
	pool *pgxpool.Pool
	slot string
}

// NewPGDeadLetters returns the dead-letter table of slot.
func NewPGDeadLetters(pool *pgxpool.Pool, slot string) *PGDeadLetters {
	return &PGDeadLetters{pool: pool, slot: slot}
}

// Write stores d; writing the same position twice keeps the first.
func (p *PGDeadLetters) Write(ctx context.Context, d DeadLetter) error {
	row, err := json.Marshal(d.Row)
	if err != nil {
		return fmt.Errorf("encode dead letter row: %w", err)
	}
	_, err = p.pool.Exec(ctx, `
		INSERT INTO qx_replication_dead_letters (slot, commit_lsn, idx, reason, row_data)
		VALUES ($1, $2::pg_lsn, $3, $4, $5) ON CONFLICT (slot, commit_lsn, idx) DO NOTHING`,
		p.slot, d.Position.LSN.String(), d.Position.Index, d.Reason, row)
	if err != nil {
		return fmt.Errorf("write dead letter at %s: %w", d.Position, err)
	}
	return nil
}

// Count returns how many dead letters the slot has.
func (p *PGDeadLetters) Count(ctx context.Context) (int64, error) {
	var n int64
	err := p.pool.QueryRow(ctx, "SELECT count(*) FROM qx_replication_dead_letters WHERE slot = $1", p.slot).Scan(&n)
	return n, err
}

// rawRow is the row as the mapping names its columns.
func rawRow(ev *cdc.Event, m *cdc.Mapping) map[string]*string {
	row := make(map[string]*string, cdc.NumFields)
	for f := cdc.Field(0); f < cdc.NumFields; f++ {
		col := m.Columns[f]
		if col == "" {
			continue
		}
		v := ev.Values[f]
		if v == nil {
			row[col] = nil
			continue
		}
		s := string(v)
		if !utf8.Valid(v) {
			s = fmt.Sprintf("\\x%x", v)
		}
		row[col] = &s
	}
	return row
}
