package resolver

import (
	"context"
	"errors"
	"testing"

	"github.com/qx-platform/regions"
)

func TestStatic_Resolve(t *testing.T) {
	tenants := map[string]string{"acme": "eu-west-1", "globex": "us-east-1"}
	noDefault := NewStatic(tenants, "")
	withDefault := NewStatic(tenants, "ap-south-1")
	tests := []struct {
		name    string
		r       *Static
		tenant  string
		want    string
		wantErr error
	}{
		{"known", noDefault, "acme", "eu-west-1", nil},
		{"known other", noDefault, "globex", "us-east-1", nil},
		{"unknown without default", noDefault, "initech", "", ErrUnknownTenant},
		{"unknown with default", withDefault, "initech", "ap-south-1", nil},
		{"known with default", withDefault, "acme", "eu-west-1", nil},
		{"empty id", withDefault, "", "", ErrInvalidTenant},
		{"control character", withDefault, "ac\nme", "", ErrInvalidTenant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.r.Resolve(t.Context(), tt.tenant)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Resolve(%q) = %q, %v; want %q, %v", tt.tenant, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestStatic_CopiesMap(t *testing.T) {
	tenants := map[string]string{"acme": "eu-west-1"}
	s := NewStatic(tenants, "")
	tenants["acme"] = "us-east-1"
	mustResolve(t, s, "acme", "eu-west-1")
}

func TestStatic_Validate(t *testing.T) {
	cfg := testRegions
	tests := []struct {
		name    string
		s       *Static
		wantErr error
	}{
		{"ok", NewStatic(map[string]string{"a": "eu-west-1", "b": "us-east-1"}, "ap-south-1"), nil},
		{"empty", NewStatic(nil, ""), nil},
		{"unknown region", NewStatic(map[string]string{"a": "eu-west-1", "b": "mars-1"}, ""), ErrUnknownRegion},
		{"unknown default", NewStatic(nil, "mars-1"), ErrUnknownRegion},
		{"bad tenant", NewStatic(map[string]string{"a\x00": "eu-west-1"}, ""), ErrInvalidTenant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate(cfg)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Validate = %v, want %v", err, tt.wantErr)
			}
		})
	}
	// Without URLs only this region's own name is known.
	if err := NewStatic(map[string]string{"a": "us-east-1"}, "").Validate(regions.Config{Name: "eu-west-1"}); !errors.Is(err, ErrUnknownRegion) {
		t.Errorf("Validate without URLs = %v, want ErrUnknownRegion", err)
	}
}

func BenchmarkStatic_Resolve(b *testing.B) {
	s := NewStatic(map[string]string{"acme": "eu-west-1"}, "")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Resolve(ctx, "acme"); err != nil {
			b.Fatal(err)
		}
	}
}
