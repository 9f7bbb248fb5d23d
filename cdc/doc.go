// Package cdc is the Postgres side of the replicator: it checks the
// prerequisites of logical replication, creates (idempotently) the outbox
// publication and the pgoutput slot, streams the outbox table's inserts in
// commit order, and reports the consumer's safe position back to Postgres in
// standby status updates.
//
// It follows the streaming replication protocol
// (https://www.postgresql.org/docs/current/protocol-replication.html) and the
// pgoutput message formats
// (https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html).
//
// Only inserts are events: updates and deletes of outbox rows (for example a
// cleanup job that deletes old rows) are never forwarded, and the publication
// created here publishes inserts only. Rows inserted before the slot existed
// are not streamed: the slot starts at the WAL position where it was created.
//
// Positions: every event carries the commit LSN of its transaction and its
// index among the transaction's outbox inserts. Streaming the same WAL again
// yields the same positions, which is what dedup ids are built from. The
// consumer declares a safe LSN (the end of the newest transaction all of
// whose events the target has stored) with [Stream.SetSafe]; nothing beyond it
// is ever confirmed to Postgres, except while nothing at all is pending, when
// the server's keepalive position is confirmed so that an idle outbox does not
// pin WAL.
package cdc
