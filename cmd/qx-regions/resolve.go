package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/resolver"
)

func runResolve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	s := newSettings("resolve", getenv, stderr)
	name := s.add("QX_REGION__NAME", "", "this region's name (used to check the result against QX_REGION__URLS)")
	urls := s.add("QX_REGION__URLS", "", "every region's base URL (JSON or name=url,...)")
	dsn := s.add("QX_RESOLVER__DSN", "", "Postgres holding qx_tenant_regions (default QX_REPLICATION__SOURCE_DSN)")
	srcDSN := s.add("QX_REPLICATION__SOURCE_DSN", "", "used when QX_RESOLVER__DSN is not set")
	def := s.add("QX_RESOLVER__DEFAULT_REGION", "", "region of tenants not in the table (empty: unknown tenants are an error)")
	if err := s.parse(args); err != nil {
		return err
	}
	if s.fs.NArg() != 1 {
		return usageErrorf("resolve takes one tenant id: qx-regions resolve TENANT")
	}
	tenant := s.fs.Arg(0)
	if err := resolver.ValidateTenantID(tenant); err != nil {
		return usageErrorf("%v", err)
	}
	var cfg regions.Config
	if name.value != "" {
		var err error
		if cfg, err = regions.ParseConfig(name.value, urls.value); err != nil {
			return usageErrorf("%v", err)
		}
	}
	from := dsn
	if from.value == "" {
		from = srcDSN
	}
	if from.value == "" {
		return usageErrorf("QX_RESOLVER__DSN (or QX_REPLICATION__SOURCE_DSN) is required")
	}
	d, err := from.dsn()
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, d)
	if err != nil {
		return fmt.Errorf("resolver DSN %s: %w", redactDSN(d), err)
	}
	defer pool.Close()
	db, err := resolver.NewDB(pool, resolver.DBConfig{Regions: cfg, DefaultRegion: def.value, QueryTimeout: 10 * time.Second})
	if err != nil {
		return usageErrorf("%v", err)
	}
	region, err := db.Resolve(ctx, tenant)
	if errors.Is(err, resolver.ErrUnknownTenant) {
		return fmt.Errorf("tenant has no home region in qx_tenant_regions and no default is set")
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, region)
	return nil
}
