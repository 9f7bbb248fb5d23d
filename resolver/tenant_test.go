package resolver

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestValidateTenantID(t *testing.T) {
	tests := []struct {
		id    string
		valid bool
	}{
		{"acme", true},
		{"tenant-42_x.y:z/ü", true},
		{"Ünïcødé 租户 🚀", true},
		{"with space", true},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("é", 128), true}, // 256 bytes
		{"", false},
		{strings.Repeat("a", 257), false},
		{strings.Repeat("é", 128) + "a", false},
		{"nul\x00", false},
		{"tab\t", false},
		{"newline\n", false},
		{"del\x7f", false},
		{"c1\u0085", false}, // NEL
		{"c1\u009f", false},
		{"bad\xff", false},
		{"\xc3", false},         // truncated sequence
		{"\xed\xa0\x80", false}, // surrogate
		{"é\x01", false},
	}
	for _, tt := range tests {
		err := ValidateTenantID(tt.id)
		if tt.valid && err != nil {
			t.Errorf("ValidateTenantID(%q) = %v, want nil", tt.id, err)
		}
		if !tt.valid && !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("ValidateTenantID(%q) = %v, want ErrInvalidTenant", tt.id, err)
		}
	}
}

func TestValidateTenantID_Allocs(t *testing.T) {
	id := "tenant-0123456789abcdef"
	if n := testing.AllocsPerRun(100, func() { _ = ValidateTenantID(id) }); n != 0 {
		t.Errorf("allocs = %v, want 0", n)
	}
}

// FuzzValidateTenantID checks the validator against a plain restatement of
// the rule, and that an accepted id is safe to store and to put in a NOTIFY
// payload.
func FuzzValidateTenantID(f *testing.F) {
	for _, s := range []string{"acme", "", "a\x00b", "é", "\xff", "\u0085", strings.Repeat("x", 257)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateTenantID(id)
		want := id != "" && len(id) <= MaxTenantIDLen && utf8.ValidString(id) &&
			!strings.ContainsFunc(id, unicode.IsControl)
		if (err == nil) != want {
			t.Fatalf("ValidateTenantID(%q) = %v, want valid=%v", id, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalidTenant) {
			t.Fatalf("ValidateTenantID(%q) = %v, not wrapping ErrInvalidTenant", id, err)
		}
		if err != nil && len(id) > 0 && strings.Contains(err.Error(), id) && len(id) > 8 {
			t.Fatalf("error %q quotes the rejected id", err)
		}
	})
}
