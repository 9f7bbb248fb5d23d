package resolver

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/qx-platform/regions"
)

// Static resolves tenants from a fixed map, for tests, demos and deployments
// whose tenant placement never changes. It is safe for concurrent use.
type Static struct {
	tenants       map[string]string
	defaultRegion string
}

var _ Resolver = (*Static)(nil)

// NewStatic returns a Static that maps each tenant of tenants to its region,
// and every other tenant to defaultRegion ("" means no default: an unknown
// tenant gets [ErrUnknownTenant]). The map is copied.
//
// NewStatic does not check the regions; call [Static.Validate] with the
// region configuration to do so.
func NewStatic(tenants map[string]string, defaultRegion string) *Static {
	return &Static{tenants: maps.Clone(tenants), defaultRegion: defaultRegion}
}

// Resolve returns the region of tenantID, the default region for a tenant
// that is not in the map, or [ErrUnknownTenant] when there is no default. An
// invalid tenant id gets [ErrInvalidTenant].
func (s *Static) Resolve(_ context.Context, tenantID string) (string, error) {
	if err := ValidateTenantID(tenantID); err != nil {
		return "", fmt.Errorf("resolve tenant: %w", err)
	}
	if region, ok := s.tenants[tenantID]; ok {
		return region, nil
	}
	if s.defaultRegion != "" {
		return s.defaultRegion, nil
	}
	return "", fmt.Errorf("resolve tenant %q: %w", tenantID, ErrUnknownTenant)
}

// Validate checks every tenant id of the map and every region, the default
// included, against cfg: a region cfg does not list gets [ErrUnknownRegion],
// a bad tenant id [ErrInvalidTenant]. Tenants are checked in sorted order, so
// the error names the same tenant every time.
func (s *Static) Validate(cfg regions.Config) error {
	if s.defaultRegion != "" && !cfg.Has(s.defaultRegion) {
		return fmt.Errorf("static resolver: default region %q: %w", s.defaultRegion, ErrUnknownRegion)
	}
	for _, tenant := range slices.Sorted(maps.Keys(s.tenants)) {
		if err := ValidateTenantID(tenant); err != nil {
			return fmt.Errorf("static resolver: tenant %q: %w", tenant, err)
		}
		if region := s.tenants[tenant]; !cfg.Has(region) {
			return fmt.Errorf("static resolver: tenant %q: region %q: %w", tenant, region, ErrUnknownRegion)
		}
	}
	return nil
}
