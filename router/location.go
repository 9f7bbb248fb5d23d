package router

import (
	"fmt"
	"net/url"
	"strings"
)

// The Location of a redirect is the configured base URL, then a path and a
// query that are checked here byte by byte. Nothing from the request but its
// path and query ever reaches it: not Host, not X-Forwarded-Host.

// byte classes for a path (RFC 3986 pchar and "/") and a query (adds "?").
const (
	allowedPath  = 1 << iota // may appear as is
	allowedQuery             // may appear as is in a query
)

var charClass = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = allowedPath | allowedQuery
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = allowedPath | allowedQuery
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = allowedPath | allowedQuery
	}
	for _, c := range "-._~!$&'()*+,;=:@/" {
		t[c] = allowedPath | allowedQuery
	}
	t['?'] = allowedQuery
	return t
}()

func unsafePath(why string) error {
	return fmt.Errorf("%w: %s", ErrUnsafePath, why)
}

// cleanTarget checks a path and a query (without the "?") and returns them
// ready to follow a base URL.
func cleanTarget(path, query string) (string, string, error) {
	p, err := cleanPath(path)
	if err != nil {
		return "", "", err
	}
	q, err := cleanQuery(query)
	if err != nil {
		return "", "", err
	}
	return p, q, nil
}

// cleanPath accepts only a plain absolute path: it starts with exactly one
// "/", has no backslash (browsers read it as "/", so "/\host" would be
// "//host"), no control character, no "#", no "." or ".." segment (which
// would climb out of the base URL's path prefix) and only well-formed
// percent escapes. Other bytes that a URL may not hold are percent-encoded.
func cleanPath(p string) (string, error) {
	switch {
	case p == "" || p[0] != '/':
		return "", unsafePath("not an absolute path")
	case len(p) > 1 && (p[1] == '/' || p[1] == '\\'):
		return "", unsafePath("starts with two slashes")
	}
	s, err := escape(p, allowedPath)
	if err != nil {
		return "", err
	}
	if hasDotSegment(s) {
		return "", unsafePath("dot segment")
	}
	return s, nil
}

// cleanQuery applies the rules of cleanPath to a query, where a backslash
// is harmless and is percent-encoded instead of refused.
func cleanQuery(q string) (string, error) {
	if q == "" {
		return "", nil
	}
	return escape(q, allowedQuery)
}

// escape returns s with every byte that is neither allowed by class nor part
// of a percent escape percent-encoded. Control characters, "#", a malformed
// escape and (in a path) a backslash are errors. It allocates only when
// something must be encoded.
func escape(s string, class uint8) (string, error) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case charClass[c]&class != 0:
		case c < 0x20 || c == 0x7f:
			return "", unsafePath("control character")
		case c == '#':
			return "", unsafePath("fragment")
		case c == '\\' && class == allowedPath:
			return "", unsafePath("backslash")
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", unsafePath("malformed percent escape")
			}
			i += 2
		default:
			n++
		}
	}
	if n == 0 {
		return s, nil
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if charClass[c]&class != 0 || c == '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// hasDotSegment reports whether an escaped path has a "." or ".." segment,
// plain or percent-encoded.
func hasDotSegment(p string) bool {
	for p != "" {
		var seg string
		seg, p, _ = strings.Cut(p, "/")
		switch len(seg) {
		case 1, 2, 3, 4, 6:
			if isDots(seg) {
				return true
			}
		}
	}
	return false
}

func isDots(seg string) bool {
	dots := 0
	for seg != "" {
		switch {
		case seg[0] == '.':
			seg = seg[1:]
		case len(seg) >= 3 && seg[0] == '%' && seg[1] == '2' && (seg[2] == 'e' || seg[2] == 'E'):
			seg = seg[3:]
		default:
			return false
		}
		dots++
	}
	return dots == 1 || dots == 2
}

// location joins the target's base URL, a clean path, a clean query and,
// when hop is not empty, the hop marker.
func (t *target) location(path, query, hop string) string {
	var b strings.Builder
	b.Grow(len(t.base) + len(path) + len(query) + len(hop) + len(HopParam) + 3)
	b.WriteString(t.base)
	b.WriteString(path)
	if query != "" || hop != "" {
		b.WriteByte('?')
		b.WriteString(query)
		if hop != "" {
			if query != "" {
				b.WriteByte('&')
			}
			b.WriteString(HopParam)
			b.WriteByte('=')
			b.WriteString(hop)
		}
	}
	return b.String()
}

// hasHop reports whether a raw query carries HopParam, also percent-encoded
// (as url.Values would decode it), so that a handler never sees one.
func hasHop(rawQuery string) bool {
	if !strings.Contains(rawQuery, HopParam) && !strings.Contains(rawQuery, "%") {
		return false
	}
	for q := rawQuery; q != ""; {
		var item string
		item, q, _ = strings.Cut(q, "&")
		if isHopItem(item) {
			return true
		}
	}
	return false
}

// stripHop returns rawQuery without any HopParam item, the other items
// unchanged and in order.
func stripHop(rawQuery string) string {
	var b strings.Builder
	for q := rawQuery; q != ""; {
		var item string
		item, q, _ = strings.Cut(q, "&")
		if item == "" || isHopItem(item) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(item)
	}
	return b.String()
}

func isHopItem(item string) bool {
	key, _, _ := strings.Cut(item, "=")
	if key == HopParam {
		return true
	}
	// The longest spelling is every byte escaped.
	if len(key) <= 3*len(HopParam) && strings.Contains(key, "%") {
		k, err := url.QueryUnescape(key)
		return err == nil && k == HopParam
	}
	return false
}
