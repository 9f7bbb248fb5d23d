package cdc

import "errors"

var (
	// ErrWALLevel means the server's wal_level is not logical.
	ErrWALLevel = errors.New("wal_level is not logical")
	// ErrNoReplicationPrivilege means the role may not replicate.
	ErrNoReplicationPrivilege = errors.New("role has neither REPLICATION nor superuser")
	// ErrNoSlotRoom means max_replication_slots is used up.
	ErrNoSlotRoom = errors.New("no free replication slot (raise max_replication_slots)")
	// ErrOutboxTable means the outbox table is missing, or a mapped column is
	// missing or of an unusable type.
	ErrOutboxTable = errors.New("outbox table does not match the mapping")
	// ErrPublication means the publication is missing or does not publish
	// the outbox table under its own name: the stream would carry nothing.
	ErrPublication = errors.New("publication does not publish the outbox table")
	// ErrSlotMissing means the slot does not exist although a checkpoint
	// says it did: creating it again would silently skip events.
	ErrSlotMissing = errors.New("replication slot is missing")
	// ErrSlotLost means Postgres invalidated the slot (wal_status = 'lost'):
	// WAL it needed was removed, so events may be gone.
	ErrSlotLost = errors.New("replication slot was invalidated (wal_status lost)")
	// ErrSlotInUse means another process is streaming from the slot.
	ErrSlotInUse = errors.New("replication slot is in use by another process")
	// ErrSlotPlugin means an existing slot of that name is not a logical
	// pgoutput slot in this database.
	ErrSlotPlugin = errors.New("replication slot exists with another plugin or database")
	// ErrBadName means a slot or publication name is not a valid identifier.
	ErrBadName = errors.New("invalid identifier")
)
