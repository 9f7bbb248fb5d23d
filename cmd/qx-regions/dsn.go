package main

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// dsnMask replaces every password redactDSN hides.
const dsnMask = "xxxxx"

// dsn reads a Postgres connection string setting and parses it the way pgx
// will when it connects, so a malformed one is a settings error (exit 2)
// naming the variable, before any connection.
func (st *setting) dsn() (string, error) {
	v, err := st.required()
	if err != nil {
		return "", err
	}
	return v, checkDSN(st.name(), v)
}

// checkDSN parses dsn with pgconn.ParseConfig. pgconn's error can quote the
// password of a string it could not parse (its own redaction is best
// effort, and the inner url or keyword/value error repeats the input), so the
// message is built only from the redacted string: if that fails to parse too,
// its error names the problem; if it parses, the problem is in the hidden
// part.
func checkDSN(name, dsn string) error {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		hidden := redactDSN(dsn)
		if _, err := pgconn.ParseConfig(hidden); err != nil {
			return usageErrorf("%s: %v", name, err)
		}
		return usageErrorf("%s: cannot parse `%s`: the hidden user name or password is malformed "+
			"(in a URL percent-encode %% @ / ? as %%25 %%40 %%2F %%3F; in key=value form quote it: 'a b\\'c')", name, hidden)
	}
	hosts := []string{cfg.Host}
	for _, fb := range cfg.Fallbacks {
		hosts = append(hosts, fb.Host)
	}
	for _, h := range hosts {
		// pgx ends the user name and password at the first '@'; the rest of
		// a password with an unescaped '@' would become the host name (and
		// appear in connection errors).
		if strings.Contains(h, "@") {
			return usageErrorf("%s: `%s`: a host name contains '@': percent-encode @ in the user name or password as %%40",
				name, redactDSN(dsn))
		}
	}
	return nil
}

// redactDSN hides every password of a Postgres connection string, in URL
// or keyword/value form, also of one that does not parse. A password may
// hold unescaped '@', '/', '?', '#', quotes or spaces, so the hidden part
// is the widest one that could be a password: in a URL everything after
// the user name up to the last '@' (an '@' in the query hides more than
// needed, never less), and a password query parameter up to the next
// key=value; in keyword/value form a quoted value up to its closing quote
// and an unquoted one up to the next key=.
func redactDSN(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 && urlScheme.MatchString(dsn[:i]) {
		return dsn[:i+3] + redactURLRest(dsn[i+3:])
	}
	return redactKeywordValue(dsn)
}

var urlScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// redactURLRest redacts what follows "scheme://".
func redactURLRest(rest string) string {
	var b strings.Builder
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		userinfo := rest[:at]
		user, _, hasPassword := strings.Cut(userinfo, ":")
		switch {
		case strings.ContainsAny(userinfo, "/?"):
			// Not a plain user:password: the user name itself may be
			// part of a password, or the '@' sits in the query.
			b.WriteString(dsnMask)
		case hasPassword:
			b.WriteString(user + ":" + dsnMask)
		default:
			b.WriteString(userinfo)
		}
		b.WriteByte('@')
		rest = rest[at+1:]
	}
	before, query, hasQuery := strings.Cut(rest, "?")
	b.WriteString(before)
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(redactQuery(query))
	}
	return b.String()
}

var queryKey = regexp.MustCompile(`^[A-Za-z0-9_.%-]+$`)

// redactQuery hides the values of password parameters. A part that is not
// key=value after a password value is taken as the rest of that password
// (an unescaped '&' in it) and hidden too.
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	out := parts[:0]
	inPassword := false
	for _, part := range parts {
		k, _, ok := strings.Cut(part, "=")
		if !ok || !queryKey.MatchString(k) {
			if !inPassword {
				out = append(out, part)
			}
			continue
		}
		key := k
		if u, err := url.QueryUnescape(k); err == nil {
			key = u
		}
		inPassword = isPasswordKey(key)
		if inPassword {
			part = k + "=" + dsnMask
		}
		out = append(out, part)
	}
	return strings.Join(out, "&")
}

func isPasswordKey(k string) bool {
	k = strings.ToLower(strings.TrimSpace(k))
	return k == "password" || k == "sslpassword"
}

var (
	kvPassword = regexp.MustCompile(`(?i)(?:^|\s)(?:ssl)?password\s*=\s*`)
	kvKey      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\s*=`)
)

// redactKeywordValue hides password and sslpassword values of a libpq
// keyword/value string: 'quoted' with backslash escapes, or unquoted up to
// the next key=.
func redactKeywordValue(s string) string {
	var b strings.Builder
	for {
		loc := kvPassword.FindStringIndex(s)
		if loc == nil {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:loc[1]])
		b.WriteString(dsnMask)
		s = s[loc[1]:]
		if strings.HasPrefix(s, "'") {
			s = s[quotedEnd(s):]
			continue
		}
		// Unquoted: words up to one that starts a new key=value.
		for {
			s = s[unquotedEnd(s):]
			rest := strings.TrimLeft(s, " \t\r\n\f\v")
			if rest == "" || kvKey.MatchString(rest) {
				break
			}
			s = rest
		}
	}
}

// quotedEnd is the index just after the closing quote of the value s starts
// with (or len(s) when it is unterminated).
func quotedEnd(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '\'':
			return i + 1
		}
	}
	return len(s)
}

// unquotedEnd is the index of the first unescaped white space of s.
func unquotedEnd(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ' ', '\t', '\r', '\n', '\f', '\v':
			return i
		}
	}
	return len(s)
}
