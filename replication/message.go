package replication

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/qx-platform/regions/cdc"
)

// Message headers set on every forwarded event (a public contract).
const (
	HeaderMsgID           = "Nats-Msg-Id"
	HeaderExpectedLastID  = "Nats-Expected-Last-Msg-Id"
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
	ErrTooLarge         = errors.New("message exceeds the target's max_payload")
	ErrBadPayloadFormat = errors.New("payload cannot be decoded")
)

// Position is an event's place in the source: the commit LSN of its
// transaction and its index inside it. Positions order events in commit
// order and are the same when the same WAL is streamed again.
type Position struct {
	LSN   cdc.LSN
	Index int
}

// String is the Qx-Source-LSN form: "<commit-lsn>:<index>".
func (p Position) String() string { return p.LSN.String() + ":" + strconv.Itoa(p.Index) }

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
	var user map[string]any
	if h := ev.Values[cdc.FieldHeaders]; len(h) > 0 {
		dec := json.NewDecoder(bytes.NewReader(h))
		if err := dec.Decode(&user); err != nil || user == nil {
			return nil, "", false, fmt.Errorf("%w: %s", ErrBadHeaders, errOr(err, "not an object"))
		}
	}
	origin := string(ev.Values[cdc.FieldOrigin])
	if origin == "" {
		for k, v := range user {
			if s, ok := v.(string); ok && strings.EqualFold(k, originHeaderInPayload) {
				origin = s
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
	set := func(k, v string) { h[k] = []string{v} }
	for k, v := range user {
		s, ok := v.(string)
		if !ok {
			continue // only string entries become headers
		}
		if !validHeaderName(k) || strings.ContainsAny(s, "\r\n") {
			return nil, "", false, fmt.Errorf("%w: header %q", ErrBadHeaders, k)
		}
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "qx-") || strings.HasPrefix(lk, "nats-") {
			continue // reserved: may not override ours
		}
		set(k, s)
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

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// validHeaderName accepts the header names NATS can carry: printable ASCII
// without ':' or spaces.
func validHeaderName(k string) bool {
	if k == "" || len(k) > 256 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// msgSize approximates the bytes the server counts against max_payload:
// the header block and the body.
func msgSize(m *nats.Msg) int {
	n := len("NATS/1.0\r\n\r\n") + len(m.Data)
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}
