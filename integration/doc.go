// Package integration holds the end-to-end fault suite of qx-regions: the
// real qx-regions binary, run as an operator runs it, between a real
// PostgreSQL cluster (the source region) and a real nats-server process
// (the target region's JetStream), with a TCP proxy in front of each server
// that adds latency, cuts connections and partitions traffic.
//
// Every scenario ends with the same check: the whole target stream is read
// and compared with the committed outbox rows, and the missing, duplicated
// and out-of-order counts must all be zero.
//
// `make test` runs the short versions; `make soak` (QX_SOAK=1) runs the long
// ones and prints a summary table.
package integration
