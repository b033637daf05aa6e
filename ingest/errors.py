"""The OTLP response contract, one class per outcome, shared by the gRPC and HTTP receivers.

Each error knows its gRPC status code, its HTTP status, and whether the exporter should
retry (retry_after seconds, sent as gRPC RetryInfo or HTTP Retry-After).
"""

import grpc


class IngestError(Exception):
    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    retry_after = None  # seconds; None = do not retry

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidArgument(IngestError):
    """A malformed body: permanent, the exporter must not retry."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class TooLarge(IngestError):
    """A body over SIGHTLINE_INGEST_MAX_BODY_BYTES (after decompression): permanent."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class Unauthenticated(IngestError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class Overloaded(IngestError):
    """Too much work in flight: retry later."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 429
    retry_after = 1


class Unavailable(IngestError):
    """PostgreSQL or Redis cannot be reached: retry later; nothing was acknowledged."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    retry_after = 2
