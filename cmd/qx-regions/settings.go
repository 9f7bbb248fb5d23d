package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// usageError is a bad or missing setting: exit status 2, one line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// setting is one configuration value: an environment variable and a flag
// of the same meaning (the flag wins).
type setting struct {
	env, flag, def, help string
	secret               bool
	value                string
	fromFlag             bool
}

// name is how errors refer to the setting: by where its value came from.
func (s *setting) name() string {
	if s.fromFlag {
		return "--" + s.flag
	}
	return s.env
}

// settings is the set of settings of one subcommand.
type settings struct {
	fs     *flag.FlagSet
	list   []*setting
	getenv func(string) string
}

func newSettings(cmd string, getenv func(string) string, stderr io.Writer) *settings {
	fs := flag.NewFlagSet("qx-regions "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	s := &settings{fs: fs, getenv: getenv}
	fs.Usage = func() { s.usage(stderr, cmd) }
	return s
}

// flagName derives the flag from the variable: QX_REPLICATION__SOURCE_DSN
// is --replication-source-dsn.
func flagName(env string) string {
	n := strings.TrimPrefix(env, "QX_")
	n = strings.ReplaceAll(n, "__", "-")
	return strings.ToLower(strings.ReplaceAll(n, "_", "-"))
}

func (s *settings) add(env, def, help string) *setting {
	st := &setting{env: env, flag: flagName(env), def: def, help: help}
	st.value = def
	if v, ok := lookupEnv(s.getenv, env); ok {
		st.value = v
	}
	s.fs.Func(st.flag, help, func(v string) error {
		st.value, st.fromFlag = v, true
		return nil
	})
	s.list = append(s.list, st)
	return st
}

func (s *settings) secret(env, help string) *setting {
	st := s.add(env, "", help)
	st.secret = true
	return st
}

func lookupEnv(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

// parse reads the flags; the environment was read by add.
func (s *settings) parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	return nil
}

func (s *settings) usage(w io.Writer, cmd string) {
	fmt.Fprintf(w, "Usage: qx-regions %s [flags]\n\n%s\n\nSettings (environment variable, flag, default):\n", cmd, commandHelp[cmd])
	var other []string
	s.fs.VisitAll(func(f *flag.Flag) {
		for _, st := range s.list {
			if st.flag == f.Name {
				return
			}
		}
		other = append(other, flagUsage(f))
	})
	for _, st := range s.list {
		def := st.def
		if def == "" {
			def = "(none)"
		}
		fmt.Fprintf(w, "  %s, --%s (default %s)\n        %s\n", st.env, st.flag, def, st.help)
	}
	if len(other) > 0 {
		sort.Strings(other)
		fmt.Fprintf(w, "\nFlags:\n%s", strings.Join(other, ""))
	}
}

// flagUsage describes a flag that is not a setting: its value's type and
// its default (a switch, off by default, shows neither).
func flagUsage(f *flag.Flag) string {
	name, usage := flag.UnquoteUsage(f)
	head := "  --" + f.Name
	if name != "" {
		head += " " + name
		if f.DefValue != "" {
			head += " (default " + f.DefValue + ")"
		}
	}
	return head + "\n        " + usage + "\n"
}

func (st *setting) required() (string, error) {
	if strings.TrimSpace(st.value) == "" {
		return "", usageErrorf("%s is required (%s)", st.name(), st.help)
	}
	return st.value, nil
}

// duration reads a positive duration. Zero is refused rather than passed
// on: the libraries read a zero as "use my default", which is not the
// default documented here.
func (st *setting) duration() (time.Duration, error) {
	d, err := time.ParseDuration(st.value)
	if err != nil {
		return 0, usageErrorf("%s: %q is not a duration (e.g. 10s, 2m)", st.name(), st.value)
	}
	if d <= 0 {
		return 0, usageErrorf("%s: %q must be a positive duration (e.g. 10s, 2m)", st.name(), st.value)
	}
	return d, nil
}

func (st *setting) positiveInt() (int, error) {
	n, err := strconv.Atoi(st.value)
	if err != nil || n <= 0 {
		return 0, usageErrorf("%s: %q is not a positive whole number", st.name(), st.value)
	}
	return n, nil
}

func (st *setting) oneOf(options ...string) (string, error) {
	for _, o := range options {
		if st.value == o {
			return o, nil
		}
	}
	return "", usageErrorf("%s: %q is not one of %s", st.name(), st.value, strings.Join(options, ", "))
}
