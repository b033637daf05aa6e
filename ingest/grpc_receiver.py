"""OTLP/gRPC: TraceService/Export and MetricsService/Export."""

import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ingest import health, pipeline
from ingest.errors import IngestError, InvalidArgument

log = logging.getLogger("sightline.ingest")


def _abort(context, error):
    """End the RPC with the error's code; retryable errors carry RetryInfo."""
    health.counter("requests_failed_total").inc()
    if error.retry_after is not None:
        detail = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(error.retry_after)))
        status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message)
        status.details.add().Pack(detail)
        # The standard place (grpc-status-details-bin, read by Go and Java exporters) and the
        # key the Python exporter reads (google.rpc.retryinfo-bin, a bare RetryInfo).
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),
                                       ("google.rpc.retryinfo-bin", detail.SerializeToString())))
    context.abort(error.grpc_code, error.message)


def _authorization(context):
    for key, value in context.invocation_metadata():
        if key == "authorization":
            return value
    return None


def _run(context, export, message_type, body):
    """Parse here, not in grpcio, so that a body that does not parse gets INVALID_ARGUMENT."""
    try:
        pipeline.check_token(_authorization(context))
        try:
            request = message_type.FromString(body)
        except DecodeError as exc:
            raise InvalidArgument(f"the request is not a valid {message_type.DESCRIPTOR.name}: {exc}") from None
        return export(request)
    except IngestError as error:
        _abort(context, error)
    except Exception:  # never let one request take the process down; the exporter retries
        log.exception("unexpected error in export")
        health.counter("requests_failed_total").inc()
        context.abort(grpc.StatusCode.INTERNAL, "internal error")


def export_traces(body, context):
    return pipeline.trace_response(
        _run(context, pipeline.export_traces, trace_service_pb2.ExportTraceServiceRequest, body))


def export_metrics(body, context):
    return pipeline.metrics_response(
        _run(context, pipeline.export_metrics, metrics_service_pb2.ExportMetricsServiceRequest, body))


def add_to_server(server):
    """TraceService/Export and MetricsService/Export, taking the request bytes as they came."""
    for service, handler in (("opentelemetry.proto.collector.trace.v1.TraceService", export_traces),
                             ("opentelemetry.proto.collector.metrics.v1.MetricsService", export_metrics)):
        method = grpc.unary_unary_rpc_method_handler(handler, request_deserializer=None,
                                                     response_serializer=lambda response: response.SerializeToString())
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Export": method}),))
