// Command qx-regions is the replicator daemon and operator CLI of
// qx-regions: setup, replicate, status, resolve, demo and version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr), os.Stderr))
}

// exitCode maps an error to the process status: 0 ok, 2 bad usage or
// configuration, 1 anything else.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "qx-regions:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "qx-regions:", err)
		return 1
	}
}

var commandHelp = map[string]string{
	"setup":     "Create the outbox, qx_tenant_regions (with its NOTIFY trigger), qx_replication_checkpoints,\nqx_replication_dead_letters, the publication and the slot for the configured target (idempotent).",
	"replicate": "Run the replicator of one source → target pair: stream the outbox by logical replication and\nforward every event to the target region's NATS JetStream. SIGTERM/SIGINT drain and save the checkpoint.",
	"status":    "Show the pair's slot, checkpoint, target stream, lag and dead letters.",
	"resolve":   "Print a tenant's home region from qx_tenant_regions: qx-regions resolve TENANT",
	"demo":      "Run two regions locally (Postgres clusters from this machine's binaries, NATS in process),\nreplicate both ways, write sample events and verify each arrived exactly once.",
	"version":   "Print the version.",
}

const topUsage = `qx-regions: multi-region replication and routing for Qx services.

Usage: qx-regions <command> [flags]

Commands:
  setup      create the tables, publication and slot (--print-sql prints the DDL)
  replicate  run the replicator daemon for one source → target pair
  status     show slot, checkpoint, target stream, lag and dead letters
  resolve    print a tenant's home region
  demo       run two local regions end to end and verify the result
  version    print the version

Run 'qx-regions <command> --help' for a command's settings. Every setting is an
environment variable (QX_...) with a flag of the same meaning that overrides it.
`

// run is the whole program; tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return usageErrorf("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "setup":
		return runSetup(ctx, rest, getenv, stdout, stderr)
	case "replicate":
		return runReplicate(ctx, rest, getenv, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, getenv, stdout, stderr)
	case "resolve":
		return runResolve(ctx, rest, getenv, stdout, stderr)
	case "demo":
		return runDemo(ctx, rest, getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "qx-regions", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, topUsage)
		return nil
	}
	fmt.Fprint(stderr, topUsage)
	return usageErrorf("unknown command %q", cmd)
}
