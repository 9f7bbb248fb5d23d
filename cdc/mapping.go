package cdc

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Field is a logical field of an outbox event.
type Field int

// The logical fields an outbox row is mapped to.
const (
	FieldEventID Field = iota
	FieldTenantID
	FieldAggregateType
	FieldAggregateID
	FieldEventType
	FieldPayload
	FieldHeaders
	FieldCreatedAt
	FieldOrigin
	NumFields
)

var fieldNames = [NumFields]string{"event_id", "tenant_id", "aggregate_type", "aggregate_id",
	"event_type", "payload", "headers", "created_at", "origin_region"}

// String is the field's name as used in configuration (e.g. "event_id").
func (f Field) String() string {
	if f < 0 || f >= NumFields {
		return fmt.Sprintf("field(%d)", int(f))
	}
	return fieldNames[f]
}

// ParseField returns the field named s (as printed by Field.String).
func ParseField(s string) (Field, error) {
	for i, n := range fieldNames {
		if n == s {
			return Field(i), nil
		}
	}
	return 0, fmt.Errorf("unknown outbox field %q (known: %s)", s, strings.Join(fieldNames[:], ", "))
}

// Mapping tells which table is the outbox and which of its columns holds
// each logical field. An empty column name means the table has no such
// column (only the payload is required).
type Mapping struct {
	Schema  string // default "public"
	Table   string // default "qx_outbox"
	Columns [NumFields]string
}

// DefaultMapping is the qx_outbox table that `qx-regions setup` creates.
func DefaultMapping() Mapping {
	m := Mapping{Schema: "public", Table: "qx_outbox"}
	copy(m.Columns[:], fieldNames[:FieldOrigin]) // qx_outbox has no origin column
	return m
}

// OutboxSQL is the DDL of the default outbox table.
const OutboxSQL = `CREATE TABLE IF NOT EXISTS qx_outbox (
    id             bigserial PRIMARY KEY,
    event_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id      text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    headers        jsonb       NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
`

// usable lists the column types each field can be read from.
var usable = [NumFields][]string{
	FieldEventID:       {"uuid", "text", "character varying", "bigint", "integer"},
	FieldTenantID:      {"text", "character varying", "uuid", "bigint", "integer"},
	FieldAggregateType: {"text", "character varying"},
	FieldAggregateID:   {"text", "character varying", "uuid", "bigint", "integer"},
	FieldEventType:     {"text", "character varying"},
	FieldPayload:       {"jsonb", "json", "text", "bytea", "character varying"},
	FieldHeaders:       {"jsonb", "json"},
	FieldCreatedAt:     {"timestamp with time zone", "timestamp without time zone"},
	FieldOrigin:        {"text", "character varying"},
}

func (m *Mapping) fill() {
	if m.Schema == "" {
		m.Schema = "public"
	}
	if m.Table == "" {
		m.Table = "qx_outbox"
	}
}

// QualifiedTable is the quoted schema.table name.
func (m Mapping) QualifiedTable() string {
	m.fill()
	return pgx.Identifier{m.Schema, m.Table}.Sanitize()
}

// Validate checks the mapping against the live table: it exists, and every
// mapped column exists with a usable type. It returns the column types.
func (m Mapping) Validate(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	m.fill()
	if m.Columns[FieldPayload] == "" {
		return nil, fmt.Errorf("%w: the payload field must be mapped to a column", ErrOutboxTable)
	}
	rows, err := conn.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, NULL)
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped`,
		m.Schema, m.Table)
	if err != nil {
		return nil, fmt.Errorf("read outbox columns: %w", err)
	}
	types, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var p [2]string
		err := r.Scan(&p[0], &p[1])
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox columns: %w", err)
	}
	if len(types) == 0 {
		return nil, fmt.Errorf("%w: table %s does not exist", ErrOutboxTable, m.QualifiedTable())
	}
	seen := map[string]Field{}
	for f := Field(0); f < NumFields; f++ {
		col := m.Columns[f]
		if col == "" {
			continue
		}
		if g, ok := seen[col]; ok {
			return nil, fmt.Errorf("%w: column %q is mapped to both %s and %s", ErrOutboxTable, col, g, f)
		}
		seen[col] = f
	}
	byName := make(map[string]string, len(types))
	for _, t := range types {
		byName[t[0]] = t[1]
	}
	for f := Field(0); f < NumFields; f++ {
		col := m.Columns[f]
		if col == "" {
			continue
		}
		typ, ok := byName[col]
		if !ok {
			return nil, fmt.Errorf("%w: %s has no column %q (mapped to %s)", ErrOutboxTable, m.QualifiedTable(), col, f)
		}
		found := false
		for _, u := range usable[f] {
			found = found || typ == u
		}
		if !found {
			return nil, fmt.Errorf("%w: column %s.%s is %s, which cannot hold %s (use one of: %s)",
				ErrOutboxTable, m.Table, col, typ, f, strings.Join(usable[f], ", "))
		}
	}
	return byName, nil
}
