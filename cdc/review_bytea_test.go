package cdc

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// A database (or role) with bytea_output = 'escape': the walsender prints
// the bytea payload in escape format, which the stream cannot decode.
func TestReview_ByteaEscapeOutput(t *testing.T) {
	ctx := t.Context()
	dsn := pg.NewDatabase(t)
	conn := connect(t, dsn)
	db := conn.Config().Database
	for _, sql := range []string{
		`CREATE TABLE bin_outbox (id bigserial primary key, data bytea)`,
		`ALTER DATABASE "` + db + `" SET bytea_output = 'escape'`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	m := Mapping{Table: "bin_outbox"}
	m.Columns[FieldPayload] = "data"
	if err := EnsurePublication(ctx, conn, "bin_pub", m); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureSlot(ctx, conn, "qx_bin", true); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO bin_outbox (data) VALUES ('\x00ff10'::bytea)`); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(b)
	}), nil))
	r := startStream(t, Config{DSN: dsn, Slot: "qx_bin", Publication: "bin_pub", Mapping: &m,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: logger})
	select {
	case b, ok := <-r.s.Messages():
		if !ok {
			t.Fatalf("stream ended: %v", <-r.errc)
		}
		if ev, ok := b[0].(*Event); ok && string(ev.Values[FieldPayload]) != "\x00\xff\x10" {
			t.Fatalf("payload: got %q", ev.Values[FieldPayload])
		}
	case <-time.After(5 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("nothing delivered in 5s: the stream reconnects forever on the escape-format payload:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

var _ io.Writer = writerFunc(nil)
