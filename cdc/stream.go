package cdc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Config configures a [Stream]. The zero value of every field but DSN and
// Slot has a default.
type Config struct {
	// DSN is the source database's connection string; the stream adds
	// replication=database itself.
	DSN string
	// Slot is the logical replication slot (see SlotName).
	Slot string
	// Publication is the outbox publication; default qx_outbox_pub.
	Publication string
	// Mapping is the outbox table and its columns; default DefaultMapping().
	Mapping *Mapping
	// StartLSN is where to resume (the checkpoint); Postgres starts from
	// the later of it and the slot's confirmed position.
	StartLSN LSN
	// StatusInterval is how often standby status is sent; default 1s, at
	// most 10s.
	StatusInterval time.Duration
	// Buffer is how many decoded messages may wait for the consumer;
	// default 4096. It bounds the stream's memory whatever the
	// transaction size. Messages travel in batches of up to 256.
	Buffer int
	// MinBackoff and MaxBackoff bound the reconnect delay; defaults 100ms
	// and 5s. Each delay is jittered.
	MinBackoff, MaxBackoff time.Duration
	// SlotInUseWait is how long the first connection waits for a slot that
	// another process streams from before failing with ErrSlotInUse;
	// default 10s. (A replicator that was just killed leaves its walsender
	// behind for a moment.) After a stream has run, reconnects wait forever.
	SlotInUseWait time.Duration
	// ReceiveTimeout is how long the server may send no byte before the
	// connection counts as dead (a half-open TCP connection after a
	// partition or a lost host). From half of it on, status updates ask
	// the server for a reply, which an idle walsender would otherwise
	// never send. Default: twice the server's wal_sender_timeout, at least
	// 30s (a walsender busy decoding a large transaction it filters out
	// reads our requests only every wal_sender_timeout/2).
	ReceiveTimeout time.Duration
	// Logger receives state changes (connected, retrying, recovered); nil
	// means slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.DSN == "" {
		return errors.New("cdc: Config.DSN is empty")
	}
	if err := ValidateIdentifier(c.Slot); err != nil {
		return fmt.Errorf("cdc: Config.Slot: %w", err)
	}
	if c.Publication == "" {
		c.Publication = DefaultPublication
	}
	if err := ValidateIdentifier(c.Publication); err != nil {
		return fmt.Errorf("cdc: Config.Publication: %w", err)
	}
	if c.Mapping == nil {
		m := DefaultMapping()
		c.Mapping = &m
	}
	c.Mapping.fill()
	if c.Mapping.Columns[FieldPayload] == "" {
		return errors.New("cdc: Config.Mapping: the payload field must be mapped")
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = time.Second
	}
	if c.StatusInterval > 10*time.Second {
		return fmt.Errorf("cdc: Config.StatusInterval %v is above 10s", c.StatusInterval)
	}
	if c.Buffer <= 0 {
		c.Buffer = 4096
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.SlotInUseWait <= 0 {
		c.SlotInUseWait = 10 * time.Second
	}
	if c.ReceiveTimeout < 0 || (c.ReceiveTimeout > 0 && c.ReceiveTimeout < 2*c.StatusInterval) {
		return fmt.Errorf("cdc: Config.ReceiveTimeout %v is below twice the status interval %v", c.ReceiveTimeout, c.StatusInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Stream streams the outbox's inserts from a logical replication slot. Run
// it with [Stream.Run]; read [Stream.Messages]; declare what the target
// stored with [Stream.SetSafe].
type Stream struct {
	cfg Config
	log *slog.Logger
	out chan []Message
	// batch collects messages until the socket has nothing buffered or
	// it is full: one channel handoff per batch, not per row.
	batch []Message

	safe      atomic.Uint64 // consumer's safe LSN
	confirmed atomic.Uint64 // last flush position sent to the server
	serverEnd atomic.Uint64
	connected atomic.Bool

	mappingChecked bool
	lastRead       atomic.Int64  // unix ns of the last byte from the server
	receiveTimeout time.Duration // the session's silence limit

	// Owned by the Run goroutine.
	rels       map[uint32]*relation
	inTxn      bool
	txnLSN     LSN
	txnTime    time.Time
	txnXid     uint32
	txnIndex   int
	txnSent    int
	lastCommit LSN // commit LSN of the newest transaction fully delivered
	lastEnd    LSN // its end LSN
	// Replays after a reconnect are skipped up to this position.
	delivLSN   LSN
	delivIndex int
	idleLSN    LSN // server WAL end seen while no transaction was open
	// Reply-requested keepalives at one position (see notePing).
	pingLSN   LSN
	pingSince time.Time
	pings     int
}

type relation struct {
	fields       []Field // per column; -1 when unmapped
	outbox       bool
	payloadBytea bool
}

// New validates cfg and returns a stream that starts at cfg.StartLSN.
func New(cfg Config) (*Stream, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Stream{cfg: cfg, log: cfg.Logger.With("slot", cfg.Slot),
		out: make(chan []Message, max(1, cfg.Buffer/maxBatch))}
	s.safe.Store(uint64(cfg.StartLSN))
	s.lastEnd = cfg.StartLSN
	return s, nil
}

const maxBatch = 256

// Messages delivers events and commits in commit order, in batches. It is
// closed when Run returns. The consumer owns each batch it receives.
func (s *Stream) Messages() <-chan []Message { return s.out }

// SetSafe declares that every transaction ending at or before lsn is stored
// by the target. It never moves backwards. Only this position (or, while
// nothing is pending, the server's own position) is confirmed to Postgres.
func (s *Stream) SetSafe(lsn LSN) {
	for {
		old := s.safe.Load()
		if uint64(lsn) <= old || s.safe.CompareAndSwap(old, uint64(lsn)) {
			return
		}
	}
}

// Safe is the consumer's safe LSN as last declared.
func (s *Stream) Safe() LSN { return LSN(s.safe.Load()) }

// Confirmed is the flush position last reported to Postgres.
func (s *Stream) Confirmed() LSN { return LSN(s.confirmed.Load()) }

// ServerWALEnd is the newest WAL end the server reported.
func (s *Stream) ServerWALEnd() LSN { return LSN(s.serverEnd.Load()) }

// Connected reports whether a replication session is streaming.
func (s *Stream) Connected() bool { return s.connected.Load() }

// Run streams until ctx is cancelled or a fatal error (slot missing, lost
// or held by another process at start, outbox not matching the mapping)
// happens. Connection loss and server restarts are retried with capped,
// jittered backoff; the stream resumes from the safe LSN and skips what it
// already delivered, so the consumer sees every event exactly once.
func (s *Stream) Run(ctx context.Context) error {
	defer close(s.out)
	backoff := s.cfg.MinBackoff
	var failing error
	started := time.Now()
	everStreamed := false
	for {
		sessionStart := time.Now()
		delivered := s.delivLSN
		streamed, err := s.session(ctx)
		everStreamed = everStreamed || streamed
		// Progress resets the backoff: a session that delivered something
		// new or streamed for a while. An error that comes back right
		// after every START_REPLICATION (a row that cannot be decoded, a
		// server error) must not become a tight reconnect loop.
		progress := streamed && (s.delivLSN != delivered || time.Since(sessionStart) >= progressSession)
		s.connected.Store(false)
		if len(s.batch) > 0 && ctx.Err() == nil {
			// Decoded before the failure and counted as delivered: hand
			// them over, the replay after reconnecting skips them.
			select {
			case s.out <- s.batch:
				s.batch = make([]Message, 0, maxBatch)
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progress {
			backoff = s.cfg.MinBackoff
		}
		if fatal(err) {
			return err
		}
		if errors.Is(err, ErrSlotInUse) && !everStreamed && time.Since(started) > s.cfg.SlotInUseWait {
			return err
		}
		if failing == nil || progress {
			s.log.Warn("replication connection failed, retrying", "err", err)
			failing = err
		}
		if err := sleep(ctx, jitter(backoff)); err != nil {
			return err
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
}

// progressSession is how long a session must stream to count as progress
// when it delivered nothing new.
const progressSession = 10 * time.Second

func fatal(err error) bool {
	for _, e := range []error{ErrSlotMissing, ErrSlotLost, ErrSlotPlugin, ErrOutboxTable, ErrPublication, ErrBadName} {
		if errors.Is(err, e) {
			return true
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 42 (undefined object, syntax) and 28 (authorization) do not
		// heal by retrying; e.g. a missing publication.
		return strings.HasPrefix(pgErr.Code, "42") || strings.HasPrefix(pgErr.Code, "28")
	}
	return false
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// session runs one replication connection until it fails. streamed reports
// whether START_REPLICATION succeeded.
func (s *Stream) session(ctx context.Context) (streamed bool, err error) {
	pcfg, err := pgconn.ParseConfig(s.cfg.DSN)
	if err != nil {
		return false, fmt.Errorf("parse source DSN: %w", err)
	}
	pcfg.RuntimeParams["replication"] = "database"
	pcfg.RuntimeParams["application_name"] = s.cfg.Slot
	pcfg.RuntimeParams["DateStyle"] = "ISO"
	pcfg.RuntimeParams["TimeZone"] = "UTC"
	pcfg.RuntimeParams["bytea_output"] = "hex"
	dial := pcfg.DialFunc
	pcfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &readClock{Conn: c, last: &s.lastRead}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := pgconn.ConnectConfig(cctx, pcfg)
	cancel()
	if err != nil {
		return false, fmt.Errorf("connect replication: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn.Close(cctx)
		cancel()
	}()

	if !s.mappingChecked {
		if err := s.checkMapping(ctx); err != nil {
			return false, err
		}
		s.mappingChecked = true
	}
	if err := s.checkSlot(ctx, conn, pcfg.Database); err != nil {
		return false, err
	}
	if s.receiveTimeout, err = s.silenceLimit(ctx, conn); err != nil {
		return false, err
	}
	start := s.Safe()
	err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + s.cfg.Publication + "'"},
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use
			return false, fmt.Errorf("%w: %s", ErrSlotInUse, pgErr.Message)
		}
		return false, fmt.Errorf("start replication at %s: %w", start, err)
	}
	s.connected.Store(true)
	s.log.Info("replication connected", "start_lsn", start.String())
	s.rels = map[uint32]*relation{}
	s.inTxn = false
	s.lastEnd = max(s.lastEnd, start)
	s.idleLSN, s.pingLSN, s.pings = 0, 0, 0
	err = s.receive(ctx, conn)
	if ctx.Err() != nil {
		// The last word: the consumer's final safe position.
		if s.sendStatus(conn, false) == nil {
			endCopy(conn)
		}
	}
	return true, err
}

// endCopy ends the replication COPY and reads what the server still sends
// until it is back to idle, for at most 2 seconds. The walsender handles
// our messages in order, so then it has applied the final status. Closing
// at once instead, with the server's data unread, resets the connection,
// and a walsender blocked sending to us dies on the reset without reading
// that status: the slot stays at the previous one.
func endCopy(conn *pgconn.PgConn) {
	conn.Frontend().Send(&pgproto3.CopyDone{})
	if err := conn.Frontend().Flush(); err != nil {
		return
	}
	netConn := conn.Conn()
	defer netConn.SetReadDeadline(time.Time{})
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		// Set on every round: the cancelled receive's wake-up may move
		// the deadline to the past once more, late.
		netConn.SetReadDeadline(deadline)
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return
		}
		switch msg.(type) {
		case *pgproto3.ReadyForQuery, *pgproto3.ErrorResponse:
			return
		}
	}
}

// silenceLimit is Config.ReceiveTimeout, or by default twice the server's
// wal_sender_timeout, at least 30s (2 minutes when the server's timeout
// is off).
func (s *Stream) silenceLimit(ctx context.Context, conn *pgconn.PgConn) (time.Duration, error) {
	if s.cfg.ReceiveTimeout > 0 {
		return s.cfg.ReceiveTimeout, nil
	}
	res, err := conn.Exec(ctx, "SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("read wal_sender_timeout: %w", err)
	}
	ms := int64(60_000) // the server's default
	if len(res) > 0 && len(res[0].Rows) > 0 {
		if v, err := strconv.ParseInt(string(res[0].Rows[0][0]), 10, 64); err == nil {
			ms = v
		}
	}
	if ms <= 0 {
		return 2 * time.Minute, nil
	}
	return max(30*time.Second, 2*time.Duration(ms)*time.Millisecond), nil
}

// readClock notes when the server last sent a byte (see receive).
type readClock struct {
	net.Conn
	last *atomic.Int64
}

func (c *readClock) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// checkMapping validates the mapping against the live outbox table once, at
// the first connection, so a missing column or an unusable type stops the
// stream at start rather than when the first outbox row arrives.
func (s *Stream) checkMapping(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect source: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := s.cfg.Mapping.Validate(cctx, conn); err != nil {
		return err
	}
	// A publication that lacks the table (or publishes its partitions)
	// would stream nothing, silently.
	return checkPublished(cctx, conn, s.cfg.Publication, *s.cfg.Mapping)
}

func (s *Stream) checkSlot(ctx context.Context, conn *pgconn.PgConn, database string) error {
	res, err := conn.Exec(ctx, fmt.Sprintf(`SELECT plugin, database, active, coalesce(wal_status, ''), coalesce(active_pid, 0)
		FROM pg_replication_slots WHERE slot_name = '%s'`, s.cfg.Slot)).ReadAll()
	if err != nil {
		return fmt.Errorf("read slot %s: %w", s.cfg.Slot, err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		return fmt.Errorf("%w: %s does not exist; run qx-regions setup (a new slot starts at the current WAL position)",
			ErrSlotMissing, s.cfg.Slot)
	}
	row := res[0].Rows[0]
	info := SlotInfo{Name: s.cfg.Slot, Plugin: string(row[0]), Database: string(row[1]), WALStatus: string(row[3])}
	if err := checkSlot(info, database); err != nil {
		return err
	}
	if string(row[2]) == "t" {
		return fmt.Errorf("%w: %s is streamed by pid %s", ErrSlotInUse, s.cfg.Slot, row[4])
	}
	return nil
}

// receive reads the replication stream until the connection fails or ctx
// ends, sending standby status every StatusInterval and whenever asked.
func (s *Stream) receive(ctx context.Context, conn *pgconn.PgConn) error {
	// Receives use the socket's read deadline, not a context: watching a
	// context costs more per message than decoding a row. A cancelled ctx
	// wakes the read by moving the deadline to the past; a timeout leaves
	// the connection usable (pgconn keeps a partly read message).
	netConn := conn.Conn()
	nextStatus := time.Now().Add(s.cfg.StatusInterval)
	var deadline time.Time
	stopWatch := context.AfterFunc(ctx, func() { netConn.SetReadDeadline(time.Unix(1, 0)) })
	defer stopWatch()
	defer netConn.SetReadDeadline(time.Time{})
	// lastHeard is when the server last sent something while we were
	// reading (time spent handing batches to a slow consumer does not
	// count as the server's silence).
	// Bytes count, not whole messages: a large row over a slow link takes
	// many reads.
	lastHeard := time.Now()
	timeout := s.receiveTimeout
	for {
		if !time.Now().Before(nextStatus) {
			if t := s.lastRead.Load(); t > lastHeard.UnixNano() {
				lastHeard = time.Unix(0, t)
			}
			silent := time.Since(lastHeard)
			if silent > timeout {
				return fmt.Errorf("%w: nothing for %v", errServerSilent, silent.Round(time.Second))
			}
			if err := s.sendStatus(conn, silent >= timeout/2); err != nil {
				return err
			}
			nextStatus = time.Now().Add(s.cfg.StatusInterval)
		}
		if len(s.batch) > 0 && conn.Frontend().ReadBufferLen() == 0 {
			// The next receive may block: hand over what is decoded.
			if err := s.flush(ctx, conn, &nextStatus); err != nil {
				return err
			}
			lastHeard = time.Now()
		}
		if deadline != nextStatus && ctx.Err() == nil {
			deadline = nextStatus
			netConn.SetReadDeadline(deadline)
			if ctx.Err() != nil { // cancelled in between: wake at once
				netConn.SetReadDeadline(time.Unix(1, 0))
			}
		}
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		lastHeard = time.Now()
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.handleCopyData(ctx, conn, msg.Data, &nextStatus); err != nil {
				return err
			}
			lastHeard = time.Now() // also after a wait for the consumer
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("replication: server ended the stream")
		}
	}
}

func (s *Stream) handleCopyData(ctx context.Context, conn *pgconn.PgConn, data []byte, nextStatus *time.Time) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		s.noteServerEnd(pkm.ServerWALEnd)
		if !s.inTxn {
			s.idleLSN = pkm.ServerWALEnd
		}
		if pkm.ReplyRequested {
			if err := s.sendStatus(conn, false); err != nil {
				return err
			}
			return s.notePing(pkm.ServerWALEnd)
		}
	case pglogrepl.XLogDataByteID:
		if len(data) < 25 {
			return fmt.Errorf("short XLogData (%d bytes)", len(data))
		}
		s.noteServerEnd(LSN(binary.BigEndian.Uint64(data[9:])))
		return s.handleWAL(ctx, conn, data[25:], nextStatus)
	}
	return nil
}

func (s *Stream) noteServerEnd(lsn LSN) {
	if uint64(lsn) > s.serverEnd.Load() {
		s.serverEnd.Store(uint64(lsn))
	}
}

// handleWAL decodes one pgoutput message.
func (s *Stream) handleWAL(ctx context.Context, conn *pgconn.PgConn, d []byte, nextStatus *time.Time) error {
	if len(d) == 0 {
		return nil
	}
	switch pglogrepl.MessageType(d[0]) {
	case pglogrepl.MessageTypeBegin:
		var m pglogrepl.BeginMessage
		if err := m.Decode(d[1:]); err != nil {
			return fmt.Errorf("decode begin: %w", err)
		}
		s.inTxn, s.txnLSN, s.txnTime, s.txnXid, s.txnIndex, s.txnSent = true, m.FinalLSN, m.CommitTime, m.Xid, 0, 0
	case pglogrepl.MessageTypeRelation:
		var m pglogrepl.RelationMessage
		if err := m.Decode(d[1:]); err != nil {
			return fmt.Errorf("decode relation: %w", err)
		}
		rel, err := s.relation(&m)
		if err != nil {
			return err
		}
		s.rels[m.RelationID] = rel
	case pglogrepl.MessageTypeInsert:
		if !s.inTxn {
			return errors.New("insert outside a transaction")
		}
		ev, err := s.decodeInsert(d)
		if err != nil || ev == nil {
			return err
		}
		if s.txnLSN < s.delivLSN || (s.txnLSN == s.delivLSN && ev.Index <= s.delivIndex) {
			return nil // delivered before a reconnect
		}
		s.delivLSN, s.delivIndex = ev.CommitLSN, ev.Index
		s.txnSent++
		return s.deliver(ctx, conn, ev, nextStatus)
	case pglogrepl.MessageTypeCommit:
		var m pglogrepl.CommitMessage
		if err := m.Decode(d[1:]); err != nil {
			return fmt.Errorf("decode commit: %w", err)
		}
		s.inTxn = false
		if m.TransactionEndLSN <= s.lastEnd {
			return nil // a replay
		}
		s.lastCommit, s.lastEnd = m.CommitLSN, m.TransactionEndLSN
		s.delivLSN, s.delivIndex = m.CommitLSN, math.MaxInt
		return s.deliver(ctx, conn, &Commit{CommitLSN: m.CommitLSN, EndLSN: m.TransactionEndLSN,
			CommitTime: m.CommitTime, Events: s.txnIndex}, nextStatus)
	}
	// Type, Origin, Message, Truncate, Update and Delete are not events.
	return nil
}

// deliver adds m to the batch for the consumer.
func (s *Stream) deliver(ctx context.Context, conn *pgconn.PgConn, m Message, nextStatus *time.Time) error {
	s.batch = append(s.batch, m)
	if len(s.batch) >= maxBatch {
		return s.flush(ctx, conn, nextStatus)
	}
	return nil
}

// flush hands the batch to the consumer, keeping the server's
// wal_sender_timeout satisfied with status updates while the consumer is
// slow.
func (s *Stream) flush(ctx context.Context, conn *pgconn.PgConn, nextStatus *time.Time) error {
	// s.batch is emptied only once handed over: on an error it stays, and
	// Run hands it over before reconnecting (its positions count as
	// delivered, so the replay skips them).
	select {
	case s.out <- s.batch:
		s.batch = make([]Message, 0, maxBatch)
		return nil
	default:
	}
	for {
		wait := time.Until(*nextStatus)
		if wait <= 0 {
			if err := s.sendStatus(conn, false); err != nil {
				return err
			}
			*nextStatus = time.Now().Add(s.cfg.StatusInterval)
			wait = s.cfg.StatusInterval
		}
		t := time.NewTimer(wait)
		select {
		case s.out <- s.batch:
			t.Stop()
			s.batch = make([]Message, 0, maxBatch)
			return nil
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// errServerSilent means the server sent nothing, not even a reply to a
// status that asked for one, for ReceiveTimeout: the connection is dead.
var errServerSilent = errors.New("replication connection silent")

// errServerWaiting: see notePing.
var errServerWaiting = errors.New("server is shutting down and waits for events that are not yet stored by the target; disconnecting so it can stop")

// notePing watches reply-requested keepalives. A shutting-down walsender
// asks for a reply again and again at the same position until we confirm
// everything it sent; while the target has not stored those events we
// cannot, and the server's fast shutdown would wait for as long as the
// target is away. Leaving lets it stop; the replay after reconnecting
// skips what was delivered.
func (s *Stream) notePing(end LSN) error {
	if end != s.pingLSN {
		s.pingLSN, s.pingSince, s.pings = end, time.Now(), 0
	}
	s.pings++
	if s.pings >= 3 && time.Since(s.pingSince) > 3*time.Second && s.flushPosition() < end {
		return errServerWaiting
	}
	return nil
}

// flushPosition is the one place that decides what Postgres may forget:
// the consumer's safe LSN, or, when no transaction is open and everything
// delivered is safe, the server's idle position.
func (s *Stream) flushPosition() LSN {
	pos := s.Safe()
	if !s.inTxn && pos >= s.lastEnd && s.idleLSN > pos {
		pos = s.idleLSN
	}
	return pos
}

func (s *Stream) sendStatus(conn *pgconn.PgConn, reply bool) error {
	pos := s.flushPosition()
	if c := s.Confirmed(); pos < c {
		pos = c
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ReplyRequested: reply,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	s.confirmed.Store(uint64(pos))
	return nil
}

func (s *Stream) relation(m *pglogrepl.RelationMessage) (*relation, error) {
	mp := s.cfg.Mapping
	rel := &relation{fields: make([]Field, len(m.Columns))}
	rel.outbox = m.Namespace == mp.Schema && m.RelationName == mp.Table
	byName := map[string]int{}
	for i, c := range m.Columns {
		rel.fields[i] = -1
		byName[c.Name] = i
	}
	if !rel.outbox {
		return rel, nil
	}
	for f := Field(0); f < NumFields; f++ {
		col := mp.Columns[f]
		if col == "" {
			continue
		}
		i, ok := byName[col]
		if !ok {
			return nil, fmt.Errorf("%w: the stream's relation %s.%s has no column %q (mapped to %s)",
				ErrOutboxTable, m.Namespace, m.RelationName, col, f)
		}
		rel.fields[i] = f
		if f == FieldPayload && m.Columns[i].DataType == 17 { // bytea
			rel.payloadBytea = true
		}
	}
	return rel, nil
}

// decodeInsert decodes an Insert message ('I', relation id, 'N', tuple)
// straight into an Event, with one allocation for all of its values.
func (s *Stream) decodeInsert(d []byte) (*Event, error) {
	if len(d) < 8 {
		return nil, errors.New("decode insert: short message")
	}
	relID := binary.BigEndian.Uint32(d[1:])
	rel := s.rels[relID]
	if rel == nil {
		return nil, fmt.Errorf("decode insert: unknown relation %d", relID)
	}
	if !rel.outbox {
		return nil, nil
	}
	if d[5] != 'N' {
		return nil, fmt.Errorf("decode insert: tuple type %q", d[5])
	}
	ncols := int(binary.BigEndian.Uint16(d[6:]))
	if ncols != len(rel.fields) {
		return nil, fmt.Errorf("decode insert: %d columns, relation has %d", ncols, len(rel.fields))
	}
	var spans [NumFields][2]int
	total := 0
	p := 8
	for i := 0; i < ncols; i++ {
		if p >= len(d) {
			return nil, errors.New("decode insert: truncated tuple")
		}
		kind := d[p]
		p++
		switch kind {
		case 'n', 'u':
			if f := rel.fields[i]; f >= 0 {
				spans[f] = [2]int{-1, -1}
			}
		case 't', 'b':
			if p+4 > len(d) {
				return nil, errors.New("decode insert: truncated column")
			}
			l := int(binary.BigEndian.Uint32(d[p:]))
			p += 4
			if l < 0 || p+l > len(d) {
				return nil, errors.New("decode insert: truncated column")
			}
			if f := rel.fields[i]; f >= 0 {
				spans[f] = [2]int{p, p + l}
				total += l
			}
			p += l
		default:
			return nil, fmt.Errorf("decode insert: column kind %q", kind)
		}
	}
	ev := &Event{CommitLSN: s.txnLSN, Index: s.txnIndex, CommitTime: s.txnTime, Xid: s.txnXid}
	s.txnIndex++
	buf := make([]byte, total)
	for f := Field(0); f < NumFields; f++ {
		sp := spans[f]
		if sp[1] <= 0 && sp[0] <= 0 {
			continue // NULL or unmapped
		}
		n := copy(buf, d[sp[0]:sp[1]])
		ev.Values[f] = buf[:n:n]
		buf = buf[n:]
	}
	if rel.payloadBytea && ev.Values[FieldPayload] != nil {
		raw, err := decodeBytea(ev.Values[FieldPayload])
		if err != nil {
			return nil, fmt.Errorf("decode payload at %s/%d: %w", ev.CommitLSN, ev.Index, err)
		}
		ev.Values[FieldPayload] = raw
	}
	return ev, nil
}

// CurrentWAL returns the source server's current WAL write position
// (pg_current_wal_lsn), over a short-lived ordinary connection.
func (s *Stream) CurrentWAL(ctx context.Context) (LSN, error) {
	conn, err := pgconn.Connect(ctx, s.cfg.DSN)
	if err != nil {
		return 0, fmt.Errorf("connect source: %w", err)
	}
	defer conn.Close(context.Background())
	res, err := conn.Exec(ctx, "SELECT pg_current_wal_lsn()::text").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("read current WAL position: %w", err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		return 0, errors.New("read current WAL position: no row")
	}
	return ParseLSN(string(res[0].Rows[0][0]))
}
