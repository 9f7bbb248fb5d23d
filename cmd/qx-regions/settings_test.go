package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// loadPair loads the replicate settings from env and args, nothing else set.
func loadPair(tb testing.TB, env map[string]string, args ...string) (*pairConfig, error) {
	tb.Helper()
	base := map[string]string{
		"QX_REGION__NAME":                 "us-east-1",
		"QX_REGION__URLS":                 "us-east-1=https://us.example.com,eu-west-1=https://eu.example.com",
		"QX_REPLICATION__SOURCE_DSN":      "postgres://qx:pw@db:5432/app",
		"QX_REPLICATION__TARGET_REGION":   "eu-west-1",
		"QX_REPLICATION__TARGET_NATS_URL": "nats://nats:4222",
	}
	for k, v := range env {
		base[k] = v
	}
	s := newSettings("replicate", func(k string) string { return base[k] }, &bytes.Buffer{})
	p := addPairSettings(s, true)
	if err := s.parse(args); err != nil {
		return nil, err
	}
	return p.load()
}

func TestPairSettings_Defaults(t *testing.T) {
	c, err := loadPair(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	// What README's configuration table promises, passed to the library
	// explicitly (its own zero-value defaults differ: ShutdownTimeout 10s).
	rc := replicationConfig(c, nil, nil)
	for _, tc := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ShutdownTimeout", rc.ShutdownTimeout, 15 * time.Second},
		{"PublishTimeout", rc.PublishTimeout, 10 * time.Second},
		{"DuplicateWindow", rc.DuplicateWindow, 2 * time.Minute},
		{"statusInterval", c.statusInterval, time.Second},
		{"readyMaxLag", c.readyMaxLag, time.Minute},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if rc.MaxInFlight != 8192 {
		t.Errorf("MaxInFlight: got %d, want 8192", rc.MaxInFlight)
	}
}

func TestPairSettings_Durations(t *testing.T) {
	for _, env := range []string{
		"QX_REPLICATION__DUPLICATE_WINDOW", "QX_REPLICATION__PUBLISH_TIMEOUT", "QX_REPLICATION__SHUTDOWN_TIMEOUT",
		"QX_REPLICATION__STATUS_INTERVAL", "QX_REPLICATION__READY_MAX_LAG",
	} {
		for _, v := range []string{"0s", "0", "-1s", "soon"} {
			t.Run(env+"="+v, func(t *testing.T) {
				_, err := loadPair(t, map[string]string{env: v})
				var ue *usageError
				if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), env+": ") {
					t.Fatalf("got %v, want a usage error naming %s", err, env)
				}
			})
		}
		t.Run(env+"=3s", func(t *testing.T) {
			if _, err := loadPair(t, map[string]string{env: "3s"}); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("flag", func(t *testing.T) {
		_, err := loadPair(t, nil, "--replication-shutdown-timeout", "0s")
		if err == nil || !strings.HasPrefix(err.Error(), "--replication-shutdown-timeout: ") {
			t.Fatalf("got %v, want an error naming the flag", err)
		}
	})
	t.Run("value passed on", func(t *testing.T) {
		c, err := loadPair(t, map[string]string{"QX_REPLICATION__SHUTDOWN_TIMEOUT": "45s"})
		if err != nil {
			t.Fatal(err)
		}
		if got := replicationConfig(c, nil, nil).ShutdownTimeout; got != 45*time.Second {
			t.Errorf("ShutdownTimeout: got %v, want 45s", got)
		}
	})
}

func TestPairSettings_DSN(t *testing.T) {
	const pw = "s3cret/Pw"
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"env", map[string]string{"QX_REPLICATION__SOURCE_DSN": "postgres://qx:" + pw + "@db/app"}, nil, "QX_REPLICATION__SOURCE_DSN: "},
		{"flag", nil, []string{"--replication-source-dsn", "postgres://qx:pw@db:x/app"}, "--replication-source-dsn: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadPair(t, tc.env, tc.args...)
			var ue *usageError
			if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v, want a usage error starting %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "Pw") {
				t.Errorf("got %q, which shows the password", err)
			}
		})
	}
}

func TestUsage_FlagDefaults(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"demo", []string{"--events int (default 2000)\n", "--duration duration (default 5s)\n", "QX_LOG__LEVEL, --log-level (default warn)"}},
		{"status", []string{"  --json\n        print JSON"}},
		{"setup", []string{"  --print-sql\n", "  --force-new-slot\n"}},
		{"replicate", []string{"QX_REPLICATION__SHUTDOWN_TIMEOUT, --replication-shutdown-timeout (default 15s)"}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{tc.cmd, "--help"}, func(string) string { return "" }, &stdout, &stderr)
			if code := exitCode(err, &stderr); code != 0 {
				t.Fatalf("exit %d: %v", code, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("%s --help lacks %q:\n%s", tc.cmd, w, stderr.String())
				}
			}
		})
	}
}
