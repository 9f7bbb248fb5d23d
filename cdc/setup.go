package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultPublication is the publication name used when none is configured.
const DefaultPublication = "qx_outbox_pub"

// SlotName is the slot of one source→target pair: qx_<source>_to_<target>,
// with "-" written as "_". The result must be a valid identifier of at most
// 63 bytes.
func SlotName(source, target string) (string, error) {
	name := "qx_" + strings.ReplaceAll(source, "-", "_") + "_to_" + strings.ReplaceAll(target, "-", "_")
	if err := ValidateIdentifier(name); err != nil {
		return "", fmt.Errorf("slot name for %s → %s: %w", source, target, err)
	}
	return name, nil
}

// ValidateIdentifier checks a slot or publication name: 1-63 bytes of
// lowercase a-z, 0-9 and _ (what Postgres accepts for slot names).
func ValidateIdentifier(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("%w: %q must be 1 to 63 bytes", ErrBadName, name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("%w: %q may hold only a-z, 0-9 and _", ErrBadName, name)
		}
	}
	return nil
}

// CheckPrerequisites verifies what logical replication of the outbox needs:
// wal_level=logical, a role that may replicate, the outbox table with the
// mapped columns, and (when the slot does not exist yet) a free slot.
func CheckPrerequisites(ctx context.Context, conn *pgx.Conn, m Mapping, slot string) error {
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w: it is %q; set wal_level = logical and restart Postgres", ErrWALLevel, level)
	}
	var canReplicate bool
	if err := conn.QueryRow(ctx,
		"SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&canReplicate); err != nil {
		return fmt.Errorf("read role attributes: %w", err)
	}
	if !canReplicate {
		return fmt.Errorf("%w: ALTER ROLE %s REPLICATION", ErrNoReplicationPrivilege, conn.Config().User)
	}
	if _, err := m.Validate(ctx, conn); err != nil {
		return err
	}
	var exists bool
	var used, max int
	if err := conn.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
		       (SELECT count(*) FROM pg_replication_slots),
		       current_setting('max_replication_slots')::int`, slot).Scan(&exists, &used, &max); err != nil {
		return fmt.Errorf("read replication slots: %w", err)
	}
	if !exists && used >= max {
		return fmt.Errorf("%w: %d of %d in use", ErrNoSlotRoom, used, max)
	}
	return nil
}

// PublicationOptions are the options of the publication that
// EnsurePublication creates: inserts only, a partitioned outbox's rows
// under the partitioned table's name.
const PublicationOptions = "publish = 'insert', publish_via_partition_root = true"

// EnsurePublication creates the publication of the outbox table, for
// inserts only, unless it exists. An existing publication is reused as it is;
// it is an error when it does not include the outbox table.
func EnsurePublication(ctx context.Context, conn *pgx.Conn, name string, m Mapping) error {
	if err := ValidateIdentifier(name); err != nil {
		return fmt.Errorf("publication: %w", err)
	}
	m.fill()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("read publication %s: %w", name, err)
	}
	if !exists {
		// publish_via_partition_root: a partitioned outbox's rows arrive
		// under its own name, not its partitions'.
		_, err := conn.Exec(ctx, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (%s)",
			pgx.Identifier{name}.Sanitize(), m.QualifiedTable(), PublicationOptions))
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42710") { // duplicate_object: a concurrent setup won
			return fmt.Errorf("create publication %s: %w", name, err)
		}
	}
	return checkPublished(ctx, conn, name, m)
}

// checkPublished checks that publication name publishes the outbox table
// under its own name.
func checkPublished(ctx context.Context, conn *pgx.Conn, name string, m Mapping) error {
	m.fill()
	var included bool
	if err := conn.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`,
		name, m.Schema, m.Table).Scan(&included); err != nil {
		return fmt.Errorf("read publication %s: %w", name, err)
	}
	if !included {
		var partitioned bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'p')`, m.Schema, m.Table).Scan(&partitioned); err != nil {
			return fmt.Errorf("read outbox table: %w", err)
		}
		if partitioned {
			return fmt.Errorf("%w: %s publishes the partitions of %s under their own names: ALTER PUBLICATION %s SET (publish_via_partition_root = true)",
				ErrPublication, name, m.QualifiedTable(), name)
		}
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", name).Scan(&exists); err != nil {
			return fmt.Errorf("read publication %s: %w", name, err)
		}
		if !exists {
			return fmt.Errorf("%w: %s does not exist; run qx-regions setup", ErrPublication, name)
		}
		return fmt.Errorf("%w: %s does not publish %s: ALTER PUBLICATION %s ADD TABLE %s",
			ErrPublication, name, m.QualifiedTable(), name, m.QualifiedTable())
	}
	return nil
}

// SlotInfo describes a replication slot.
type SlotInfo struct {
	Name              string
	Plugin            string
	Database          string
	Active            bool
	ActivePID         int
	WALStatus         string // reserved, extended, unreserved, lost
	ConfirmedFlushLSN LSN
	RetainedBytes     int64 // pg_current_wal_lsn() - restart_lsn
}

// ReadSlot returns the slot's state; ok is false when it does not exist.
func ReadSlot(ctx context.Context, conn *pgx.Conn, name string) (info SlotInfo, ok bool, err error) {
	var pid *int32
	var walStatus, plugin, db *string
	var flush *string
	var retained *int64
	err = conn.QueryRow(ctx, `
		SELECT slot_name, plugin, database, active, active_pid, wal_status,
		       confirmed_flush_lsn::text,
		       (pg_current_wal_lsn() - restart_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&info.Name, &plugin, &db, &info.Active, &pid, &walStatus, &flush, &retained)
	if errors.Is(err, pgx.ErrNoRows) {
		return SlotInfo{}, false, nil
	}
	if err != nil {
		return SlotInfo{}, false, fmt.Errorf("read slot %s: %w", name, err)
	}
	if pid != nil {
		info.ActivePID = int(*pid)
	}
	if walStatus != nil {
		info.WALStatus = *walStatus
	}
	if plugin != nil {
		info.Plugin = *plugin
	}
	if db != nil {
		info.Database = *db
	}
	if flush != nil {
		info.ConfirmedFlushLSN, _ = ParseLSN(*flush)
	}
	if retained != nil {
		info.RetainedBytes = *retained
	}
	return info, true, nil
}

// EnsureSlot makes sure the pgoutput slot exists and is usable. When it is
// absent it is created only if create is true; a caller that holds a
// checkpoint for the slot passes false, because a new slot would start at
// the current WAL position and skip every event in between (ErrSlotMissing).
// A lost slot is ErrSlotLost; it is never dropped or recreated here.
func EnsureSlot(ctx context.Context, conn *pgx.Conn, name string, create bool) (created bool, err error) {
	if err := ValidateIdentifier(name); err != nil {
		return false, fmt.Errorf("slot: %w", err)
	}
	info, ok, err := ReadSlot(ctx, conn, name)
	if err != nil {
		return false, err
	}
	if ok {
		return false, checkSlot(info, conn.Config().Database)
	}
	if !create {
		return false, fmt.Errorf("%w: %s does not exist although a checkpoint for it does; events written since may be gone. "+
			"Recreate it deliberately (qx-regions setup --force-new-slot) after checking the target", ErrSlotMissing, name)
	}
	_, err = conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name)
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) && pgErr.Code == "42710" { // created concurrently
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create slot %s: %w", name, err)
	}
	return true, nil
}

func checkSlot(info SlotInfo, database string) error {
	if info.WALStatus == "lost" {
		return fmt.Errorf("%w: %s; events in the removed WAL cannot be replicated. Reconcile the target, then drop and recreate the slot",
			ErrSlotLost, info.Name)
	}
	if info.Plugin != "pgoutput" || (database != "" && info.Database != database) {
		return fmt.Errorf("%w: %s uses plugin %q in database %q, want pgoutput in %q",
			ErrSlotPlugin, info.Name, info.Plugin, info.Database, database)
	}
	return nil
}
