"""OTLP/gRPC: TraceService/Export and MetricsService/Export."""

import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from ingest import health, pipeline
from ingest.errors import IngestError

log = logging.getLogger("sightline.ingest")


def _abort(context, error):
    """End the RPC with the error's code; retryable errors carry RetryInfo."""
    health.counter("requests_failed_total").inc()
    if error.retry_after is not None:
        detail = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(error.retry_after)))
        status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message)
        status.details.add().Pack(detail)
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
    context.abort(error.grpc_code, error.message)


def _authorization(context):
    for key, value in context.invocation_metadata():
        if key == "authorization":
            return value
    return None


def _run(context, export, request):
    try:
        pipeline.check_token(_authorization(context))
        return export(request)
    except IngestError as error:
        _abort(context, error)
    except Exception:  # never let one request take the process down; the exporter retries
        log.exception("unexpected error in export")
        health.counter("requests_failed_total").inc()
        context.abort(grpc.StatusCode.INTERNAL, "internal error")


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        result = _run(context, pipeline.export_traces, request)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.error
        return response


class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        result = _run(context, pipeline.export_metrics, request)
        response = metrics_service_pb2.ExportMetricsServiceResponse()
        if result.rejected:
            response.partial_success.rejected_data_points = result.rejected
            response.partial_success.error_message = result.error
        return response


def add_to_server(server):
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(), server)
