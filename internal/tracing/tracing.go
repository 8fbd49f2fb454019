// Package tracing sets up OpenTelemetry for the gateway: spans are exported
// by OTLP when the standard OTEL_* variables ask for it, and otherwise not
// recorded at all, while the caller's W3C trace context is carried through
// to Smallest either way.
package tracing

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is the gateway's tracer provider and propagator.
type Tracing struct {
	Provider   trace.TracerProvider
	Propagator propagation.TextMapPropagator
	// Exporting says whether spans are exported.
	Exporting bool
	shutdown  func(context.Context) error
}

// Enabled reports whether the OTEL_* variables ask for OTLP export: an OTLP
// endpoint is set, or OTEL_TRACES_EXPORTER is "otlp"; and neither
// OTEL_SDK_DISABLED nor OTEL_TRACES_EXPORTER=none turns it off.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch exporter := getenv("OTEL_TRACES_EXPORTER"); exporter {
	case "otlp":
		return true
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default:
		return false // "none", or an exporter this gateway does not ship
	}
}

// New returns the gateway's tracing. When Enabled, spans go to an OTLP
// exporter over http/protobuf or gRPC as OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL
// says; the exporter and SDK read the other standard variables (endpoint,
// headers, sampler, resource attributes) themselves.
func New(ctx context.Context, getenv func(string) string, version string) (*Tracing, error) {
	t := &Tracing{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Provider:   noop.NewTracerProvider(),
		shutdown:   func(context.Context) error { return nil },
	}
	if !Enabled(getenv) {
		return t, nil
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp *otlptrace.Exporter
	var err error
	if protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(serviceName(getenv)), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	t.Provider, t.Exporting, t.shutdown = tp, true, tp.Shutdown
	return t, nil
}

func serviceName(getenv func(string) string) string {
	if n := getenv("OTEL_SERVICE_NAME"); n != "" {
		return n
	}
	return "speechgate"
}

// Shutdown flushes the spans not yet exported.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.shutdown(ctx) }
