// Package replication is the replicator: it forwards the outbox events that
// a cdc stream decodes to the target region's NATS JetStream, keeping many
// publishes in flight, and turns the in-order acknowledgements into the safe
// LSN that is checkpointed and confirmed to Postgres.
//
// Exactly once and in order, whatever fails: every message carries a dedup
// id (Nats-Msg-Id) and names the previous message's id in
// Nats-Expected-Last-Msg-Id, so the stream refuses a message whose
// predecessor it does not hold; after any publish error the replicator waits
// for the whole window to settle and resends from the first unacknowledged
// event. When a resent event was stored long ago (beyond the duplicate
// window), the refusal makes the replicator read the stream's last message
// and skip what the stream already has (its Qx-Source-LSN header). The same
// reconciliation runs on start. See https://docs.nats.io/nats-concepts/jetstream/streams
// and https://docs.nats.io/using-nats/developer/develop_jetstream/model_deep_dive.
package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/cdc"
)

// Source is the stream of outbox events (a *cdc.Stream).
type Source interface {
	Run(ctx context.Context) error
	Messages() <-chan []cdc.Message
	SetSafe(lsn cdc.LSN)
}

// CheckpointStore keeps the safe LSN (a *checkpoint.PGStore).
type CheckpointStore interface {
	Save(ctx context.Context, lsn cdc.LSN) error
}

// DeadLetterWriter stores rows the target can never accept (a *PGDeadLetters).
type DeadLetterWriter interface {
	Write(ctx context.Context, d DeadLetter) error
}

var (
	// ErrTargetLost means the target stream no longer holds events it had
	// acknowledged (it was purged or recreated); replicating on would leave
	// a gap.
	ErrTargetLost = errors.New("target stream lost acknowledged events")
	// ErrTargetAhead means the target stream holds an event from beyond the
	// source's current WAL position: the source was restored or replaced
	// (point-in-time recovery, a promoted standby that lacked the last
	// transactions). Positions would collide; the target must be checked
	// and the stream reset by an operator.
	ErrTargetAhead = errors.New("target stream is ahead of the source database")
)

// JetStream errors for failed Nats-Expected-Last-Msg-Id and
// Nats-Expected-Last-Sequence checks.
const (
	errCodeWrongLastMsgID jetstream.ErrorCode = 10070
	errCodeWrongLastSeq   jetstream.ErrorCode = 10071
	// errCodeHeaderTooLarge (JSStreamHeaderExceedsMaximum) refuses a
	// header block over maxHeaderBlock.
	errCodeHeaderTooLarge jetstream.ErrorCode = 10097
)

// maxHeaderBlock is the largest header block JetStream stores (a message's
// header length is a uint16 in its store), whatever max_payload allows.
const maxHeaderBlock = 1<<16 - 1

// maxSubjectLen keeps a publish's control line (subject, reply inbox and
// sizes) under the server's default max_control_line of 4096 bytes.
const maxSubjectLen = 3800

// Config configures a Replicator. Zero values take the defaults shown.
type Config struct {
	// SourceRegion names the region whose outbox is replicated (required).
	SourceRegion string
	// TargetRegion names the region of the target NATS (for logs and labels).
	TargetRegion string
	// Mapping is the outbox mapping the source uses; default cdc.DefaultMapping().
	Mapping *cdc.Mapping
	// SubjectTemplate; default DefaultSubjectTemplate. It must render
	// under qx.events.<source>.
	SubjectTemplate string
	// Stream is the target stream; default StreamName(SourceRegion).
	Stream string
	// DuplicateWindow of a stream created here; default 2m.
	DuplicateWindow time.Duration
	// MaxInFlight bounds the publishes awaiting an ack; default 8192,
	// enough for ~150k events/s over a 50 ms round trip.
	MaxInFlight int
	// PublishTimeout is how long an ack may take before the window is
	// resent; default 10s.
	PublishTimeout time.Duration
	// CheckpointInterval coalesces checkpoint writes; default 200ms.
	CheckpointInterval time.Duration
	// ShutdownTimeout bounds the wait for in-flight acks on shutdown; default 10s.
	ShutdownTimeout time.Duration
	// MinBackoff and MaxBackoff bound retry delays; default 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

func (c *Config) validate() error {
	if err := regions.ValidateRegionName(c.SourceRegion); err != nil {
		return fmt.Errorf("replication: Config.SourceRegion: %w", err)
	}
	if c.Mapping == nil {
		m := cdc.DefaultMapping()
		c.Mapping = &m
	}
	if c.SubjectTemplate == "" {
		c.SubjectTemplate = DefaultSubjectTemplate
	}
	if c.Stream == "" {
		c.Stream = StreamName(c.SourceRegion)
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 8192
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = 200 * time.Millisecond
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// entry is one queued item, in source order: an event's message, or the
// end of a transaction.
type entry struct {
	pos        Position
	commit     *cdc.Commit // transaction end: no message
	msg        *nats.Msg
	id         string
	commitTime time.Time
	ev         *cdc.Event
	fut        jetstream.PubAckFuture
	sent       time.Time
	acked      bool
	seq        uint64 // stream sequence of its ack in the current attempt
	// reusedSeq is set when the ack was a duplicate of an older, other
	// message with the same id (a reused event_id): a dead letter.
	reusedSeq uint64
	// dead is why the target can never take this message, learnt when it
	// was sent (nats.go or the stream refused it for what it is): it is
	// dead-lettered when popped, and never sent again.
	dead error
}

// unsent reports whether e needs no ack: a transaction's end, or an event
// that is dead-lettered instead.
func (e *entry) unsent() bool { return e.commit != nil || e.dead != nil }

// Replicator forwards a source's events to a JetStream stream.
type Replicator struct {
	cfg   Config
	log   *slog.Logger
	src   Source
	nc    *nats.Conn
	js    jetstream.JetStream
	store CheckpointStore
	dl    DeadLetterWriter
	b     *builder
	m     *metrics

	// Owned by Run.
	q          []*entry
	head       int // first entry not yet popped
	wait       int // first sent entry whose future is unresolved
	next       int // first entry not yet sent
	recovering error
	reconcile  bool
	lastSentID string
	queuedID   string // newest event queued (at start, the target's tail): the next one's predecessor
	ackedID    string
	ackedPos   Position
	// ackedSeq is the stream sequence of the newest message stored in
	// queue order in the current attempt; a duplicate ack at or below it
	// names another, older message (a reused event id). Each resend
	// restarts it from headSeq, the sequence of the last popped event (or
	// of the tail read): acks of later entries that came in after an
	// earlier one failed must not count, as the earlier one may be stored
	// before them.
	ackedSeq, headSeq uint64
	safe, saved       cdc.LSN
	backoff           time.Duration
	failingSince      time.Time
	stream            jetstream.Stream
	// maxMsgSize is the stream's max_msg_size (0: none), read with its
	// tail.
	maxMsgSize int

	// Catch-up logging (noteLag): since when the lag is large, and the
	// events forwarded by then.
	behindSince                time.Time
	forwarded, behindForwarded uint64

	// reconnected hears the NATS connection come back (see pause).
	reconnected chan nats.Status

	status atomic.Pointer[Status]
}

// Status is a snapshot for health checks and `qx-regions status`.
type Status struct {
	SourceConnected bool
	TargetConnected bool
	// SafeLSN is the position before which the target holds every
	// event: the safe LSN, or the position the source resumed from or
	// confirmed while idle when that is further.
	SafeLSN    cdc.LSN
	LagBytes   int64
	LagSeconds float64
	InFlight   int
	Failing    bool // the target refuses or does not answer; retrying
}

// New validates cfg and wires the replicator's collaborators.
func New(cfg Config, src Source, nc *nats.Conn, store CheckpointStore, dl DeadLetterWriter) (*Replicator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ValidateSubjectTemplate(cfg.SubjectTemplate); err != nil {
		return nil, fmt.Errorf("replication: Config.SubjectTemplate: %w", err)
	}
	tpl, _ := parseSubjectTemplate(cfg.SubjectTemplate)
	if src == nil || nc == nil || store == nil || dl == nil {
		return nil, errors.New("replication: New needs a source, a NATS connection, a checkpoint store and a dead-letter writer")
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight+1),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("replication: jetstream: %w", err)
	}
	r := &Replicator{
		cfg: cfg, src: src, nc: nc, js: js, store: store, dl: dl,
		log:     cfg.Logger.With("source", cfg.SourceRegion, "target", cfg.TargetRegion, "stream", cfg.Stream),
		b:       newBuilder(cfg.SourceRegion, tpl, cfg.Mapping),
		m:       newMetrics(cfg.Registerer, prometheus.Labels{"source": cfg.SourceRegion, "target": cfg.TargetRegion}),
		backoff: cfg.MinBackoff,
	}
	r.status.Store(&Status{})
	return r, nil
}

// Status returns the latest snapshot (updated every CheckpointInterval).
func (r *Replicator) Status() Status { return *r.status.Load() }

// Run replicates until ctx is cancelled (then it drains the in-flight
// window, saves the checkpoint, lets the source confirm it, and returns nil)
// or the source fails for good (it returns that error).
func (r *Replicator) Run(ctx context.Context) error {
	r.reconnected = r.nc.StatusChanged(nats.CONNECTED)
	defer r.nc.RemoveStatusListener(r.reconnected)
	if err := r.connectTarget(ctx); err != nil {
		return err
	}
	srcCtx, cancelSrc := context.WithCancel(context.Background())
	defer cancelSrc()
	srcDone := make(chan error, 1)
	go func() { srcDone <- r.src.Run(srcCtx) }()
	stopSource := func() error {
		cancelSrc()
		for range r.src.Messages() {
		}
		err := <-srcDone
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}

	tick := time.NewTicker(r.cfg.CheckpointInterval)
	defer tick.Stop()
	in := r.src.Messages()
	for {
		r.advance(ctx)
		if r.recovering == nil {
			r.sendMore()
		}
		if r.recovering != nil && r.wait == r.next {
			if err := r.recover(ctx); err != nil {
				r.shutdown()
				serr := stopSource()
				if ctx.Err() != nil {
					return serr // a shutdown while recovering
				}
				return err
			}
			continue
		}
		var batches <-chan []cdc.Message
		if len(r.q)-r.head < r.cfg.MaxInFlight {
			batches = in
		}
		var okCh <-chan *jetstream.PubAck
		var errCh <-chan error
		if r.wait < r.next {
			f := r.q[r.wait].fut
			okCh, errCh = f.Ok(), f.Err()
		}
		select {
		case batch, ok := <-batches:
			if !ok {
				r.shutdown()
				err := stopSource()
				if err == nil {
					err = errors.New("replication: source ended")
				}
				return err
			}
			if err := r.enqueue(ctx, batch); err != nil {
				r.shutdown()
				stopSource()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		case ack := <-okCh:
			r.resolved(ack, nil)
		case err := <-errCh:
			r.resolved(nil, err)
		case <-tick.C:
			r.checkpoint(ctx)
			r.updateStatus()
		case <-ctx.Done():
			r.shutdown()
			return stopSource()
		}
	}
}

// connectTarget makes sure the stream exists and reads its tail, retrying
// while NATS is unreachable.
func (r *Replicator) connectTarget(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	logged := false
	for {
		s, err := ensureStream(ctx, r.js, r.cfg.Stream, StreamSubject(r.cfg.SourceRegion), r.cfg.DuplicateWindow)
		if err == nil {
			var t tail
			if t, err = readTail(ctx, s, StreamSubject(r.cfg.SourceRegion)); err == nil {
				err = r.checkSourceBehindTail(ctx, t)
			}
			if errors.Is(err, ErrTargetAhead) {
				return err
			}
			if err == nil {
				r.stream, r.maxMsgSize = s, t.maxMsgSize
				r.ackedID, r.ackedPos, r.lastSentID, r.queuedID = t.id, t.pos, t.id, t.id
				r.ackedSeq, r.headSeq = t.lastSeq, t.lastSeq
				last := "none (empty stream)"
				if t.id != "" {
					last = t.pos.String()
				}
				r.log.Info("target stream ready", "last_position", last)
				return nil
			}
		}
		if errors.Is(err, ErrStreamConflict) || ctx.Err() != nil {
			return err
		}
		if !logged {
			r.log.Warn("target not ready, retrying", "err", err)
			logged = true
		}
		if err := sleepCtx(ctx, jitter(backoff)); err != nil {
			return err
		}
		backoff = min(2*backoff, r.cfg.MaxBackoff)
	}
}

// checkSourceBehindTail refuses a target stream that holds positions the
// source has not even written yet: skipping "stored" events by position
// would then drop new ones silently.
func (r *Replicator) checkSourceBehindTail(ctx context.Context, t tail) error {
	s, ok := r.src.(interface {
		CurrentWAL(context.Context) (cdc.LSN, error)
	})
	if !ok || t.id == "" {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cur, err := s.CurrentWAL(cctx)
	if err != nil {
		return fmt.Errorf("read the source's WAL position: %w", err)
	}
	if t.pos.LSN > cur {
		return fmt.Errorf("%w: stream %s ends at %s (message %s) but the source's WAL is at %s",
			ErrTargetAhead, r.cfg.Stream, t.pos, t.id, cur)
	}
	return nil
}

// enqueue turns a batch into queue entries; rows that can never be
// forwarded go to the dead letters right away, in order.
func (r *Replicator) enqueue(ctx context.Context, batch []cdc.Message) error {
	for _, m := range batch {
		switch m := m.(type) {
		case *cdc.Commit:
			r.q = append(r.q, &entry{commit: m, pos: Position{LSN: m.CommitLSN, Index: 1 << 30}})
		case *cdc.Event:
			pos := positionOf(m)
			if !r.ackedPos.Less(pos) {
				continue // the target holds it already (seen in its tail)
			}
			msg, id, skip, err := r.b.build(m)
			if skip {
				r.m.skipped.Inc()
				continue
			}
			if err == nil {
				err = r.fits(msg)
			}
			if err != nil {
				if err := r.deadLetter(ctx, m, err); err != nil {
					return err
				}
				continue
			}
			r.q = append(r.q, &entry{pos: pos, msg: msg, id: id, commitTime: m.CommitTime, ev: m})
			r.queuedID = id
		}
	}
	return nil
}

// fits predicts the refusals of msg that would come again on every
// resend: nats.go's for max_payload, the stream's for its max_msg_size
// and for a header block over 64 KiB, and the server's for a subject over
// its control line (it closes the connection). Sent, the message also
// names its predecessor (sendMore), which counts.
func (r *Replicator) fits(msg *nats.Msg) error {
	hdr := headerSize(msg) + chainSize(r.queuedID)
	size := hdr + len(msg.Data)
	switch {
	case size > int(r.nc.MaxPayload()):
		return fmt.Errorf("%w: %d bytes, max_payload is %d", ErrTooLarge, size, r.nc.MaxPayload())
	case r.maxMsgSize > 0 && size > r.maxMsgSize:
		return fmt.Errorf("%w: %d bytes, stream %s has max_msg_size %d", ErrTooLarge, size, r.cfg.Stream, r.maxMsgSize)
	case hdr > maxHeaderBlock:
		return fmt.Errorf("%w: header block of %d bytes, JetStream stores at most %d", ErrTooLarge, hdr, maxHeaderBlock)
	case len(msg.Subject) > maxSubjectLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrSubjectTooLong, len(msg.Subject), maxSubjectLen)
	}
	return nil
}

// chainSize is what naming prev in Nats-Expected-Last-Msg-Id adds to a
// message's size (for the first message of a stream without our messages:
// Nats-Expected-Last-Sequence).
func chainSize(prev string) int {
	if prev == "" {
		return len(HeaderExpectedLastSeq) + len(": \r\n") + 20
	}
	return len(HeaderExpectedLastID) + len(": \r\n") + len(prev)
}

// deadLetter records a row the target will never accept, retrying while
// the source database is unreachable.
func (r *Replicator) deadLetter(ctx context.Context, ev *cdc.Event, reason error) error {
	d := DeadLetter{Position: positionOf(ev), Reason: reason.Error(), Row: rawRow(ev, r.cfg.Mapping)}
	backoff := r.cfg.MinBackoff
	for {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.dl.Write(wctx, d)
		cancel()
		if err == nil {
			r.m.deadLetters.WithLabelValues(reasonLabel(reason)).Inc()
			r.log.Warn("event dead-lettered", "position", d.Position.String(), "reason", d.Reason)
			return nil
		}
		r.log.Warn("dead letter not written, retrying", "position", d.Position.String(), "err", err)
		if err := sleepCtx(ctx, jitter(backoff)); err != nil {
			return err
		}
		backoff = min(2*backoff, r.cfg.MaxBackoff)
	}
}

func reasonLabel(err error) string {
	switch {
	case errors.Is(err, ErrNullField):
		return "null_field"
	case errors.Is(err, ErrBadHeaders):
		return "bad_headers"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrSubjectTooLong):
		return "subject_too_long"
	case errors.Is(err, ErrBadSubject):
		return "bad_subject"
	case errors.Is(err, ErrReusedEventID):
		return "reused_event_id"
	}
	return "other"
}

// sendMore publishes queued entries while the window has room. Each
// message names its predecessor, so the stream stores them only in order.
func (r *Replicator) sendMore() {
	for r.next < len(r.q) && r.next-r.wait < r.cfg.MaxInFlight {
		e := r.q[r.next]
		if e.unsent() {
			e.acked = true // nothing to send; resolved in order by advance
			if r.wait == r.next {
				r.wait++
			}
			r.next++
			continue
		}
		if r.lastSentID == "" {
			// No message of ours in the stream: expect it as we saw it,
			// so a first message stored without its ack is refused on
			// resend instead of stored twice (also beyond the duplicate
			// window; this check runs before deduplication).
			delete(e.msg.Header, HeaderExpectedLastID)
			e.msg.Header[HeaderExpectedLastSeq] = []string{strconv.FormatUint(r.ackedSeq, 10)}
		} else {
			delete(e.msg.Header, HeaderExpectedLastSeq)
			e.msg.Header[HeaderExpectedLastID] = []string{r.lastSentID}
		}
		fut, err := r.js.PublishMsgAsync(e.msg, noRetries...)
		if reason := refusedMessage(err); reason != nil {
			// Refused before it was sent, and it would be on every
			// resend: dead-letter it in order (pop). The next message
			// names the same predecessor, as lastSentID stays.
			e.dead, e.fut = reason, nil
			continue // unsent now
		}
		if err != nil {
			r.fail(err)
			return
		}
		e.fut, e.sent, e.acked, e.seq, e.reusedSeq = fut, time.Now(), false, 0, 0
		r.lastSentID = e.id
		r.next++
	}
	r.m.inFlight.Set(float64(r.next - r.wait))
}

// refusedMessage says why nats.go refused to send a message synchronously
// when the reason is the message itself, not the connection: such a
// message can never be sent. It returns nil for any other error.
func refusedMessage(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, nats.ErrBadHeaderMsg):
		return fmt.Errorf("%w: nats.go refuses them: %w", ErrBadHeaders, err)
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("%w: nats.go refuses it: %w", ErrTooLarge, err)
	case errors.Is(err, nats.ErrBadSubject):
		return fmt.Errorf("%w: nats.go refuses it: %w", ErrBadSubject, err)
	}
	return nil
}

// noRetries turns off nats.go's own resend on "no responders", which could
// store messages out of order; the replicator resends the window itself.
var noRetries = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)}

// resolved handles the future of q[wait].
func (r *Replicator) resolved(ack *jetstream.PubAck, err error) {
	e := r.q[r.wait]
	if err == nil && ack != nil {
		e.acked = true
		r.m.latency.Observe(time.Since(e.sent).Seconds())
		if ack.Duplicate && ack.Sequence <= r.ackedSeq {
			// Deduplicated against an older message that is not this
			// event: its event_id was used before.
			e.reusedSeq = ack.Sequence
		} else {
			e.seq = ack.Sequence
			r.ackedSeq = max(r.ackedSeq, ack.Sequence)
		}
	} else {
		if err == nil {
			err = errors.New("publish future resolved without an ack")
		}
		if r.recovering == nil {
			r.fail(err)
		}
		if isWrongLast(err) {
			r.reconcile = true
		}
		if reason := refusedForGood(err); reason != nil {
			// Not stored, and never will be (the stream's limits changed
			// since fits ran): a dead letter in order. The messages
			// after it that named it are refused too; the resend
			// chains them to its predecessor.
			e.dead, e.acked = reason, true
		}
	}
	r.wait++
	// Commit markers and dead letters are resolved as soon as they are
	// reached.
	for r.wait < r.next && r.q[r.wait].unsent() {
		r.wait++
	}
}

// refusedForGood says why the stream refused a message when it would
// refuse it on every resend (too large for its limits); nil otherwise.
func refusedForGood(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum || apiErr.ErrorCode == errCodeHeaderTooLarge) {
		return fmt.Errorf("%w: the stream refuses it: %w", ErrTooLarge, err)
	}
	return nil
}

func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeWrongLastMsgID || apiErr.ErrorCode == errCodeWrongLastSeq)
}

// fail stops sending; once every in-flight publish has settled, recover
// resends from the first unacknowledged event.
func (r *Replicator) fail(err error) {
	r.recovering = err
	// Only a reconnect after this failure may cut a pause short.
	for len(r.reconnected) > 0 {
		<-r.reconnected
	}
	if r.failingSince.IsZero() {
		r.failingSince = time.Now()
		r.log.Warn("publish failed, resending from the first unacknowledged event", "err", err)
	}
}

// pause waits d before a resend, or less: a NATS connection that comes
// back (a restarted server, a healed link) ends the wait and restarts the
// backoff, so the resend does not sit out a delay grown during the outage.
func (r *Replicator) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	case <-r.reconnected:
		r.backoff = r.cfg.MinBackoff / 2 // doubled below
	}
	return nil
}

// recover runs when the window has settled after a failure.
func (r *Replicator) recover(ctx context.Context) error {
	r.m.retries.Inc()
	if r.reconcile {
		// The stream refused a message because its last message is not
		// the one we named: read what it holds and skip that.
		t, err := readTail(ctx, r.stream, StreamSubject(r.cfg.SourceRegion))
		if err != nil {
			r.log.Debug("read stream tail", "err", err)
			return sleepCtx(ctx, jitter(r.backoff))
		}
		if t.pos.Less(r.ackedPos) || (t.id == "" && r.ackedID != "") {
			return fmt.Errorf("%w: stream %s ends at %s, but %s was acknowledged", ErrTargetLost, r.cfg.Stream, t.pos, r.ackedPos)
		}
		for r.head < len(r.q) {
			e := r.q[r.head]
			if e.commit == nil && t.pos.Less(e.pos) {
				break
			}
			if e.commit == nil && e.reusedSeq == 0 && e.dead == nil {
				e.acked = true // the stream holds it
			}
			// A dead entry stays dead: the stream's tail proves nothing
			// about it, as the message after it was chained past it. It
			// is dead-lettered (pop); if an earlier attempt stored it
			// with its ack lost, it is then both in the stream and in
			// the dead letters, never in neither.
			if !r.pop(ctx, e) {
				return ctx.Err()
			}
		}
		r.ackedID, r.ackedPos, r.headSeq = t.id, t.pos, t.lastSeq
		r.maxMsgSize = t.maxMsgSize
		r.reconcile = false
	}
	if err := r.pause(ctx, jitter(r.backoff)); err != nil {
		return err
	}
	r.backoff = min(2*r.backoff, r.cfg.MaxBackoff)
	// Resend everything not acknowledged, in order.
	r.next, r.wait = r.head, r.head
	r.lastSentID = r.ackedID
	r.ackedSeq = r.headSeq
	r.recovering = nil
	return nil
}

// advance pops acknowledged entries from the head, in order.
func (r *Replicator) advance(ctx context.Context) {
	for r.head < r.wait && r.q[r.head].acked {
		if !r.pop(ctx, r.q[r.head]) {
			break
		}
	}
	if r.head == len(r.q) && r.head > 0 {
		clear(r.q)
		r.q, r.wait, r.next, r.head = r.q[:0], 0, 0, 0
	} else if r.head > 4096 && r.head*2 > len(r.q) {
		n := copy(r.q, r.q[r.head:])
		clear(r.q[n:])
		r.q = r.q[:n]
		r.wait -= r.head
		r.next -= r.head
		r.head = 0
	}
}

// pop removes the head entry, which the target holds: a transaction's end
// reached this way makes its end LSN safe. An event whose id turned out
// to be reused is dead-lettered first; pop reports false when that could
// not be written (ctx ended), leaving the entry in place.
func (r *Replicator) pop(ctx context.Context, e *entry) bool {
	if e.reusedSeq != 0 || e.dead != nil {
		reason := e.dead
		if e.reusedSeq != 0 {
			reason = fmt.Errorf("%w: %s is the message at stream sequence %d", ErrReusedEventID, e.id, e.reusedSeq)
		}
		if err := r.deadLetter(ctx, e.ev, reason); err != nil {
			return false
		}
		e.reusedSeq, e.dead = 0, nil
		e.commit, e.msg = nil, nil
		r.q[r.head] = nil
		r.head++
		r.fixIndexes()
		return true
	}
	if e.commit != nil {
		if e.commit.EndLSN > r.safe {
			r.safe = e.commit.EndLSN
			// Postgres may forget what the target stored at once; the
			// checkpoint follows, coalesced. (Waiting for the checkpoint
			// would hang a fast shutdown of the source: its walsender
			// waits for this position while new connections, like the
			// checkpoint's, are refused.)
			r.src.SetSafe(r.safe)
		}
	} else {
		r.ackedID, r.ackedPos = e.id, e.pos
		r.headSeq = max(r.headSeq, e.seq)
		r.m.forwarded.Inc()
		r.forwarded++
		r.m.bytes.Add(float64(len(e.msg.Data)))
		if !r.failingSince.IsZero() && r.recovering == nil {
			r.log.Info("target recovered", "after", time.Since(r.failingSince).Round(time.Millisecond).String())
			r.failingSince = time.Time{}
			r.backoff = r.cfg.MinBackoff
		}
	}
	r.q[r.head] = nil
	r.head++
	r.fixIndexes()
	return true
}

func (r *Replicator) fixIndexes() {
	if r.wait < r.head {
		r.wait = r.head
	}
	if r.next < r.wait {
		r.next = r.wait
	}
}

// durable is the position everything before which the target holds: the
// safe LSN, or what the source already stands on when that is further —
// the position it resumed from (a checkpoint, saved only once stored) or
// its confirmed one (also, while nothing is pending, its idle position,
// past every stored event). r.safe alone starts at 0 on every start and
// stays there while the outbox is idle.
func (r *Replicator) durable() cdc.LSN {
	pos := r.safe
	if s, ok := r.src.(interface{ Safe() cdc.LSN }); ok {
		pos = max(pos, s.Safe())
	}
	if s, ok := r.src.(interface{ Confirmed() cdc.LSN }); ok {
		pos = max(pos, s.Confirmed())
	}
	return pos
}

// checkpoint saves the durable position: never ahead of the target's
// acks, at most once per CheckpointInterval.
func (r *Replicator) checkpoint(ctx context.Context) {
	pos := r.durable()
	if pos <= r.saved {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.store.Save(sctx, pos); err != nil {
		if ctx.Err() == nil {
			r.log.Warn("checkpoint not saved", "err", err)
		}
		return
	}
	r.saved = pos
}

func (r *Replicator) updateStatus() {
	st := &Status{SafeLSN: r.durable(), InFlight: r.next - r.wait, TargetConnected: r.nc.IsConnected(),
		Failing: r.recovering != nil}
	if s, ok := r.src.(interface{ Connected() bool }); ok {
		st.SourceConnected = s.Connected()
	}
	if s, ok := r.src.(interface{ ServerWALEnd() cdc.LSN }); ok {
		if end := s.ServerWALEnd(); end > st.SafeLSN {
			st.LagBytes = int64(end - st.SafeLSN)
		}
	}
	for i := r.head; i < len(r.q); i++ {
		if e := r.q[i]; e.commit == nil && !e.acked {
			st.LagSeconds = time.Since(e.commitTime).Seconds()
			break
		}
	}
	r.noteLag(st.LagSeconds)
	r.m.safeLSN.Set(float64(st.SafeLSN))
	r.m.lagBytes.Set(float64(st.LagBytes))
	r.m.lagSeconds.Set(st.LagSeconds)
	r.status.Store(st)
}

// behindAfter is the age of the oldest unacknowledged event from which the
// replicator logs that it is catching up; once nothing older than
// caughtUpUnder is pending it logs that it caught up. (Variables for tests.)
var behindAfter, caughtUpUnder = 5 * time.Second, time.Second

// noteLag logs the two state changes of the lag: catching up (a backlog
// after a start or an outage, or a target too slow) and caught up.
func (r *Replicator) noteLag(lag float64) {
	switch {
	case r.behindSince.IsZero() && lag >= behindAfter.Seconds():
		r.behindSince, r.behindForwarded = time.Now(), r.forwarded
		r.log.Info("catching up", "lag_seconds", math.Round(lag*10)/10)
	case !r.behindSince.IsZero() && lag < caughtUpUnder.Seconds():
		r.log.Info("caught up", "after", time.Since(r.behindSince).Round(time.Millisecond).String(),
			"events", r.forwarded-r.behindForwarded)
		r.behindSince = time.Time{}
	}
}

// shutdown waits (bounded) for the in-flight window, then saves the
// checkpoint; nothing new is sent.
func (r *Replicator) shutdown() {
	// The run's context is done; dead letters and the checkpoint get a
	// bounded one of their own.
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout+10*time.Second)
	defer cancel()
	deadline := time.NewTimer(r.cfg.ShutdownTimeout)
	defer deadline.Stop()
	for r.wait < r.next {
		f := r.q[r.wait].fut
		select {
		case ack := <-f.Ok():
			r.resolved(ack, nil)
		case err := <-f.Err():
			r.resolved(nil, err)
		case <-deadline.C:
			r.log.Warn("shutdown: in-flight acks did not all arrive", "in_flight", r.next-r.wait)
			r.next = r.wait
		}
		r.advance(ctx)
	}
	// A transaction end (or a known dead letter) right behind the last
	// acked event needs no publish: reach it so its LSN is saved.
	for r.recovering == nil && r.wait == r.next && r.next < len(r.q) && r.q[r.next].unsent() {
		r.q[r.next].acked = true
		r.next++
		r.wait++
	}
	r.advance(ctx)
	r.checkpoint(ctx)
	r.updateStatus()
	r.log.Info("replicator stopped", "safe_lsn", r.saved.String())
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
