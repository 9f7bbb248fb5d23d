package main

import (
	"fmt"
	"log/slog"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// natsSecurity holds how to authenticate to NATS; secrets never leave it.
type natsSecurity struct {
	credsFile, nkeyFile       string
	user, password, token     string
	caFile, certFile, keyFile string
}

func (p *pairSettings) loadNATSSecurity() (natsSecurity, error) {
	s := natsSecurity{
		credsFile: p.natsCreds.value, nkeyFile: p.natsNKey.value,
		user: p.natsUser.value, password: p.natsPassword.value, token: p.natsToken.value,
		caFile: p.natsCA.value, certFile: p.natsCert.value, keyFile: p.natsKey.value,
	}
	for _, f := range []*setting{p.natsCreds, p.natsNKey, p.natsCA, p.natsCert, p.natsKey} {
		if f.value == "" {
			continue
		}
		if _, err := os.Stat(f.value); err != nil {
			return s, usageErrorf("%s: cannot read %s", f.name(), f.value)
		}
	}
	if (s.certFile == "") != (s.keyFile == "") {
		return s, usageErrorf("%s and %s go together", p.natsCert.name(), p.natsKey.name())
	}
	if s.password != "" && s.user == "" {
		return s, usageErrorf("%s is set without %s", p.natsPassword.name(), p.natsUser.name())
	}
	n := 0
	for _, v := range []string{s.credsFile, s.nkeyFile, s.user, s.token} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		return s, usageErrorf("choose one NATS authentication: %s, %s, %s or %s",
			p.natsCreds.name(), p.natsNKey.name(), p.natsUser.name(), p.natsToken.name())
	}
	return s, nil
}

// connectNATS connects to the target with reconnects forever: an
// unreachable target makes the replicator wait, never give up.
func connectNATS(url, name string, sec natsSecurity, log *slog.Logger) (*nats.Conn, error) {
	return dialNATS(url, name, sec, log,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true))
}

// connectNATSOnce connects for a one-off command (status): no retries.
func connectNATSOnce(c *pairConfig, log *slog.Logger) (*nats.Conn, error) {
	return dialNATS(c.natsURL, "qx-regions status", c.nats, log, nats.NoReconnect())
}

func dialNATS(url, name string, sec natsSecurity, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it
				log.Warn("target nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("target nats reconnected", "server", c.ConnectedUrlRedacted())
		}),
	}
	opts = append(opts, extra...)
	switch {
	case sec.credsFile != "":
		opts = append(opts, nats.UserCredentials(sec.credsFile))
	case sec.nkeyFile != "":
		o, err := nats.NkeyOptionFromSeed(sec.nkeyFile)
		if err != nil {
			return nil, fmt.Errorf("read nkey seed file %s: %w", sec.nkeyFile, err)
		}
		opts = append(opts, o)
	case sec.user != "":
		opts = append(opts, nats.UserInfo(sec.user, sec.password))
	case sec.token != "":
		opts = append(opts, nats.Token(sec.token))
	}
	if sec.caFile != "" {
		opts = append(opts, nats.RootCAs(sec.caFile))
	}
	if sec.certFile != "" {
		opts = append(opts, nats.ClientCert(sec.certFile, sec.keyFile))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect target nats %s: %w", redactNATS(url), err)
	}
	return nc, nil
}

// redactNATS hides a password or token embedded in NATS URLs
// (nats://user:pass@host, nats://token@host), comma-separated.
func redactNATS(urls string) string {
	parts := strings.Split(urls, ",")
	for i, raw := range parts {
		u, err := neturl.Parse(strings.TrimSpace(raw))
		if err != nil || u.User == nil {
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = neturl.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = neturl.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
