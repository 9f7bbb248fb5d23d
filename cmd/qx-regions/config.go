package main

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/cdc"
	"github.com/qx-platform/regions/replication"
)

// pairSettings are the settings of one source → target pair, shared by
// setup, replicate and status.
type pairSettings struct {
	regionName, regionURLs                       *setting
	sourceDSN, targetRegion, targetNATS          *setting
	slot, publication, stream, subject           *setting
	outboxTable, outboxColumns                   *setting
	dupWindow, maxInFlight, publishTimeout       *setting
	shutdownTimeout, statusInterval, readyMaxLag *setting
	natsCreds, natsNKey, natsUser, natsPassword  *setting
	natsToken, natsCA, natsCert, natsKey         *setting
	adminAddr, logFormat, logLevel               *setting
}

// pairConfig is the validated form.
type pairConfig struct {
	region          regions.Config
	source, target  string
	sourceDSN       string
	natsURL         string
	slot            string
	publication     string
	stream          string
	subject         string
	mapping         cdc.Mapping
	dupWindow       time.Duration
	maxInFlight     int
	publishTimeout  time.Duration
	shutdownTimeout time.Duration
	statusInterval  time.Duration
	readyMaxLag     time.Duration
	nats            natsSecurity
	adminAddr       string
	logFormat       string
	logLevel        slog.Level
}

func addPairSettings(s *settings, withNATS bool) *pairSettings {
	p := &pairSettings{
		regionName:   s.add("QX_REGION__NAME", "", "this (source) region's name, e.g. us-east-1"),
		regionURLs:   s.add("QX_REGION__URLS", "", `every region's base URL: JSON {"us-east-1":"https://us.example.com"} or name=url,name=url`),
		sourceDSN:    s.add("QX_REPLICATION__SOURCE_DSN", "", "the source region's Postgres (the outbox database), e.g. postgres://qx@db:5432/app?sslmode=verify-full"),
		targetRegion: s.add("QX_REPLICATION__TARGET_REGION", "", "the region the events are replicated to, e.g. eu-west-1"),
		slot:         s.add("QX_REPLICATION__SLOT", "", "logical replication slot (default qx_<source>_to_<target>, '-' as '_')"),
		publication:  s.add("QX_REPLICATION__PUBLICATION", cdc.DefaultPublication, "publication of the outbox table"),
		outboxTable:  s.add("QX_REPLICATION__OUTBOX_TABLE", "public.qx_outbox", "outbox table, [schema.]table"),
		outboxColumns: s.add("QX_REPLICATION__OUTBOX_COLUMNS", "",
			"column mapping overrides, field=column,... (fields: event_id, tenant_id, aggregate_type, aggregate_id, event_type, payload, headers, created_at, origin_region; an empty column unmaps a field)"),
		stream:         s.add("QX_REPLICATION__STREAM", "", "target JetStream stream (default QX_EVENTS_<SOURCE>)"),
		subject:        s.add("QX_REPLICATION__SUBJECT_TEMPLATE", replication.DefaultSubjectTemplate, "subject of each event"),
		dupWindow:      s.add("QX_REPLICATION__DUPLICATE_WINDOW", "2m", "duplicate window of a stream created by the replicator"),
		maxInFlight:    s.add("QX_REPLICATION__MAX_IN_FLIGHT", "8192", "publishes awaiting an ack at most"),
		publishTimeout: s.add("QX_REPLICATION__PUBLISH_TIMEOUT", "10s", "how long an ack may take before the window is resent"),
		shutdownTimeout: s.add("QX_REPLICATION__SHUTDOWN_TIMEOUT", "15s",
			"on SIGTERM, how long to wait for in-flight acks before saving the checkpoint and exiting"),
		statusInterval: s.add("QX_REPLICATION__STATUS_INTERVAL", "1s", "how often standby status is sent to Postgres (at most 10s)"),
		readyMaxLag:    s.add("QX_REPLICATION__READY_MAX_LAG", "60s", "/readyz fails while the oldest unacked event is older than this"),
		adminAddr:      s.add("QX_ADMIN__ADDR", "127.0.0.1:9180", "admin HTTP server (/healthz, /readyz, /metrics), host:port; off disables it"),
		logFormat:      s.add("QX_LOG__FORMAT", "auto", "log format: auto (text on a terminal, JSON otherwise), text or json"),
		logLevel:       s.add("QX_LOG__LEVEL", "info", "log level: debug, info, warn or error"),
	}
	if withNATS {
		p.targetNATS = s.add("QX_REPLICATION__TARGET_NATS_URL", "", "the target region's NATS servers, e.g. nats://nats.eu:4222 (comma-separated for several)")
		p.natsCreds = s.add("QX_NATS__CREDS_FILE", "", "NATS credentials file (JWT + nkey seed)")
		p.natsNKey = s.add("QX_NATS__NKEY_FILE", "", "NATS nkey seed file")
		p.natsUser = s.add("QX_NATS__USER", "", "NATS user name")
		p.natsPassword = s.secret("QX_NATS__PASSWORD", "NATS password (never logged)")
		p.natsToken = s.secret("QX_NATS__TOKEN", "NATS token (never logged)")
		p.natsCA = s.add("QX_NATS__TLS_CA_FILE", "", "CA certificate file to verify the NATS server (enables TLS)")
		p.natsCert = s.add("QX_NATS__TLS_CERT_FILE", "", "client certificate file for NATS TLS")
		p.natsKey = s.add("QX_NATS__TLS_KEY_FILE", "", "client key file for NATS TLS")
	}
	return p
}

// load validates every setting, before any connection is made.
func (p *pairSettings) load() (*pairConfig, error) {
	c := &pairConfig{}
	var err error
	if c.region, err = regions.ParseConfig(p.regionName.value, p.regionURLs.value); err != nil {
		return nil, usageErrorf("%v", err)
	}
	c.source = c.region.Name
	if c.sourceDSN, err = p.sourceDSN.dsn(); err != nil {
		return nil, err
	}
	if c.target, err = p.targetRegion.required(); err != nil {
		return nil, err
	}
	if err := regions.ValidateRegionName(c.target); err != nil {
		return nil, usageErrorf("%s: %v", p.targetRegion.name(), err)
	}
	if c.target == c.source {
		return nil, usageErrorf("%s: %q is this region (%s); replicate to another region", p.targetRegion.name(), c.target, p.regionName.name())
	}
	c.slot = p.slot.value
	if c.slot == "" {
		if c.slot, err = cdc.SlotName(c.source, c.target); err != nil {
			return nil, usageErrorf("%s/%s: %v", p.regionName.name(), p.targetRegion.name(), err)
		}
	} else if err := cdc.ValidateIdentifier(c.slot); err != nil {
		return nil, usageErrorf("%s: %v", p.slot.name(), err)
	}
	if c.publication = p.publication.value; cdc.ValidateIdentifier(c.publication) != nil {
		return nil, usageErrorf("%s: %q is not a valid publication name (a-z, 0-9, _)", p.publication.name(), c.publication)
	}
	if c.mapping, err = p.parseMapping(); err != nil {
		return nil, err
	}
	c.stream = p.stream.value
	if c.stream == "" {
		c.stream = replication.StreamName(c.source)
	}
	if strings.ContainsAny(c.stream, " .*>\t") {
		return nil, usageErrorf("%s: %q is not a valid stream name", p.stream.name(), c.stream)
	}
	c.subject = p.subject.value
	if err := replication.ValidateSubjectTemplate(c.subject); err != nil {
		return nil, usageErrorf("%s: %v", p.subject.name(), err)
	}
	if c.dupWindow, err = p.dupWindow.duration(); err != nil {
		return nil, err
	}
	if c.maxInFlight, err = p.maxInFlight.positiveInt(); err != nil {
		return nil, err
	}
	if c.publishTimeout, err = p.publishTimeout.duration(); err != nil {
		return nil, err
	}
	if c.shutdownTimeout, err = p.shutdownTimeout.duration(); err != nil {
		return nil, err
	}
	if c.statusInterval, err = p.statusInterval.duration(); err != nil {
		return nil, err
	}
	if c.statusInterval <= 0 || c.statusInterval > 10*time.Second {
		return nil, usageErrorf("%s: %s must be between 1ms and 10s", p.statusInterval.name(), p.statusInterval.value)
	}
	if c.readyMaxLag, err = p.readyMaxLag.duration(); err != nil {
		return nil, err
	}
	switch c.adminAddr = strings.TrimSpace(p.adminAddr.value); c.adminAddr {
	case "off", "":
		c.adminAddr = ""
	default:
		if _, port, err := net.SplitHostPort(c.adminAddr); err != nil || port == "" {
			return nil, usageErrorf("%s: %q is not host:port (or off)", p.adminAddr.name(), p.adminAddr.value)
		}
	}
	if c.logFormat, err = p.logFormat.oneOf("auto", "text", "json"); err != nil {
		return nil, err
	}
	if err := c.logLevel.UnmarshalText([]byte(p.logLevel.value)); err != nil {
		return nil, usageErrorf("%s: %q is not one of debug, info, warn, error", p.logLevel.name(), p.logLevel.value)
	}
	if p.targetNATS != nil {
		if c.natsURL, err = p.targetNATS.required(); err != nil {
			return nil, err
		}
		if c.nats, err = p.loadNATSSecurity(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (p *pairSettings) parseMapping() (cdc.Mapping, error) {
	m := cdc.DefaultMapping()
	table := p.outboxTable.value
	if schema, name, ok := strings.Cut(table, "."); ok {
		m.Schema, m.Table = schema, name
	} else {
		m.Table = table
	}
	if m.Table == "" || m.Schema == "" {
		return m, usageErrorf("%s: %q is not [schema.]table", p.outboxTable.name(), table)
	}
	if p.outboxColumns.value == "" {
		return m, nil
	}
	for _, item := range strings.Split(p.outboxColumns.value, ",") {
		field, col, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return m, usageErrorf("%s: %q is not field=column", p.outboxColumns.name(), item)
		}
		f, err := cdc.ParseField(strings.TrimSpace(field))
		if err != nil {
			return m, usageErrorf("%s: %v", p.outboxColumns.name(), err)
		}
		m.Columns[f] = strings.TrimSpace(col)
	}
	if m.Columns[cdc.FieldPayload] == "" {
		return m, usageErrorf("%s: the payload field must be mapped to a column", p.outboxColumns.name())
	}
	return m, nil
}

func (c *pairConfig) String() string {
	return fmt.Sprintf("%s → %s (slot %s, stream %s)", c.source, c.target, c.slot, c.stream)
}
