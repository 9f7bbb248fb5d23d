package cdc

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a Postgres WAL position.
type LSN = pglogrepl.LSN

// ParseLSN parses the X/Y text form of an LSN.
func ParseLSN(s string) (LSN, error) { return pglogrepl.ParseLSN(s) }

// Message is what a [Stream] delivers, in commit order: *Event values, and
// after the last event of each transaction a *Commit.
type Message interface{ isMessage() }

// Event is one inserted outbox row.
type Event struct {
	// CommitLSN is the LSN of the transaction's commit record.
	CommitLSN LSN
	// Index is the event's position among the transaction's outbox inserts,
	// from 0. (CommitLSN, Index) is stable across replays of the same WAL.
	Index      int
	CommitTime time.Time
	Xid        uint32
	// Values holds each mapped field's value in Postgres text format (the
	// payload of a bytea column is decoded to raw bytes). A nil entry is
	// NULL or an unmapped field.
	Values [NumFields][]byte
}

// Commit ends a transaction: every event of it was delivered before.
type Commit struct {
	CommitLSN LSN
	// EndLSN is the end of the transaction's commit record: the position to
	// declare safe once all of its events are stored by the target.
	EndLSN     LSN
	CommitTime time.Time
	Events     int
}

func (*Event) isMessage()  {}
func (*Commit) isMessage() {}

// Value returns the field's text value; ok is false for NULL or unmapped.
func (e *Event) Value(f Field) (v []byte, ok bool) {
	v = e.Values[f]
	return v, v != nil
}

// String returns the field's value as a string ("" for NULL).
func (e *Event) String(f Field) string { return string(e.Values[f]) }

// CreatedAt parses the created_at field; zero when NULL or unmapped.
func (e *Event) CreatedAt() (time.Time, error) {
	v, ok := e.Value(FieldCreatedAt)
	if !ok {
		return time.Time{}, nil
	}
	return parseTimestamp(string(v))
}

// Postgres's ISO text forms of timestamptz and timestamp; the stream sets
// DateStyle=ISO and TimeZone=UTC on its session.
var timestampLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07:00:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999",
}

func parseTimestamp(s string) (time.Time, error) {
	for _, l := range timestampLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("parse timestamp %q", s)
}

// decodeBytea turns the hex text form (\x0a0b) into bytes.
func decodeBytea(v []byte) ([]byte, error) {
	if len(v) < 2 || v[0] != '\\' || v[1] != 'x' {
		return nil, errors.New("bytea not in hex format")
	}
	out := make([]byte, hex.DecodedLen(len(v)-2))
	_, err := hex.Decode(out, v[2:])
	return out, err
}
