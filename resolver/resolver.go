// Package resolver maps a tenant to its home region: the region whose
// Postgres primary takes the tenant's writes. [Static] serves a fixed map;
// [DB] reads the qx_tenant_regions table through a cache that LISTEN/NOTIFY
// keeps fresh in every region.
//
// It must not import the replication packages: a web service that only routes
// pulls in nothing but this package, router and the root regions package.
package resolver

import (
	"context"
	"errors"
)

// Resolver returns the home region of a tenant.
type Resolver interface {
	Resolve(ctx context.Context, tenantID string) (region string, err error)
}

var (
	// ErrUnknownTenant means the tenant has no home region and there is no default.
	ErrUnknownTenant = errors.New("unknown tenant")
	// ErrInvalidTenant means the tenant id is empty, longer than 256 bytes or
	// holds a control character.
	ErrInvalidTenant = errors.New("invalid tenant id")
	// ErrUnavailable means the home region cannot be known right now (the
	// database is unreachable and the tenant is not cached). Never answer it
	// with a default region: that would route a write to the wrong primary.
	ErrUnavailable = errors.New("tenant region unavailable")
	// ErrUnknownRegion means a region that the configuration does not list.
	ErrUnknownRegion = errors.New("unknown region")
)
