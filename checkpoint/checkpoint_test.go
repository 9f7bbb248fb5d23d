package checkpoint

import (
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/qx-platform/regions/internal/testenv"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.MainPostgres(m, &pg) }

func TestPGStore(t *testing.T) {
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := NewPGStore(pool, "qx_a_to_b")
	for range 2 { // idempotent
		if err := s.Setup(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.Load(ctx); err != nil || got != 0 {
		t.Fatalf("empty store: got %s, %v; want 0", got, err)
	}
	steps := []struct{ save, want pglogrepl.LSN }{
		{0x1000, 0x1000},
		{0x1_0000_0000, 0x1_0000_0000},
		{0x2000, 0x1_0000_0000}, // never backwards
		{0x1_0000_0010, 0x1_0000_0010},
	}
	for _, st := range steps {
		if err := s.Save(ctx, st.save); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Load(ctx); err != nil || got != st.want {
			t.Fatalf("after Save(%s): got %s, %v; want %s", st.save, got, err, st.want)
		}
	}
	other := NewPGStore(pool, "qx_a_to_c")
	if got, _ := other.Load(ctx); got != 0 {
		t.Fatalf("other slot: got %s, want 0", got)
	}
}
