// Send one small, fully known trace to Sightline through an unmodified Node.js OTLP exporter.
//
//   node send_spans.mjs <grpc|http-json|http-proto> <endpoint> <test id>
//
// <endpoint> is what OTEL_EXPORTER_OTLP_ENDPOINT would hold (http://host:port); the HTTP
// exporters get <endpoint>/v1/traces, as the SDKs derive it from that variable.
// On success prints the ids and the time base as one JSON line on stdout and exits 0.
// Exits 1 if any export did not succeed: a silent failure must fail the test.
//
// The content is fixed except for the ids (random, as in real use) and the time base
// (the current second, so the spans land in a live partition); every time below is an
// exact [seconds, nanoseconds] offset from it, so the receiver can be checked to the ns.

import { context, diag, DiagConsoleLogger, DiagLogLevel, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { ExportResultCode } from "@opentelemetry/core";
import { OTLPTraceExporter as GrpcExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { OTLPTraceExporter as JsonExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPTraceExporter as ProtoExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";

const EXPORT_TIMEOUT_MS = 5000;

function exporterFor(protocol, endpoint) {
  const options = { timeoutMillis: EXPORT_TIMEOUT_MS };
  switch (protocol) {
    case "grpc":
      return new GrpcExporter({ ...options, url: endpoint });
    case "http-json":
      return new JsonExporter({ ...options, url: `${endpoint}/v1/traces` });
    case "http-proto":
      return new ProtoExporter({ ...options, url: `${endpoint}/v1/traces` });
    default:
      throw new Error(`unknown protocol ${JSON.stringify(protocol)}: use grpc, http-json or http-proto`);
  }
}

// Passes every call through to the real exporter and keeps each export's result.
class ResultRecorder {
  constructor(exporter) {
    this.exporter = exporter;
    this.results = [];
  }

  export(spans, resultCallback) {
    this.exporter.export(spans, (result) => {
      this.results.push(result);
      resultCallback(result);
    });
  }

  forceFlush() {
    return this.exporter.forceFlush ? this.exporter.forceFlush() : Promise.resolve();
  }

  shutdown() {
    return this.exporter.shutdown();
  }
}

function at(base, seconds, nanos) {
  return [base + seconds, nanos];
}

function emitTrace(tracer, base, testId) {
  const batch = tracer.startSpan("nightly-batch", { kind: SpanKind.INTERNAL, startTime: at(base, -5, 0) });
  batch.end(at(base, -4, 500_000_000));

  const root = tracer.startSpan("GET /checkout/{id}", {
    kind: SpanKind.SERVER,
    startTime: at(base, 0, 100_000_001),
    attributes: {
      "http.request.method": "GET",
      "sightline.unicode": "café ☕ 東京",
      "sightline.test_id": testId,
      "http.response.status_code": 200,
      "sightline.negative_int": -42,
      "sightline.max_safe_int": Number.MAX_SAFE_INTEGER,
      "sightline.load": 0.75,
      "sightline.negative_double": -2.5e-7,
      "user.authenticated": true,
      "sightline.cache_warm": false,
      "http.request.header.accept": ["application/json", "text/html"],
      "sightline.retry_delays_ms": [100, 200, 400],
      "sightline.ratios": [0.5, 1.25],
      "sightline.checks": [true, false],
    },
  });
  root.addEvent("cache.miss",
    { "cache.key": "cart:42", "cache.attempt": 2, "cache.latency_ms": 1.5, "cache.cold": true },
    at(base, 0, 150_000_000));

  const client = tracer.startSpan("POST payments", {
    kind: SpanKind.CLIENT,
    startTime: at(base, 0, 200_000_002),
    attributes: { "server.address": "payments.internal", "server.port": 8443 },
    links: [{ context: batch.spanContext(), attributes: { "link.reason": "retry-of", "sightline.attempt": 3 } }],
  }, trace.setSpan(context.active(), root));
  client.setStatus({ code: SpanStatusCode.ERROR, message: "payment service answered 503" });
  client.end(at(base, 0, 900_000_003));
  root.end(at(base, 1, 350_000_123));

  return {
    trace_id: root.spanContext().traceId,
    server_span_id: root.spanContext().spanId,
    client_span_id: client.spanContext().spanId,
    linked_trace_id: batch.spanContext().traceId,
    linked_span_id: batch.spanContext().spanId,
    base_seconds: base,
  };
}

function failures(recorder) {
  if (recorder.results.length === 0) {
    return ["the exporter was never called"];
  }
  return recorder.results
    .filter((result) => result.code !== ExportResultCode.SUCCESS)
    .map((result) => `export failed: ${result.error ? result.error.stack || result.error : "no error given"}`);
}

async function main([protocol, endpoint, testId]) {
  if (!protocol || !endpoint || !testId) {
    throw new Error("usage: node send_spans.mjs <grpc|http-json|http-proto> <endpoint> <test id>");
  }
  diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN); // exporter warnings go to stderr
  const recorder = new ResultRecorder(exporterFor(protocol, endpoint));
  const provider = new BasicTracerProvider({
    resource: defaultResource().merge(resourceFromAttributes({
      [ATTR_SERVICE_NAME]: `node-${protocol}`,
      [ATTR_SERVICE_VERSION]: "3.1.4",
      "service.instance.id": testId,
    })),
    spanProcessors: [new BatchSpanProcessor(recorder)],
  });
  const tracer = provider.getTracer(`sightline.tests.node.${protocol}`, "0.4.2",
    { schemaUrl: "https://opentelemetry.io/schemas/1.26.0" });
  const ids = emitTrace(tracer, Math.floor(Date.now() / 1000), testId);
  await provider.forceFlush();
  await provider.shutdown();
  const problems = failures(recorder);
  if (problems.length > 0) {
    throw new Error(problems.join("\n"));
  }
  process.stdout.write(`${JSON.stringify(ids)}\n`);
}

try {
  await main(process.argv.slice(2));
  process.exit(0);
} catch (error) {
  process.stderr.write(`send_spans: ${error.stack || error}\n`);
  process.exit(1);
}
