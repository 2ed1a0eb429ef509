// Package compose validates the repository's docker-compose.yml with compose-go, the loader
// `docker compose` itself uses: the file is parsed, interpolated, validated against the Compose
// schema, its YAML anchors and merge keys applied, its environment resolved with defaults and
// checked for consistency (what `docker compose config` does), and then held to what this
// project needs of it:
//
//   - every service has an image or a build;
//   - every depends_on target is a service of the file;
//   - every published port is bound to 127.0.0.1 (nothing here has authentication);
//   - no variable is left unresolved: each ${VAR} has a default or is required (${VAR:?...}),
//     and none survives into the loaded model;
//   - the addresses services find each other by (MESH_ADDRESS_*, MESH_URL_*, the Kafka
//     bootstrap, the registry URL, the OTLP endpoint, register-schemas' --url) name a compose
//     service and a port that service listens on inside the network.
//
// The file is loaded with an empty environment, as on a machine where nothing is exported:
// what a newcomer's `docker compose up` sees. Run by tests/unit/test_compose_go.py.
package compose

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeFile is the repository's compose file (from this package's directory), or the file
// MESHKIT_COMPOSE_FILE names: the Python side hands broken copies to show each check can fail.
var composeFile = func() string {
	if path := os.Getenv("MESHKIT_COMPOSE_FILE"); path != "" {
		return path
	}
	return filepath.Join("..", "..", "..", "docker-compose.yml")
}()

// Environment keys whose value is where a service finds another one.
var (
	addressKey = regexp.MustCompile(`^MESH_ADDRESS_[A-Z0-9_]+$`) // host:port
	urlKey     = regexp.MustCompile(`^(MESH_URL_[A-Z0-9_]+|SCHEMA_REGISTRY_URL|OTEL_EXPORTER_OTLP_ENDPOINT)$`)
	// Every mesh service (one with OTEL_SERVICE_NAME) needs these to reach the rest.
	required = []string{"MESH_KAFKA_BOOTSTRAP", "SCHEMA_REGISTRY_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"}
	// A listener in Kafka's KAFKA_LISTENERS: NAME://host:port.
	kafkaListener = regexp.MustCompile(`://[^,:]*:(\d+)`)
)

func load(t *testing.T) *types.Project {
	t.Helper()
	options, err := cli.NewProjectOptions(
		[]string{composeFile},
		cli.WithEnv(nil), // an empty environment: only the file's defaults
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose-go cannot load %s: %v", composeFile, err)
	}
	return project
}

func TestLoadsAndValidates(t *testing.T) {
	project := load(t)
	if project.Name != "meshkit" {
		t.Errorf("project name %q, want meshkit", project.Name)
	}
	if len(project.Services) == 0 {
		t.Fatal("no services")
	}
}

func TestEveryServiceHasAnImageOrABuild(t *testing.T) {
	for name, service := range load(t).Services {
		if service.Image == "" && service.Build == nil {
			t.Errorf("service %s has neither image nor build", name)
		}
		if service.Build != nil && service.Build.Dockerfile == "" {
			t.Errorf("service %s builds without a Dockerfile", name)
		}
	}
}

func TestEveryDependencyExists(t *testing.T) {
	project := load(t)
	for name, service := range project.Services {
		for target, dependency := range service.DependsOn {
			if _, ok := project.Services[target]; !ok {
				t.Errorf("%s depends on %s, which is not a service", name, target)
			}
			if dependency.Condition == "" {
				t.Errorf("%s depends on %s without a condition", name, target)
			}
		}
	}
}

func TestPublishedPortsAreLoopbackOnly(t *testing.T) {
	published := 0
	for name, service := range load(t).Services {
		for _, port := range service.Ports {
			if port.Published == "" {
				continue
			}
			published++
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s on %q, want 127.0.0.1 only", name, port.Published, port.HostIP)
			}
		}
	}
	if published == 0 {
		t.Error("no published ports at all")
	}
}

func TestNoVariableIsLeftUnresolved(t *testing.T) {
	// The raw model, before interpolation: every variable used must have a default or be
	// required, so an unset one never silently becomes "".
	options, err := cli.NewProjectOptions([]string{composeFile}, cli.WithEnv(nil), cli.WithInterpolation(false))
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	model, err := options.LoadModel(context.Background())
	if err != nil {
		t.Fatalf("cannot load the model: %v", err)
	}
	for name, variable := range template.ExtractVariables(model, template.DefaultPattern) {
		if variable.DefaultValue == "" && !variable.Required {
			t.Errorf("${%s} has no default and is not required: unset, it becomes \"\"", name)
		}
	}
	// And the loaded project carries no ${...} left over.
	rendered, err := load(t).MarshalYAML()
	if err != nil {
		t.Fatalf("cannot render the project: %v", err)
	}
	if left := regexp.MustCompile(`\$\{[^}]*\}`).FindAll(rendered, -1); len(left) > 0 {
		t.Errorf("unresolved after loading: %q", left)
	}
}

// listens is each service's ports inside the compose network: the targets of its published
// ports, its own <NAME>_PORT / <NAME>_HTTP_PORT settings, Kafka's listeners, a --port argument.
func listens(project *types.Project) map[string]map[int]bool {
	ports := map[string]map[int]bool{}
	for name, service := range project.Services {
		own := map[int]bool{}
		for _, port := range service.Ports {
			own[int(port.Target)] = true
		}
		for key, value := range service.Environment {
			if value == nil {
				continue
			}
			switch {
			case strings.HasSuffix(key, "_PORT") && !strings.HasPrefix(key, "MESH_"):
				if n, err := strconv.Atoi(*value); err == nil {
					own[n] = true
				}
			case key == "KAFKA_LISTENERS":
				for _, match := range kafkaListener.FindAllStringSubmatch(*value, -1) {
					n, _ := strconv.Atoi(match[1]) // \d+: cannot fail
					own[n] = true
				}
			}
		}
		for i, arg := range service.Command {
			if arg == "--port" && i+1 < len(service.Command) {
				if n, err := strconv.Atoi(service.Command[i+1]); err == nil {
					own[n] = true
				}
			}
		}
		ports[name] = own
	}
	return ports
}

// reach checks that host:port names a compose service listening on that port.
func reach(t *testing.T, ports map[string]map[int]bool, who, what, hostport string) {
	t.Helper()
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Errorf("%s: %s = %q is not host:port", who, what, hostport)
		return
	}
	own, ok := ports[host]
	if !ok {
		t.Errorf("%s: %s names %q, which is not a compose service", who, what, host)
		return
	}
	port, err := strconv.Atoi(portText)
	if err != nil || !own[port] {
		t.Errorf("%s: %s names %s:%s, but %s listens on %v", who, what, host, portText, host, keys(own))
	}
}

func keys(set map[int]bool) []int {
	out := make([]int, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

func TestServicesFindEachOtherByComposeName(t *testing.T) {
	project := load(t)
	ports := listens(project)
	checked := 0
	for name, service := range project.Services {
		env := service.Environment
		if _, mesh := env["OTEL_SERVICE_NAME"]; mesh {
			for _, key := range required {
				if value, ok := env[key]; !ok || value == nil || *value == "" {
					t.Errorf("%s: %s is not set", name, key)
				}
			}
		}
		for key, value := range env {
			if value == nil {
				continue
			}
			switch {
			case addressKey.MatchString(key):
				reach(t, ports, name, key, *value)
				checked++
			case key == "MESH_KAFKA_BOOTSTRAP":
				for _, broker := range strings.Split(*value, ",") {
					reach(t, ports, name, key, broker)
					checked++
				}
			case urlKey.MatchString(key):
				for _, raw := range strings.Split(*value, ",") {
					checkURL(t, ports, name, key, raw)
					checked++
				}
			}
		}
		for i, arg := range service.Command {
			if arg == "--url" && i+1 < len(service.Command) {
				checkURL(t, ports, name, "--url", service.Command[i+1])
				checked++
			}
		}
	}
	if checked < 10 {
		t.Errorf("only %d addresses checked: did the environment keys change?", checked)
	}
}

func checkURL(t *testing.T, ports map[string]map[int]bool, who, what, raw string) {
	t.Helper()
	parsed, err := url.Parse(raw)
	if err != nil || parsed.Host == "" {
		t.Errorf("%s: %s = %q is not a URL", who, what, raw)
		return
	}
	hostport := parsed.Host
	if parsed.Port() == "" {
		hostport = fmt.Sprintf("%s:%s", parsed.Host, map[string]string{"http": "80", "https": "443"}[parsed.Scheme])
	}
	reach(t, ports, who, what, hostport)
}
