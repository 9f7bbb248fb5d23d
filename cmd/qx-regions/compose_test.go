package main

// No Docker engine runs where these tests run, so compose.yaml and the
// Dockerfile are checked here instead: every dependency of every service
// exists, the databases and NATS servers are set up the way the replicator
// needs them, and every qx-regions service's command and environment pass the
// binary's own settings parsing and validation, the code that makes it exit 2
// on a bad configuration, without connecting anywhere.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/qx-platform/regions"
	"go.yaml.in/yaml/v3"
)

const (
	composePath    = "../../compose.yaml"
	dockerfilePath = "../../Dockerfile"
	goModPath      = "../../go.mod"
)

func TestCompose(t *testing.T) {
	for _, p := range checkCompose(readCompose(t, composePath)) {
		t.Error(p)
	}
}

// TestCompose_Catches proves that the checks see the mistakes a broken
// compose.yaml would otherwise only show on a machine with Docker.
func TestCompose_Catches(t *testing.T) {
	const us, setup = "replicate-us-east-1-to-eu-west-1", "setup-us-east-1-to-eu-west-1"
	tests := []struct {
		name   string
		change func(f *composeFile)
		want   string
	}{
		{"missing dependency", func(f *composeFile) {
			f.Services[us].DependsOn["postgres-ap-south-1"] = "service_healthy"
		}, "depends on postgres-ap-south-1, which is not a service"},
		{"unknown condition", func(f *composeFile) {
			f.Services[us].DependsOn["nats-eu-west-1"] = "service_ready"
		}, `condition "service_ready"`},
		{"healthy without healthcheck", func(f *composeFile) {
			f.Services["nats-eu-west-1"].Healthcheck = nil
		}, "waits for nats-eu-west-1 to be healthy, which has no healthcheck"},
		{"undeclared volume", func(f *composeFile) {
			f.Services["nats-us-east-1"].Volumes = []any{"nats-data:/data"}
		}, "volume nats-data is not declared"},
		{"floating image tag", func(f *composeFile) {
			f.Services["nats-us-east-1"].Image = "nats:alpine"
		}, `image "nats:alpine" is not pinned`},
		{"DSN credentials", func(f *composeFile) {
			f.Services["postgres-us-east-1"].Environment["POSTGRES_PASSWORD"] = envValue("other")
		}, "is not postgres-us-east-1's POSTGRES_PASSWORD"},
		{"DSN database", func(f *composeFile) {
			f.Services["postgres-us-east-1"].Environment["POSTGRES_DB"] = envValue("orders")
		}, "creates user qx with database orders"},
		{"pg_isready user", func(f *composeFile) {
			f.Services["postgres-eu-west-1"].Environment["POSTGRES_USER"] = envValue("app")
		}, "healthcheck pg_isready -U qx, but the image creates user app"},
		{"wal_level", func(f *composeFile) {
			f.Services["postgres-us-east-1"].Command = composeCommand{"postgres"}
		}, "wal_level=logical"},
		{"no JetStream", func(f *composeFile) {
			f.Services["nats-eu-west-1"].Command = composeCommand{"-m", "8222"}
		}, "without JetStream"},
		{"no monitoring port", func(f *composeFile) {
			f.Services["nats-eu-west-1"].Command = composeCommand{"-js"}
		}, "probes port 8222"},
		{"wget on scratch", func(f *composeFile) {
			f.Services["nats-eu-west-1"].Image = "nats:2.12"
		}, "has no wget"},
		{"unknown command", func(f *composeFile) {
			f.Services[us].Command = composeCommand{"replicat"}
		}, `"replicat" is not a qx-regions command`},
		{"flags", func(f *composeFile) {
			f.Services[us].Command = composeCommand{"replicate", "--log-level", "debug"}
		}, "through environment variables"},
		{"misspelt variable", func(f *composeFile) {
			env := f.Services[us].Environment
			env["QX_REPLICATION__TARGET_NATS"] = env["QX_REPLICATION__TARGET_NATS_URL"]
			delete(env, "QX_REPLICATION__TARGET_NATS_URL")
		}, "QX_REPLICATION__TARGET_NATS is not a setting of qx-regions replicate"},
		{"missing variable", func(f *composeFile) {
			delete(f.Services[us].Environment, "QX_REPLICATION__TARGET_NATS_URL")
		}, "QX_REPLICATION__TARGET_NATS_URL is required"},
		{"bad value", func(f *composeFile) {
			f.Services[us].Environment["QX_REPLICATION__SHUTDOWN_TIMEOUT"] = envValue("15")
		}, `QX_REPLICATION__SHUTDOWN_TIMEOUT: "15" is not a duration`},
		{"variable from the host", func(f *composeFile) {
			f.Services[us].Environment["QX_NATS__TOKEN"] = nil
		}, "QX_NATS__TOKEN from the host"},
		{"interpolation", func(f *composeFile) {
			f.Services[us].Environment["QX_LOG__LEVEL"] = envValue("${LEVEL:-info}")
		}, "interpolates QX_LOG__LEVEL"},
		{"admin server on loopback", func(f *composeFile) {
			delete(f.Services[us].Environment, "QX_ADMIN__ADDR")
		}, "admin server listens on 127.0.0.1:9180"},
		{"admin port not published", func(f *composeFile) {
			f.Services[us].Environment["QX_ADMIN__ADDR"] = envValue("0.0.0.0:9999")
		}, "publishes container port 9180 but the admin server listens on 9999"},
		{"target is the source's NATS", func(f *composeFile) {
			f.Services[us].Environment["QX_REPLICATION__TARGET_NATS_URL"] = envValue("nats://nats-us-east-1:4222")
		}, "NATS nats-us-east-1, want the target region's nats-eu-west-1"},
		{"source is the other region's Postgres", func(f *composeFile) {
			f.Services[us].Environment["QX_REPLICATION__SOURCE_DSN"] = envValue("postgres://qx:qx@postgres-eu-west-1:5432/app")
		}, "reads Postgres postgres-eu-west-1, want the source region's postgres-us-east-1"},
		{"target is the source", func(f *composeFile) {
			f.Services[us].Environment["QX_REPLICATION__TARGET_REGION"] = envValue("us-east-1")
		}, "is this region"},
		{"setup and replicate disagree", func(f *composeFile) {
			f.Services[setup].Environment["QX_REPLICATION__SLOT"] = envValue("qx_other")
		}, "setup-us-east-1-to-eu-west-1 creates slot qx_other"},
		{"no setup dependency", func(f *composeFile) {
			delete(f.Services[us].DependsOn, setup)
		}, "must wait for setup-us-east-1-to-eu-west-1 to complete successfully"},
		{"no setup", func(f *composeFile) {
			delete(f.Services, setup)
		}, "no setup-us-east-1-to-eu-west-1"},
		{"no replicator", func(f *composeFile) {
			delete(f.Services, us)
		}, "no replicate-us-east-1-to-eu-west-1"},
		{"short grace period", func(f *composeFile) {
			f.Services[us].StopGracePeriod = ""
		}, "stop_grace_period 10s is not above QX_REPLICATION__SHUTDOWN_TIMEOUT 15s"},
		{"healthcheck with a shell", func(f *composeFile) {
			f.Services[us].Healthcheck = &composeHealthcheck{Test: healthTest{shell: true, args: []string{"wget -q -O- localhost:9180/healthz"}}}
		}, "distroless image has no shell"},
		{"service name", func(f *composeFile) {
			f.Services["replicate-us-to-eu"] = f.Services[us]
			delete(f.Services, us)
		}, "replicate-us-to-eu runs us-east-1 → eu-west-1: name it replicate-us-east-1-to-eu-west-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := readCompose(t, composePath)
			tt.change(f)
			got := checkCompose(f)
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("problems:\n  %s\nwant one containing %q", strings.Join(got, "\n  "), tt.want)
			}
		})
	}
}

func TestDockerfile(t *testing.T) {
	for _, p := range checkDockerfile(readRepoFile(t, dockerfilePath), goModVersion(t)) {
		t.Error(p)
	}
}

func TestDockerfile_Catches(t *testing.T) {
	tests := []struct {
		name    string
		replace []string // old, new, ...
		want    string
	}{
		{"root user", []string{"USER 65532:65532", "USER root"}, "runs as root"},
		{"uid 0", []string{"USER 65532:65532", "USER 0:0"}, "runs as root"},
		{"no user on a root base", []string{"USER 65532:65532\n", "", "static-debian12:nonroot", "static-debian12:debug"}, "has no USER"},
		{"floating tag", []string{"golang:1.26-alpine", "golang:alpine"}, "is not pinned"},
		{"go version behind go.mod", []string{"golang:1.26-alpine", "golang:1.25-alpine"}, "go.mod asks for go 1.26"},
		{"cgo", []string{"CGO_ENABLED=0", "CGO_ENABLED=1"}, "CGO_ENABLED=0"},
		{"entrypoint not copied", []string{`ENTRYPOINT ["/usr/local/bin/qx-regions"]`, `ENTRYPOINT ["/qx-regions"]`}, "entrypoint /qx-regions is not copied"},
		{"shell-form entrypoint", []string{`ENTRYPOINT ["/usr/local/bin/qx-regions"]`, `ENTRYPOINT /usr/local/bin/qx-regions`}, "use the exec form"},
		{"single stage", []string{"FROM gcr.io/distroless/static-debian12:nonroot\n", ""}, "not multi-stage"},
	}
	text := readRepoFile(t, dockerfilePath)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed := text
			for i := 0; i+1 < len(tt.replace); i += 2 {
				if !strings.Contains(changed, tt.replace[i]) {
					t.Fatalf("the Dockerfile has no %q to change", tt.replace[i])
				}
				changed = strings.Replace(changed, tt.replace[i], tt.replace[i+1], 1)
			}
			got := checkDockerfile(changed, goModVersion(t))
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("problems:\n  %s\nwant one containing %q", strings.Join(got, "\n  "), tt.want)
			}
		})
	}
}

func envValue(s string) *string { return &s }

func readRepoFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// goModVersion is go.mod's language version, major.minor.
func goModVersion(tb testing.TB) string {
	tb.Helper()
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(readRepoFile(tb, goModPath))
	if m == nil {
		tb.Fatal("go.mod has no go directive")
	}
	return m[1]
}

// The subset of the Compose file format that the checks read.

type composeFile struct {
	Services map[string]*composeService `yaml:"services"`
	Volumes  map[string]any             `yaml:"volumes"`
}

type composeService struct {
	Image           string              `yaml:"image"`
	Build           any                 `yaml:"build"`
	Entrypoint      composeCommand      `yaml:"entrypoint"`
	Command         composeCommand      `yaml:"command"`
	Environment     composeEnv          `yaml:"environment"`
	EnvFile         any                 `yaml:"env_file"`
	DependsOn       composeDependsOn    `yaml:"depends_on"`
	Healthcheck     *composeHealthcheck `yaml:"healthcheck"`
	Ports           []any               `yaml:"ports"`
	Volumes         []any               `yaml:"volumes"`
	StopGracePeriod string              `yaml:"stop_grace_period"`
}

// composeCommand is a command or entrypoint, in list or string form (the
// string form split on spaces, which is enough for these files).
type composeCommand []string

func (c *composeCommand) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*c = strings.Fields(n.Value)
		return nil
	}
	var l []string
	err := n.Decode(&l)
	*c = l
	return err
}

// composeEnv is environment in map or KEY=VALUE list form; a nil value is
// taken from the host's environment by Compose.
type composeEnv map[string]*string

func (e *composeEnv) UnmarshalYAML(n *yaml.Node) error {
	*e = composeEnv{}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			if v.Tag == "!!null" {
				(*e)[k] = nil
			} else {
				(*e)[k] = envValue(v.Value)
			}
		}
	case yaml.SequenceNode:
		for _, item := range n.Content {
			if k, v, ok := strings.Cut(item.Value, "="); ok {
				(*e)[k] = envValue(v)
			} else {
				(*e)[k] = nil
			}
		}
	default:
		return fmt.Errorf("line %d: environment is neither a map nor a list", n.Line)
	}
	return nil
}

// composeDependsOn maps each dependency to its condition.
type composeDependsOn map[string]string

func (d *composeDependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = composeDependsOn{}
	if n.Kind == yaml.SequenceNode {
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		for _, name := range names {
			(*d)[name] = "service_started"
		}
		return nil
	}
	var long map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&long); err != nil {
		return err
	}
	for name, dep := range long {
		(*d)[name] = cmp.Or(dep.Condition, "service_started")
	}
	return nil
}

type composeHealthcheck struct {
	Test    healthTest `yaml:"test"`
	Disable bool       `yaml:"disable"`
}

// healthTest is a healthcheck's test: CMD args, or a shell command line.
type healthTest struct {
	none, shell bool
	args        []string
}

func (h *healthTest) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*h = healthTest{shell: true, args: []string{n.Value}}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	if len(l) == 0 {
		return fmt.Errorf("line %d: empty healthcheck test", n.Line)
	}
	switch l[0] {
	case "NONE":
		*h = healthTest{none: true}
	case "CMD":
		*h = healthTest{args: l[1:]}
	case "CMD-SHELL":
		*h = healthTest{shell: true, args: l[1:]}
	default:
		return fmt.Errorf("line %d: healthcheck test starts with %q, not CMD, CMD-SHELL or NONE", n.Line, l[0])
	}
	return nil
}

func (s *composeService) healthy() bool {
	return s.Healthcheck != nil && !s.Healthcheck.Disable && !s.Healthcheck.Test.none && len(s.Healthcheck.Test.args) > 0
}

func readCompose(tb testing.TB, path string) *composeFile {
	tb.Helper()
	var f composeFile
	if err := yaml.Unmarshal([]byte(readRepoFile(tb, path)), &f); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	if len(f.Services) == 0 {
		tb.Fatalf("%s has no services", path)
	}
	return &f
}

// imageName is an image reference's repository without registry, path, tag
// or digest: "postgres" for postgres:16-alpine.
func imageName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	name, _, _ := strings.Cut(ref, ":")
	return name
}

// imageTag is the tag of an image reference, "" when it has none.
func imageTag(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	_, tag, _ := strings.Cut(ref, ":")
	return tag
}

// imagePinned reports whether an image reference names a version: a digest, or a
// tag other than latest with a version number in the reference.
func imagePinned(ref string) bool {
	if strings.Contains(ref, "@sha256:") {
		return true
	}
	tag := imageTag(ref)
	return tag != "" && tag != "latest" && strings.ContainsAny(ref[strings.LastIndex(ref, "/")+1:], "0123456789")
}

func (s *composeService) isQX() bool { return s.Build != nil || imageName(s.Image) == "qx-regions" }

// pairService is a setup or replicate service whose environment loaded.
type pairService struct {
	name, cmd string
	svc       *composeService
	cfg       *pairConfig
}

// checkCompose returns every problem of a compose file, in a stable order.
func checkCompose(f *composeFile) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	regionsSeen := map[string]bool{}
	var pairs []pairService
	for _, name := range sortedNames(f.Services) {
		s := f.Services[name]
		if s == nil {
			add("%s: empty service", name)
			continue
		}
		for _, dep := range sortedNames(s.DependsOn) {
			cond := s.DependsOn[dep]
			target, ok := f.Services[dep]
			switch {
			case !ok:
				add("%s depends on %s, which is not a service", name, dep)
			case !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, cond):
				add("%s depends on %s with condition %q", name, dep, cond)
			case cond == "service_healthy" && !target.healthy():
				add("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, v := range s.Volumes {
			if short, ok := v.(string); ok {
				src, _, bind := strings.Cut(short, ":")
				if bind && src != "" && !strings.ContainsAny(src[:1], "./~$") {
					if _, declared := f.Volumes[src]; !declared {
						add("%s: volume %s is not declared under volumes", name, src)
					}
				}
			}
		}
		if !s.isQX() && !imagePinned(s.Image) {
			add("%s: image %q is not pinned to a version", name, s.Image)
		}
		switch {
		case s.isQX():
			if p, ok := checkQXService(name, s, add); ok {
				pairs = append(pairs, p)
			}
		case imageName(s.Image) == "postgres":
			checkRegionName(name, "postgres", regionsSeen, add)
			checkPostgres(name, s, add)
		case imageName(s.Image) == "nats":
			checkRegionName(name, "nats", regionsSeen, add)
			checkNATS(name, s, add)
		}
	}
	for _, r := range sortedNames(regionsSeen) {
		for _, kind := range []string{"postgres", "nats"} {
			if _, ok := f.Services[kind+"-"+r]; !ok {
				add("region %s has no %s-%s service", r, kind, r)
			}
		}
	}
	checkPairs(f, regionsSeen, pairs, add)
	return problems
}

// checkRegionName checks that a database or NATS service is named
// <kind>-<region>, and notes the region.
func checkRegionName(name, kind string, seen map[string]bool, add func(string, ...any)) {
	region, ok := strings.CutPrefix(name, kind+"-")
	if err := regions.ValidateRegionName(region); !ok || err != nil {
		add("%s: name %s services %s-<region>, with a valid region name", name, kind, kind)
		return
	}
	seen[region] = true
}

func checkPostgres(name string, s *composeService, add func(string, ...any)) {
	args := append(slices.Clone(s.Entrypoint), s.Command...)
	logical := slices.Contains(args, "--wal_level=logical") || slices.Contains(args, "--wal-level=logical")
	for i := 0; i+1 < len(args); i++ {
		logical = logical || args[i] == "-c" && args[i+1] == "wal_level=logical"
	}
	if !logical {
		add("%s: Postgres must run with -c wal_level=logical for logical replication", name)
	}
	if !s.healthy() {
		add("%s: Postgres has no healthcheck", name)
		return
	}
	// pg_isready must ask for the account the image creates, or it
	// reports a Postgres that is up as ready too early or never.
	if t := s.Healthcheck.Test; !t.shell && len(t.args) > 0 && t.args[0] == "pg_isready" {
		user, _, db := postgresAccount(s)
		for i := 1; i+1 < len(t.args); i++ {
			if (t.args[i] == "-U" && t.args[i+1] != user) || (t.args[i] == "-d" && t.args[i+1] != db) {
				add("%s: healthcheck pg_isready %s %s, but the image creates user %s with database %s", name, t.args[i], t.args[i+1], user, db)
			}
		}
	}
}

var healthProbePort = regexp.MustCompile(`https?://[^/:]+:(\d+)/`)

func checkNATS(name string, s *composeService, add func(string, ...any)) {
	args := append(slices.Clone(s.Entrypoint), s.Command...)
	if !slices.Contains(args, "-js") && !slices.Contains(args, "--jetstream") {
		add("%s: NATS runs without JetStream (-js)", name)
	}
	if !s.healthy() {
		add("%s: NATS has no healthcheck", name)
		return
	}
	test := s.Healthcheck.Test
	line := strings.Join(test.args, " ")
	if m := healthProbePort.FindStringSubmatch(line); m != nil {
		monitored := false
		for i := 0; i+1 < len(args); i++ {
			monitored = monitored || (args[i] == "-m" || args[i] == "--http_port") && args[i+1] == m[1]
		}
		if !monitored {
			add("%s: the healthcheck probes port %s, but NATS does not serve monitoring there (-m %s)", name, m[1], m[1])
		}
	}
	// The default nats image is built FROM scratch: nothing but nats-server.
	needsTools := test.shell || !strings.Contains(test.args[0], "nats-server")
	if needsTools && !strings.Contains(imageTag(s.Image), "alpine") {
		tool := "a shell"
		if !test.shell {
			tool = test.args[0]
		}
		add("%s: image %s has no %s for the healthcheck; use its -alpine variant", name, s.Image, tool)
	}
}

// checkQXService checks a service that runs the qx-regions image: its
// command is a subcommand, and its environment passes that subcommand's own
// settings validation.
func checkQXService(name string, s *composeService, add func(string, ...any)) (pairService, bool) {
	if len(s.Entrypoint) > 0 {
		add("%s: keep the image's entrypoint (the binary) and name the subcommand in command", name)
		return pairService{}, false
	}
	if len(s.Command) == 0 {
		add("%s: name the subcommand in command", name)
		return pairService{}, false
	}
	cmd := s.Command[0]
	// The binary's own dispatch decides what a command is; --help stops
	// every subcommand before it reads settings or connects.
	if err := run(context.Background(), []string{cmd, "--help"}, func(string) string { return "" }, io.Discard, io.Discard); err != nil && !errors.Is(err, flag.ErrHelp) {
		add("%s: %q is not a qx-regions command: %v", name, cmd, err)
		return pairService{}, false
	}
	var withNATS bool
	switch cmd {
	case "setup":
	case "replicate", "status":
		withNATS = true
	default:
		add("%s: the stack runs setup, replicate or status, whose settings this test validates; not %s", name, cmd)
		return pairService{}, false
	}
	if len(s.Command) > 1 {
		add("%s: configure qx-regions %s through environment variables, not %v", name, cmd, s.Command[1:])
	}
	if s.EnvFile != nil {
		add("%s: env_file hides settings from this test; use environment", name)
	}
	if s.Healthcheck != nil && s.healthy() && (s.Healthcheck.Test.shell || !strings.HasSuffix(s.Healthcheck.Test.args[0], "qx-regions")) {
		add("%s: the distroless image has no shell and no tool but qx-regions for a healthcheck", name)
	}

	env := map[string]string{}
	for _, k := range sortedNames(s.Environment) {
		switch v := s.Environment[k]; {
		case v == nil:
			add("%s: takes %s from the host's environment, which this test cannot check", name, k)
		case strings.Contains(*v, "$"):
			add("%s: interpolates %s (%q), which this test cannot check; write the value", name, k, *v)
		default:
			env[k] = *v
		}
	}
	read := map[string]bool{}
	getenv := func(k string) string {
		read[k] = true
		return env[k]
	}
	st := newSettings(cmd, getenv, io.Discard)
	p := addPairSettings(st, withNATS)
	cfg, err := p.load()
	for _, k := range sortedNames(env) {
		if strings.HasPrefix(k, "QX_") && !read[k] {
			add("%s: %s is not a setting of qx-regions %s (see qx-regions %s --help)", name, k, cmd, cmd)
		}
	}
	if err != nil {
		add("%s: qx-regions %s would exit 2: %v", name, cmd, err)
		return pairService{}, false
	}
	if want := fmt.Sprintf("%s-%s-to-%s", cmd, cfg.source, cfg.target); cmd != "status" && name != want {
		add("%s runs %s → %s: name it %s", name, cfg.source, cfg.target, want)
		return pairService{}, false
	}
	return pairService{name: name, cmd: cmd, svc: s, cfg: cfg}, true
}

// checkPairs checks that every direction between the regions has a setup and
// a replicator, wired to the right database and NATS server.
func checkPairs(f *composeFile, regionsSeen map[string]bool, pairs []pairService, add func(string, ...any)) {
	setups := map[string]pairService{}
	for _, p := range pairs {
		if p.cmd == "setup" {
			setups[p.name] = p
		}
	}
	for _, p := range pairs {
		c := p.cfg
		if !regionsSeen[c.source] || !regionsSeen[c.target] {
			add("%s: replicates %s → %s, but the stack's regions are %v", p.name, c.source, c.target, sortedNames(regionsSeen))
			continue
		}
		checkSourceDSN(f, p, add)
		if p.cmd != "replicate" {
			continue
		}
		checkTargetNATS(p, add)
		setupName := fmt.Sprintf("setup-%s-to-%s", c.source, c.target)
		if p.svc.DependsOn[setupName] != "service_completed_successfully" {
			add("%s must wait for %s to complete successfully (depends_on condition service_completed_successfully)", p.name, setupName)
		}
		if setup, ok := setups[setupName]; ok {
			sc := setup.cfg
			if sc.slot != c.slot || sc.publication != c.publication || sc.mapping.QualifiedTable() != c.mapping.QualifiedTable() || sc.sourceDSN != c.sourceDSN {
				add("%s reads slot %s, publication %s, outbox %s from %s, but %s creates slot %s, publication %s, outbox %s in %s",
					p.name, c.slot, c.publication, c.mapping.QualifiedTable(), redactDSN(c.sourceDSN),
					setupName, sc.slot, sc.publication, sc.mapping.QualifiedTable(), redactDSN(sc.sourceDSN))
			}
		}
		grace := 10 * time.Second // Docker's default
		if p.svc.StopGracePeriod != "" {
			var err error
			if grace, err = time.ParseDuration(p.svc.StopGracePeriod); err != nil {
				add("%s: stop_grace_period %q: %v", p.name, p.svc.StopGracePeriod, err)
			}
		}
		if grace <= c.shutdownTimeout {
			add("%s: stop_grace_period %s is not above QX_REPLICATION__SHUTDOWN_TIMEOUT %s: Docker would kill the replicator while it drains",
				p.name, grace, c.shutdownTimeout)
		}
		checkAdmin(p, add)
	}
	for _, src := range sortedNames(regionsSeen) {
		for _, dst := range sortedNames(regionsSeen) {
			if src == dst {
				continue
			}
			for _, cmd := range []string{"setup", "replicate"} {
				name := fmt.Sprintf("%s-%s-to-%s", cmd, src, dst)
				if _, ok := f.Services[name]; !ok {
					add("no %s: every direction needs a %s service", name, cmd)
				}
			}
		}
	}
}

// checkSourceDSN checks that the pair reads its own region's Postgres, and
// waits for it to be healthy.
func checkSourceDSN(f *composeFile, p pairService, add func(string, ...any)) {
	want := "postgres-" + p.cfg.source
	pc, err := pgconn.ParseConfig(p.cfg.sourceDSN)
	if err != nil {
		add("%s: QX_REPLICATION__SOURCE_DSN: %v", p.name, err)
		return
	}
	if pc.Host != want {
		add("%s reads Postgres %s, want the source region's %s", p.name, pc.Host, want)
		return
	}
	if pc.Port != 5432 {
		add("%s: Postgres %s listens on 5432 in the stack, not %d", p.name, want, pc.Port)
	}
	if p.svc.DependsOn[want] != "service_healthy" {
		add("%s must wait for %s to be healthy (depends_on condition service_healthy)", p.name, want)
	}
	// The credentials the postgres image creates at its first start.
	if pg := f.Services[want]; pg != nil {
		user, password, db := postgresAccount(pg)
		if pc.User != user || pc.Database != db {
			add("%s connects as %s to database %s, but %s creates user %s with database %s", p.name, pc.User, pc.Database, want, user, db)
		}
		if pc.Password != password {
			add("%s: the password in QX_REPLICATION__SOURCE_DSN is not %s's POSTGRES_PASSWORD", p.name, want)
		}
	}
}

// postgresAccount is the user, password and database that the official
// postgres image creates from its environment.
func postgresAccount(s *composeService) (user, password, db string) {
	get := func(k, def string) string {
		if v := s.Environment[k]; v != nil && *v != "" {
			return *v
		}
		return def
	}
	user = get("POSTGRES_USER", "postgres")
	return user, get("POSTGRES_PASSWORD", ""), get("POSTGRES_DB", user)
}

// checkTargetNATS checks that the replicator publishes to the target
// region's NATS, and waits for it to be healthy.
func checkTargetNATS(p pairService, add func(string, ...any)) {
	want := "nats-" + p.cfg.target
	for _, raw := range strings.Split(p.cfg.natsURL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Hostname() == "" {
			add("%s: QX_REPLICATION__TARGET_NATS_URL %q is not nats://host:port", p.name, raw)
			continue
		}
		if u.Hostname() != want {
			add("%s publishes to NATS %s, want the target region's %s", p.name, u.Hostname(), want)
			continue
		}
		if port := u.Port(); port != "" && port != "4222" {
			add("%s: NATS %s listens on 4222 in the stack, not %s", p.name, want, port)
		}
	}
	if p.svc.DependsOn[want] != "service_healthy" {
		add("%s must wait for %s to be healthy (depends_on condition service_healthy)", p.name, want)
	}
}

// checkAdmin checks that the admin server can be reached from outside the
// container, on the port the service publishes.
func checkAdmin(p pairService, add func(string, ...any)) {
	if p.cfg.adminAddr == "" {
		return
	}
	host, port, err := net.SplitHostPort(p.cfg.adminAddr)
	if err != nil {
		add("%s: QX_ADMIN__ADDR %q: %v", p.name, p.cfg.adminAddr, err)
		return
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		add("%s: the admin server listens on %s, which nothing outside the container reaches; set QX_ADMIN__ADDR=0.0.0.0:%s",
			p.name, p.cfg.adminAddr, port)
	}
	for _, pub := range p.svc.Ports {
		spec, ok := pub.(string)
		if !ok {
			continue
		}
		spec, _, _ = strings.Cut(spec, "/")
		container := spec[strings.LastIndex(spec, ":")+1:]
		if container != port {
			add("%s publishes container port %s but the admin server listens on %s", p.name, container, port)
		}
	}
}

// Dockerfile checks.

type dockerStage struct {
	from, name string
	lines      []dockerLine
}

type dockerLine struct{ instr, rest string }

// parseDockerfile splits a Dockerfile into stages of instructions, with
// continuation lines joined and comments dropped.
func parseDockerfile(text string) []dockerStage {
	var stages []dockerStage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		instr, rest, _ := strings.Cut(line, " ")
		instr, rest = strings.ToUpper(instr), strings.TrimSpace(rest)
		if instr == "FROM" {
			f := strings.Fields(rest)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			st := dockerStage{}
			if len(f) > 0 {
				st.from = f[0]
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			return
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, dockerLine{instr, rest})
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(l, " \t"), `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	return stages
}

// checkDockerfile checks the image: multi-stage, imagePinned bases, a static
// binary built with the module's Go version, and a non-root final stage.
func checkDockerfile(text, goVer string) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	stages := parseDockerfile(text)
	if len(stages) < 2 {
		return []string{"the Dockerfile is not multi-stage: build in one stage, run in a small one"}
	}
	names := map[string]bool{}
	var built bool
	for _, st := range stages[:len(stages)-1] {
		for _, l := range st.lines {
			if l.instr == "RUN" && strings.Contains(l.rest, "go build") && strings.Contains(l.rest, "./cmd/qx-regions") {
				built = true
				if !strings.Contains(l.rest, "CGO_ENABLED=0") {
					add("the go build needs CGO_ENABLED=0: the final image has no libc")
				}
				if !strings.Contains(l.rest, "-X main.version=") {
					add("the go build does not stamp main.version")
				}
			}
		}
	}
	if !built {
		add("no build stage runs go build ./cmd/qx-regions")
	}
	for _, st := range stages {
		switch {
		case names[st.from], st.from == "scratch":
		case !imagePinned(st.from):
			add("FROM %s: the base image is not pinned to a version", st.from)
		case imageName(st.from) == "golang":
			tag := imageTag(st.from)
			if v, ok := strings.CutPrefix(tag, goVer); !ok || v != "" && !strings.HasPrefix(v, "-") && !strings.HasPrefix(v, ".") {
				add("FROM %s: go.mod asks for go %s", st.from, goVer)
			}
		}
		if st.name != "" {
			names[st.name] = true
		}
	}

	final := stages[len(stages)-1]
	user := ""
	var copied []string
	var entrypoint []string
	for _, l := range final.lines {
		switch l.instr {
		case "USER":
			user = l.rest
		case "COPY":
			if f := strings.Fields(l.rest); strings.HasPrefix(l.rest, "--from=") && len(f) > 0 {
				copied = append(copied, f[len(f)-1])
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(l.rest), &entrypoint); err != nil {
				add("ENTRYPOINT %s: use the exec form, so that the binary gets SIGTERM", l.rest)
			}
		}
	}
	tag := imageTag(final.from)
	switch u, _, _ := strings.Cut(user, ":"); {
	case user == "" && tag != "nonroot" && !strings.HasSuffix(tag, "-nonroot"):
		add("the final stage (FROM %s) has no USER and its base runs as root", final.from)
	case u == "root" || u == "0":
		add("the final stage runs as root (USER %s)", user)
	}
	if len(entrypoint) > 0 && !slices.Contains(copied, entrypoint[0]) {
		add("the entrypoint %s is not copied into the final stage (COPY --from=... %v)", entrypoint[0], copied)
	}
	return problems
}

func sortedNames[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
