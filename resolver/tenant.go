package resolver

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxTenantIDLen is the longest tenant id accepted, in bytes.
const MaxTenantIDLen = 256

// ValidateTenantID checks that id is a usable tenant id: 1 to [MaxTenantIDLen]
// bytes of valid UTF-8 without control characters (Unicode category Cc:
// U+0000-U+001F, U+007F-U+009F). Otherwise it returns an error wrapping
// [ErrInvalidTenant].
//
// Invalid UTF-8 is refused too: a UTF-8 database rejects it, which would turn
// a bad request into a database error. The error never quotes the id, which
// is outside input of any length.
func ValidateTenantID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidTenant)
	}
	if len(id) > MaxTenantIDLen {
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidTenant, len(id), MaxTenantIDLen)
	}
	// Byte loop first: ASCII ids, by far the common case, need no decoding.
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= utf8.RuneSelf {
			return validateUTF8TenantID(id, i)
		}
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: control character at byte %d", ErrInvalidTenant, i)
		}
	}
	return nil
}

// validateUTF8TenantID checks id from byte offset start on, rune by rune.
func validateUTF8TenantID(id string, start int) error {
	for i := start; i < len(id); {
		r, size := utf8.DecodeRuneInString(id[i:])
		if r == utf8.RuneError && size <= 1 {
			return fmt.Errorf("%w: invalid UTF-8 at byte %d", ErrInvalidTenant, i)
		}
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: control character at byte %d", ErrInvalidTenant, i)
		}
		i += size
	}
	return nil
}
