package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamName is the default target stream of a source region:
// QX_EVENTS_<SOURCE>, upper case, '-' as '_'.
func StreamName(source string) string {
	return "QX_EVENTS_" + strings.ToUpper(strings.ReplaceAll(source, "-", "_"))
}

// StreamSubject is the subject filter of a source region's stream.
func StreamSubject(source string) string { return "qx.events." + source + ".>" }

// ErrStreamConflict means the target stream cannot be the replicator's
// alone: an existing stream of that name does not capture exactly this
// source's subjects, or another stream already captures them.
var ErrStreamConflict = errors.New("target stream conflicts with the replicator's subjects")

// errCodeSubjectOverlap (JSStreamSubjectOverlap) refuses a stream whose
// subjects another stream already captures.
const errCodeSubjectOverlap jetstream.ErrorCode = 10065

// ensureStream creates the stream when absent (file storage, the given
// duplicate window) and checks an existing one captures subject and
// nothing outside it: every message in the stream must be ours, or the
// Nats-Expected-Last-Msg-Id chain and the tail read break.
func ensureStream(ctx context.Context, js jetstream.JetStream, name, subject string, dupWindow time.Duration) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       name,
			Subjects:   []string{subject},
			Storage:    jetstream.FileStorage,
			Duplicates: dupWindow,
		})
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeSubjectOverlap {
			other, lerr := js.StreamNameBySubject(ctx, subject)
			if lerr != nil || other == "" {
				other = "another stream"
			} else {
				other = "stream " + other
			}
			return nil, fmt.Errorf("%w: cannot create stream %s: %s already captures %s (neither is changed; narrow its subjects, or configure its name when it is this source's stream)",
				ErrStreamConflict, name, other, subject)
		}
		if err != nil {
			return nil, fmt.Errorf("create stream %s on %s: %w", name, subject, err)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", name, err)
	}
	subs := s.CachedInfo().Config.Subjects
	if !slices.Contains(subs, subject) {
		return nil, fmt.Errorf("%w: stream %s has subjects %v, want %s (it is not changed; fix it or configure another stream name)",
			ErrStreamConflict, name, subs, subject)
	}
	for _, sub := range subs {
		if !subjectWithin(sub, subject) {
			return nil, fmt.Errorf("%w: stream %s also captures %s, outside %s: messages of others would break the order checks (it is not changed; remove the subject or configure another stream name)",
				ErrStreamConflict, name, sub, subject)
		}
	}
	return s, nil
}

// tail is the newest event the target stream holds.
type tail struct {
	id      string   // its Nats-Msg-Id; "" when the stream holds none
	pos     Position // its Qx-Source-LSN
	seq     uint64   // its stream sequence
	lastSeq uint64   // the stream's last sequence (also when its messages expired)
	// maxMsgSize is the stream's max_msg_size as read with the tail; 0
	// when it has none.
	maxMsgSize int
}

// readTail reads the stream's last message on subject. Every message in
// the stream was written by this replicator in source order, so its
// position says which events the target has, also beyond the duplicate
// window.
func readTail(ctx context.Context, s jetstream.Stream, subject string) (tail, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return tail{}, fmt.Errorf("read stream info: %w", err)
	}
	t := tail{lastSeq: info.State.LastSeq, maxMsgSize: max(int(info.Config.MaxMsgSize), 0)}
	if info.State.Msgs == 0 {
		return t, nil
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return t, nil
	}
	if err != nil {
		return tail{}, fmt.Errorf("read last message on %s: %w", subject, err)
	}
	t.id, t.seq = m.Header.Get(HeaderMsgID), m.Sequence
	ps := m.Header.Get(HeaderSourceLSN)
	if ps == "" || t.id == "" {
		return tail{}, fmt.Errorf("last message %d of stream %s has no %s/%s header: the stream is written by something else",
			m.Sequence, info.Config.Name, HeaderSourceLSN, HeaderMsgID)
	}
	if t.pos, err = ParsePosition(ps); err != nil {
		return tail{}, fmt.Errorf("last message %d: %w", m.Sequence, err)
	}
	return t, nil
}

// subjectWithin reports whether every subject that s matches falls in
// stream, a "<prefix>.>" filter.
func subjectWithin(s, stream string) bool {
	prefix := strings.TrimSuffix(stream, ">")
	return len(s) > len(prefix) && strings.HasPrefix(s, prefix)
}
