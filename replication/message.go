package replication

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/qx-platform/regions/cdc"
)

// Message headers set on every forwarded event (a public contract).
const (
	HeaderMsgID           = "Nats-Msg-Id"
	HeaderExpectedLastID  = "Nats-Expected-Last-Msg-Id"
	HeaderExpectedLastSeq = "Nats-Expected-Last-Sequence"
	HeaderSourceRegion    = "Qx-Source-Region"
	HeaderSourceLSN       = "Qx-Source-LSN"
	HeaderEventID         = "Qx-Event-Id"
	HeaderTenantID        = "Qx-Tenant-Id"
	HeaderEventType       = "Qx-Event-Type"
	HeaderAggregateType   = "Qx-Aggregate-Type"
	HeaderAggregateID     = "Qx-Aggregate-Id"
	originHeaderInPayload = "qx-origin-region"
)

// DefaultSubjectTemplate is the subject an event is published on. Fields:
// {source}, {tenant_id}, {aggregate_type}, {aggregate_id}, {event_type}.
const DefaultSubjectTemplate = "qx.events.{source}.{aggregate_type}.{event_type}"

// Reasons a row goes to the dead letters instead of the target.
var (
	ErrNullField        = errors.New("required field is NULL")
	ErrBadHeaders       = errors.New("headers are not a JSON object of valid headers")
	ErrTooLarge         = errors.New("message is too large for the target")
	ErrBadPayloadFormat = errors.New("payload cannot be decoded")
	ErrSubjectTooLong   = errors.New("subject is too long for NATS")
	ErrBadSubject       = errors.New("subject is not valid for NATS")
	ErrReusedEventID    = errors.New("event_id was already used by another event in the stream")
)

// Position is an event's place in the source: the commit LSN of its
// transaction and its index inside it. Positions order events in commit
// order and are the same when the same WAL is streamed again.
type Position struct {
	LSN   cdc.LSN
	Index int
}

// String is the Qx-Source-LSN form: "<commit-lsn>:<index>", the LSN as
// Postgres prints it (upper-case hex, as cdc.LSN.String). It is part of
// message ids, so its form never changes.
func (p Position) String() string {
	var b [40]byte
	buf := appendHexUpper(b[:0], uint32(p.LSN>>32))
	buf = append(buf, '/')
	buf = appendHexUpper(buf, uint32(p.LSN))
	buf = append(buf, ':')
	return string(strconv.AppendInt(buf, int64(p.Index), 10))
}

// appendHexUpper appends v in upper-case hex without leading zeros, like
// fmt's %X (and without its cost: one String per published event).
func appendHexUpper(b []byte, v uint32) []byte {
	start := len(b)
	b = strconv.AppendUint(b, uint64(v), 16)
	for i := start; i < len(b); i++ {
		if b[i] >= 'a' {
			b[i] -= 'a' - 'A'
		}
	}
	return b
}

// Less orders positions.
func (p Position) Less(q Position) bool {
	return p.LSN < q.LSN || (p.LSN == q.LSN && p.Index < q.Index)
}

// ParsePosition parses the Qx-Source-LSN form.
func ParsePosition(s string) (Position, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Position{}, fmt.Errorf("position %q: want <lsn>:<index>", s)
	}
	lsn, err := cdc.ParseLSN(s[:i])
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	idx, err := strconv.Atoi(s[i+1:])
	if err != nil || idx < 0 {
		return Position{}, fmt.Errorf("position %q: bad index", s)
	}
	return Position{LSN: lsn, Index: idx}, nil
}

func positionOf(ev *cdc.Event) Position { return Position{LSN: ev.CommitLSN, Index: ev.Index} }

// subjectTemplate is a parsed subject template: literal parts and fields.
type subjectTemplate struct {
	parts []tplPart
}

type tplPart struct {
	lit   string
	field cdc.Field // valid when lit == ""
	src   bool      // {source}
}

var tplFields = map[string]cdc.Field{
	"tenant_id": cdc.FieldTenantID, "aggregate_type": cdc.FieldAggregateType,
	"aggregate_id": cdc.FieldAggregateID, "event_type": cdc.FieldEventType,
}

// ValidateSubjectTemplate checks a subject template for a source region:
// known fields, valid literals, and a start of qx.events.{source}. so every
// subject falls in the stream's qx.events.<source>.>.
func ValidateSubjectTemplate(tpl string) error {
	t, err := parseSubjectTemplate(tpl)
	if err != nil {
		return err
	}
	if len(t.parts) < 3 || t.parts[0].lit != "qx.events." || !t.parts[1].src ||
		len(t.parts[2].lit) == 0 || t.parts[2].lit[0] != '.' {
		return fmt.Errorf("subject template %q must start with qx.events.{source}.", tpl)
	}
	return nil
}

func parseSubjectTemplate(s string) (subjectTemplate, error) {
	var t subjectTemplate
	rest := s
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			t.parts = append(t.parts, tplPart{lit: rest})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, tplPart{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("subject template %q: unclosed {", s)
		}
		name := rest[i+1 : i+j]
		switch f, ok := tplFields[name]; {
		case name == "source":
			t.parts = append(t.parts, tplPart{src: true})
		case ok:
			t.parts = append(t.parts, tplPart{field: f})
		default:
			return t, fmt.Errorf("subject template %q: unknown field {%s} (known: source, tenant_id, aggregate_type, aggregate_id, event_type)", s, name)
		}
		rest = rest[i+j+1:]
	}
	for _, p := range t.parts {
		if strings.ContainsAny(p.lit, " *>\t\r\n") || strings.Contains(p.lit, "..") {
			return t, fmt.Errorf("subject template %q: literal %q is not valid in a subject", s, p.lit)
		}
	}
	return t, nil
}

// render builds the subject. Values are sanitized into subject tokens:
// characters that NATS does not allow in a token (space, tab, CR, LF, '*',
// '>') become '_', an empty value becomes '_'. Dots in event_type are kept
// as token separators ("order.created" → two tokens, empty tokens become
// '_'); dots in every other value become '_'.
func (t subjectTemplate) render(sb *strings.Builder, source string, ev *cdc.Event) string {
	sb.Reset()
	sb.Grow(64) // once, not growing step by step: a subject is rarely longer
	for _, p := range t.parts {
		switch {
		case p.lit != "":
			sb.WriteString(p.lit)
		case p.src:
			sb.WriteString(source)
		default:
			writeToken(sb, ev.Values[p.field], p.field == cdc.FieldEventType)
		}
	}
	return sb.String()
}

func writeToken(sb *strings.Builder, v []byte, dotsSeparate bool) {
	if len(v) == 0 {
		sb.WriteByte('_')
		return
	}
	prevDot := true // a token may not start empty
	for _, c := range v {
		switch {
		case c == '.' && dotsSeparate:
			if prevDot {
				sb.WriteByte('_')
			}
			sb.WriteByte('.')
			prevDot = true
			continue
		case c == '.', c == ' ', c == '*', c == '>', c < 0x20, c == 0x7f:
			sb.WriteByte('_')
		default:
			sb.WriteByte(c)
		}
		prevDot = false
	}
	if prevDot {
		sb.WriteByte('_')
	}
}

// builder turns events into NATS messages.
type builder struct {
	source     string
	tpl        subjectTemplate
	hasEventID bool
	required   []cdc.Field // mapped fields that may not be NULL
	sb         strings.Builder
}

func newBuilder(source string, tpl subjectTemplate, m *cdc.Mapping) *builder {
	b := &builder{source: source, tpl: tpl, hasEventID: m.Columns[cdc.FieldEventID] != ""}
	for _, f := range []cdc.Field{cdc.FieldEventID, cdc.FieldTenantID, cdc.FieldEventType, cdc.FieldPayload} {
		if m.Columns[f] != "" {
			b.required = append(b.required, f)
		}
	}
	return b
}

// build makes the message for ev, or returns why it must be dead-lettered.
// skip is true when the event came from another region (loop guard).
func (b *builder) build(ev *cdc.Event) (msg *nats.Msg, id string, skip bool, err error) {
	for _, f := range b.required {
		if ev.Values[f] == nil {
			return nil, "", false, fmt.Errorf("%w: %s", ErrNullField, f)
		}
	}
	user, err := parseUserHeaders(ev.Values[cdc.FieldHeaders])
	if err != nil {
		return nil, "", false, err
	}
	origin := string(ev.Values[cdc.FieldOrigin])
	if origin == "" {
		for _, u := range user {
			if strings.EqualFold(u.k, originHeaderInPayload) {
				origin = u.v
			}
		}
	}
	if origin != "" && origin != b.source {
		return nil, "", true, nil
	}

	pos := positionOf(ev)
	if b.hasEventID {
		id = b.source + ":" + string(ev.Values[cdc.FieldEventID])
	} else {
		id = b.source + ":" + pos.String()
	}
	h := make(nats.Header, 10+len(user))
	// One backing array for every header's value slice, not one each;
	// capped so that appending to one cannot overwrite the next.
	vals := make([]string, 0, len(user)+8)
	set := func(k, v string) {
		vals = append(vals, v)
		n := len(vals)
		h[k] = vals[n-1 : n : n]
	}
	for _, u := range user {
		if !validHeaderName(u.k) || !validHeaderValue(u.v) {
			return nil, "", false, fmt.Errorf("%w: header %q", ErrBadHeaders, u.k)
		}
		lk := strings.ToLower(u.k)
		if strings.HasPrefix(lk, "qx-") || strings.HasPrefix(lk, "nats-") {
			continue // reserved: may not override ours
		}
		set(u.k, u.v)
	}
	set(HeaderMsgID, id)
	set(HeaderSourceRegion, b.source)
	set(HeaderSourceLSN, pos.String())
	set(HeaderTenantID, string(ev.Values[cdc.FieldTenantID]))
	set(HeaderEventType, string(ev.Values[cdc.FieldEventType]))
	if v := ev.Values[cdc.FieldEventID]; v != nil {
		set(HeaderEventID, string(v))
	}
	if v := ev.Values[cdc.FieldAggregateType]; v != nil {
		set(HeaderAggregateType, string(v))
	}
	if v := ev.Values[cdc.FieldAggregateID]; v != nil {
		set(HeaderAggregateID, string(v))
	}
	msg = &nats.Msg{Subject: b.tpl.render(&b.sb, b.source, ev), Header: h, Data: ev.Values[cdc.FieldPayload]}
	return msg, id, false, nil
}

// userHeader is one string entry of a row's headers object.
type userHeader struct{ k, v string }

// parseUserHeaders returns the string entries of a row's headers jsonb
// (entries of other types are not headers). Postgres prints jsonb in one
// canonical form, so the usual object of plain ASCII strings is read
// directly; anything else (escapes, non-ASCII, other types, other spacing)
// goes through encoding/json, which gives the same entries.
func parseUserHeaders(h []byte) ([]userHeader, error) {
	if len(h) == 0 {
		return nil, nil
	}
	if user, ok := parseFlatHeaders(h); ok {
		return user, nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(h))
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: %s", ErrBadHeaders, errOr(err, "not an object"))
	}
	user := make([]userHeader, 0, len(m))
	for k, v := range m {
		if s, ok := v.(string); ok {
			user = append(user, userHeader{k, s})
		}
	}
	return user, nil
}

// parseFlatHeaders reads `{}` and `{"k": "v", "k": "v"}` exactly as
// Postgres prints a jsonb object of strings, when every key and value is
// printable ASCII without '"' or '\'; ok is false for anything else.
func parseFlatHeaders(h []byte) ([]userHeader, bool) {
	if len(h) < 2 || h[0] != '{' || h[len(h)-1] != '}' {
		return nil, false
	}
	if len(h) == 2 {
		return nil, true
	}
	all := string(h) // keys and values are cut from this one allocation
	var user []userHeader
	i := 1
	for {
		k, next, ok := plainJSONString(all, i)
		if !ok || !strings.HasPrefix(all[next:], ": ") {
			return nil, false
		}
		v, next, ok := plainJSONString(all, next+2)
		if !ok {
			return nil, false
		}
		user = append(user, userHeader{k, v})
		switch {
		case next == len(all)-1:
			return user, true
		case strings.HasPrefix(all[next:], ", "):
			i = next + 2
		default:
			return nil, false
		}
	}
}

// plainJSONString reads the JSON string starting at s[i] when it holds only
// printable ASCII and no escapes: its content and the index after it.
func plainJSONString(s string, i int) (v string, next int, ok bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return s[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return "", 0, false
		}
	}
	return "", 0, false
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// validHeaderName accepts exactly the header names nats.go (v1.56) sends:
// one or more of the printable ASCII characters 33–126 except
// "()/,:;<=>?@[\]{}. nats.go refuses a message with any other name
// (ErrBadHeaderMsg) before it is sent, so on every resend; FuzzValidHeaderName
// compares the two.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !headerNameChars[k[i]] {
			return false
		}
	}
	return true
}

var headerNameChars = func() (set [256]bool) {
	for c := 33; c <= 126; c++ {
		set[c] = !strings.ContainsRune(`"()/,:;<=>?@[\]{}`, rune(c))
	}
	return set
}()

// validHeaderValue accepts the values nats.go sends as they are, but for
// the leading and trailing blanks it trims: it sends any string, yet turns
// CR and LF into spaces, which would change the row's value in transit.
func validHeaderValue(v string) bool { return !strings.ContainsAny(v, "\r\n") }

// msgSize is the bytes the server counts against max_payload and a
// stream's max_msg_size: the header block and the body.
func msgSize(m *nats.Msg) int { return headerSize(m) + len(m.Data) }

// headerSize is the length of the header block nats.go encodes for m:
// "NATS/1.0\r\n", a "key: value\r\n" line per value (trimmed, as nats.go
// sends it) and "\r\n".
func headerSize(m *nats.Msg) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(textproto.TrimString(v)) + 2
		}
	}
	return n
}
