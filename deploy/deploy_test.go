// Package deploy_test checks the deployment artifacts against what the
// gateway does, so that they cannot drift apart silently.
package deploy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/speechgate/speechgate/internal/config"
	"github.com/speechgate/speechgate/server"
)

// doc is a YAML document read generically.
type doc map[string]any

func (d doc) get(path string) any {
	var v any = map[string]any(d)
	for _, key := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[key]
		case []any:
			i := 0
			for _, c := range key {
				i = i*10 + int(c-'0')
			}
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func load(t *testing.T, name string) doc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any // not doc: yaml.v3 would make every nested map a doc
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc(m)
}

func env(c doc, name string) string {
	for _, e := range c.get("env").([]any) {
		if m := e.(map[string]any); m["name"] == name {
			s, _ := m["value"].(string)
			return s
		}
	}
	return ""
}

func TestDeployment(t *testing.T) {
	t.Parallel()
	d := load(t, "deployment.yaml")
	c := doc(d.get("spec.template.spec.containers.0").(map[string]any))

	grace, err := time.ParseDuration(env(c, "SPEECHGATE_SHUTDOWN_GRACE"))
	if err != nil {
		t.Fatalf("SPEECHGATE_SHUTDOWN_GRACE: %v", err)
	}
	preStop := time.Duration(c.get("lifecycle.preStop.sleep.seconds").(int)) * time.Second
	termination := time.Duration(d.get("spec.template.spec.terminationGracePeriodSeconds").(int)) * time.Second
	if termination <= preStop+grace {
		t.Errorf("terminationGracePeriodSeconds %v must exceed the preStop pause %v plus the drain %v", termination, preStop, grace)
	}

	if c.get("readinessProbe.grpc.port") != 50051 || c.get("readinessProbe.grpc.service") != nil {
		t.Errorf("readiness must be a gRPC probe of the whole server: %v", c.get("readinessProbe"))
	}
	for _, probe := range []string{"livenessProbe", "startupProbe"} {
		if c.get(probe+".grpc.port") != 50051 || c.get(probe+".grpc.service") != server.LivenessService {
			t.Errorf("%s must be a gRPC probe of %q, which stays SERVING through a drain: %v", probe, server.LivenessService, c.get(probe))
		}
	}
	ports := map[string]int{}
	for _, p := range c.get("ports").([]any) {
		m := p.(map[string]any)
		ports[m["name"].(string)] = m["containerPort"].(int)
	}
	if ports["grpc"] != 50051 || ports["admin"] != 9090 || ports["http"] != 8080 {
		t.Errorf("container ports = %v", ports)
	}

	hardened := map[string]any{
		"securityContext.allowPrivilegeEscalation": false,
		"securityContext.readOnlyRootFilesystem":   true,
		"securityContext.runAsNonRoot":             true,
		"securityContext.capabilities.drop.0":      "ALL",
	}
	for path, want := range hardened {
		if got := c.get(path); got != want {
			t.Errorf("container %s = %v, want %v", path, got, want)
		}
	}
	if d.get("spec.template.spec.securityContext.seccompProfile.type") != "RuntimeDefault" ||
		d.get("spec.template.spec.automountServiceAccountToken") != false {
		t.Error("the pod must use the RuntimeDefault seccomp profile and no service account token")
	}
	if c.get("resources.limits.memory") == nil || c.get("resources.requests.cpu") == nil {
		t.Error("the container needs resource requests and a memory limit")
	}
	labels := d.get("spec.template.metadata.labels").(map[string]any)
	for k, v := range d.get("spec.selector.matchLabels").(map[string]any) {
		if labels[k] != v {
			t.Errorf("the selector %s=%v does not match the pod's labels", k, v)
		}
	}
}

func TestServiceBudgetAndAutoscaler(t *testing.T) {
	t.Parallel()
	svc := load(t, "service.yaml")
	grpcPort := doc(svc.get("spec.ports.0").(map[string]any))
	if grpcPort.get("name") != "grpc" || grpcPort.get("appProtocol") != "grpc" || grpcPort.get("targetPort") != "grpc" {
		t.Errorf("the Service's first port must be named grpc with appProtocol grpc: %v", grpcPort)
	}
	dep := load(t, "deployment.yaml")
	podLabels := dep.get("spec.template.metadata.labels").(map[string]any)
	for name, path := range map[string]string{"service.yaml": "spec.selector", "poddisruptionbudget.yaml": "spec.selector.matchLabels"} {
		for k, v := range load(t, name).get(path).(map[string]any) {
			if podLabels[k] != v {
				t.Errorf("%s selects %s=%v, which the pods do not carry", name, k, v)
			}
		}
	}
	hpa := load(t, "horizontalpodautoscaler.yaml")
	if hpa.get("spec.scaleTargetRef.name") != dep.get("metadata.name") || hpa.get("spec.minReplicas").(int) < 2 {
		t.Errorf("the autoscaler must target the Deployment and keep at least 2 replicas")
	}
	kust := load(t, "kustomization.yaml")
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && !slices.Contains(kust.get("resources").([]any), any(base)) {
			t.Errorf("kustomization.yaml does not list %s", base)
		}
	}
}

func TestDockerfileBuildsWhatCIBuilds(t *testing.T) {
	t.Parallel()
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	build := regexp.MustCompile(`CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=[^"]+" -o \S+ ./cmd/speechgate`)
	if !build.Match(dockerfile) || !build.Match(ci) {
		t.Error("the Dockerfile and .ci/run must build with the same command")
	}
	for _, want := range []string{"EXPOSE 50051 8080 9090", "USER 65532:65532", "distroless/static"} {
		if !strings.Contains(string(dockerfile), want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
}

func TestServiceConfigIsValidJSON(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("service-config.json")
	if err != nil {
		t.Fatal(err)
	}
	var sc struct {
		MethodConfig []struct {
			Name []struct{ Service, Method string }
		}
	}
	if err := json.Unmarshal(b, &sc); err != nil || len(sc.MethodConfig) == 0 {
		t.Fatalf("service-config.json: %v", err)
	}
}

// loadAll reads every document of a multi-document YAML file.
func loadAll(t *testing.T, name string) []doc {
	t.Helper()
	f, err := os.Open(filepath.Join("kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []doc
	dec := yaml.NewDecoder(f)
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, doc(m))
	}
}

// TestRedisComponent: the optional Redis of the fleet overlay is one the
// gateway can use: the gateway's variables point at its Service, the share
// each replica keeps without it matches the replicas usually run, it keeps
// leases rather than evicting them, and only the gateway reaches it.
func TestRedisComponent(t *testing.T) {
	t.Parallel()
	comp := load(t, "components/redis/kustomization.yaml")
	if comp.get("kind") != "Component" {
		t.Fatalf("components/redis is a %v, want a kustomize Component", comp.get("kind"))
	}
	overlay := load(t, "overlays/fleet/kustomization.yaml")
	if overlay.get("components.0") != "../../components/redis" || overlay.get("resources.0") != "../.." {
		t.Errorf("the fleet overlay must take the base and the Redis component: %v", overlay)
	}

	patch := load(t, "components/redis/gateway-env.yaml")
	base := load(t, "deployment.yaml")
	if patch.get("metadata.name") != base.get("metadata.name") ||
		patch.get("spec.template.spec.containers.0.name") != base.get("spec.template.spec.containers.0.name") {
		t.Fatal("the env patch does not target the gateway's Deployment and container")
	}
	c := doc(patch.get("spec.template.spec.containers.0").(map[string]any))
	vars := map[string]string{"SPEECHGATE_REDIS_URL": env(c, "SPEECHGATE_REDIS_URL"), "SPEECHGATE_FLEET_SIZE": env(c, "SPEECHGATE_FLEET_SIZE"),
		"SPEECHGATE_SYNTHESIS_CACHE_REDIS_BYTES": env(c, "SPEECHGATE_SYNTHESIS_CACHE_REDIS_BYTES")}
	cfg, err := config.Load(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatalf("the gateway refuses the component's settings: %v", err)
	}
	hpa := load(t, "horizontalpodautoscaler.yaml")
	if cfg.FleetSize != hpa.get("spec.minReplicas") {
		t.Errorf("SPEECHGATE_FLEET_SIZE %d; want the autoscaler's minimum, %v", cfg.FleetSize, hpa.get("spec.minReplicas"))
	}

	byKind := map[string]doc{}
	for _, d := range loadAll(t, "components/redis/redis.yaml") {
		byKind[d.get("kind").(string)] = d
	}
	svc, dep, policy := byKind["Service"], byKind["Deployment"], byKind["NetworkPolicy"]
	if svc == nil || dep == nil || policy == nil {
		t.Fatalf("redis.yaml needs a Deployment, a Service and a NetworkPolicy: has %v", slices.Collect(maps.Keys(byKind)))
	}
	if want := fmt.Sprintf("redis://%s:%d", svc.get("metadata.name"), svc.get("spec.ports.0.port")); cfg.RedisURL != want {
		t.Errorf("SPEECHGATE_REDIS_URL %q; the Service is %s", cfg.RedisURL, want)
	}
	r := doc(dep.get("spec.template.spec.containers.0").(map[string]any))
	args := fmt.Sprint(r.get("args"))
	for _, want := range []string{"--save ", "--appendonly no", "--maxmemory-policy noeviction"} {
		if !strings.Contains(args, want) {
			t.Errorf("redis args %s lack %q", args, want)
		}
	}
	// The cache keeps within its budget; what is left of maxmemory is for
	// leases and quotas, which a full Redis would refuse.
	var maxMB int
	if _, err := fmt.Sscanf(args[strings.Index(args, "--maxmemory ")+len("--maxmemory "):], "%dmb", &maxMB); err != nil {
		t.Fatalf("redis args %s: no --maxmemory in mb: %v", args, err)
	}
	if cacheMB := cfg.SynthesisCacheRedisBytes >> 20; cacheMB == 0 || cacheMB+64 > maxMB {
		t.Errorf("the synthesis cache may take %d MiB of a Redis of %d MiB; leave at least 64 MiB for leases and quotas", cacheMB, maxMB)
	}
	for path, want := range map[string]any{
		"securityContext.allowPrivilegeEscalation": false, "securityContext.readOnlyRootFilesystem": true,
		"securityContext.capabilities.drop.0": "ALL",
	} {
		if got := r.get(path); got != want {
			t.Errorf("redis container %s = %v, want %v", path, got, want)
		}
	}
	podLabels := base.get("spec.template.metadata.labels").(map[string]any)
	for k, v := range policy.get("spec.ingress.0.from.0.podSelector.matchLabels").(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("the NetworkPolicy admits %s=%v, which the gateway's pods do not carry", k, v)
		}
	}
}
