"""OTLP/HTTP: POST /v1/traces and /v1/metrics, protobuf or JSON, optionally gzip.

One request, in order:
1. check the Authorization header (ingest tokens);
2. route the path (404) and method (405);
3. check Content-Type (protobuf or JSON) and Content-Encoding (gzip or identity): 415;
4. read the body whole, by Content-Length or chunked, and gunzip it, never holding more
   than SIGHTLINE_INGEST_MAX_BODY_BYTES (413); a body not read whole is a 400;
5. decode it (400) and hand it to the pipeline, which answers after the write committed;
6. answer in the request's content type: the Export*ServiceResponse, or a google.rpc.Status.

Bad input is never a 500: senders retry, so a crash on one body would become a loop.
"""

import logging
import os
import re
import select
import socket
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Callable
from urllib.parse import urlsplit

import grpc
from django.conf import settings
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ingest import health, otlp_json, pipeline
from ingest.errors import IngestError, InvalidArgument, TooLarge, Unavailable

log = logging.getLogger("sightline.ingest")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
READ_TIMEOUT_SECONDS = 30  # a client that stalls mid-body frees its thread after this
MAX_CHUNK_LINE = 1024  # a chunk-size line, with any chunk extensions
MAX_TRAILER_LINES = 64
LINGER_SECONDS = 2  # after refusing a body unread, how long to take in the rest of it


class HTTPError(IngestError):
    """The HTTP-only answers (404, 405, 411, 415): all permanent."""

    def __init__(self, http_status, grpc_code, message, headers=None):
        super().__init__(message)
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.headers = headers or {}


@dataclass(frozen=True)
class Route:
    export: Callable
    request_type: type
    decode_json: Callable
    response: Callable  # ExportResult -> response message


ROUTES = {
    "/v1/traces": Route(pipeline.export_traces, trace_service_pb2.ExportTraceServiceRequest,
                        otlp_json.decode_traces, pipeline.trace_response),
    "/v1/metrics": Route(pipeline.export_metrics, metrics_service_pb2.ExportMetricsServiceRequest,
                         otlp_json.decode_metrics, pipeline.metrics_response),
}


_pool = None
_pool_lock = threading.Lock()


def _export_pool():
    """The threads that run exports, created once.

    Connection threads come and go with TCP connections; exports run on these long-lived
    ones instead, so each keeps its PostgreSQL connection (Django's are per thread), as
    the gRPC server's executor does. More threads than admitted requests, so the excess
    is told to retry rather than queued.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = futures.ThreadPoolExecutor(max_workers=settings.INGEST_MAX_INFLIGHT + 8,
                                               thread_name_prefix="otlp-http-export")
        return _pool


# --- reading the body -----------------------------------------------------------------

def _content_length(headers):
    values = headers.get_all("Content-Length") or []
    if len(set(values)) > 1 or not all(re.fullmatch(r"[0-9]{1,20}", value.strip()) for value in values):
        raise InvalidArgument("the Content-Length header is malformed")
    return int(values[0]) if values else None


def _read_exactly(rfile, size):
    data = rfile.read(size)
    if len(data) != size:
        raise InvalidArgument(f"the body ended after {len(data)} of {size} bytes")
    return data


def _read_line(rfile, what):
    line = rfile.readline(MAX_CHUNK_LINE + 1)
    if not line.endswith(b"\n"):
        raise InvalidArgument(f"the chunked body is truncated or malformed ({what})")
    return line


def _read_chunked(rfile, limit):
    """Decode a chunked body: hex size line, data, CRLF ... a 0 line, then trailers."""
    body = bytearray()
    while True:
        size_text = _read_line(rfile, "chunk size").split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size_text):
            raise InvalidArgument("the chunked body has a malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        body += _read_exactly(rfile, size)
        if _read_line(rfile, "chunk end").strip():
            raise InvalidArgument("the chunked body has data past a chunk's size")
    for _ in range(MAX_TRAILER_LINES):
        if not _read_line(rfile, "trailer").strip():
            return bytes(body)
    raise InvalidArgument("the chunked body has too many trailer lines")


# zlib window bits per Content-Encoding: gzip framing, or zlib framing for deflate
# (what HTTP calls deflate; some clients send raw deflate, which wbits 47 does not take).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _decompress(data, limit, encoding="gzip"):
    """Decompress every member of data, refusing to produce more than limit bytes."""
    if not data:
        raise InvalidArgument(f"the {encoding} body is empty")
    out = bytearray()
    try:
        while data:
            member = zlib.decompressobj(_WBITS[encoding])
            while data and not member.eof:
                out += member.decompress(data, limit + 1 - len(out))  # max_length is >= 1 here
                if len(out) > limit:
                    raise TooLarge(f"the body is larger than {limit} bytes after decompression")
                data = member.unconsumed_tail
            if not member.eof:
                raise InvalidArgument(f"the {encoding} body is truncated")
            data = member.unused_data
    except zlib.error as exc:
        raise InvalidArgument(f"the body is not valid {encoding}: {exc}") from None
    return bytes(out)


def _media_type(value):
    """"application/json; charset=utf-8" -> "application/json"."""
    return (value or "").split(";", 1)[0].strip().lower()


# --- the handler -----------------------------------------------------------------------

class OTLPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    server_version = "Sightline"
    timeout = READ_TIMEOUT_SECONDS

    def handle(self):
        """The requests of one connection: the first, then the next while the client keeps it open."""
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and self._next_request():
            self.handle_one_request()

    def _next_request(self):
        """Wait for the next request on a kept-alive connection; False to close it instead.

        Closed when the client stays idle past the read timeout, and at once when the
        server drains: an idle connection holds no request, so closing it loses nothing,
        and the exporter sends its next one on a new connection, to a process that is up.
        A request that arrived with the drain is answered (and the connection closed after).
        """
        if self._buffered():  # pipelined: the next request is here already
            return True
        poller = select.poll()
        poller.register(self.connection, select.POLLIN)
        poller.register(self.server.draining_fd, select.POLLIN)
        ready = dict(poller.poll(self.timeout * 1000))
        return self.connection.fileno() in ready

    def _buffered(self):
        """Whether bytes of the next request are already read or waiting, without blocking."""
        self.connection.settimeout(0)
        try:
            return bool(self.rfile.peek(1))  # b"" when nothing is there yet (or at EOF)
        except OSError:
            return True  # let handle_one_request meet the error and close
        finally:
            self.connection.settimeout(self.timeout)

    def do_POST(self):
        # The request's content type is the answer's; errors before it is known answer JSON.
        self._format = PROTOBUF if _media_type(self.headers.get("Content-Type")) == PROTOBUF else JSON
        self._body_read = False
        try:
            route = self._route()
            body = self._read_body()
            result = _export_pool().submit(route.export, self._decode(route, body)).result()
        except IngestError as error:
            self._send_error(error)
        except Exception:  # a bug or an outage, never the sender's fault: ask it to retry
            log.exception("unexpected error in OTLP/HTTP export")
            self._send_error(Unavailable("internal error; retry later"))
        else:
            self._send(200, route.response(result))

    def __getattr__(self, name):
        # http.server dispatches on do_<METHOD>; every method but POST gets a 405.
        if name.startswith("do_"):
            return self._not_post
        raise AttributeError(name)

    def _not_post(self):
        self._format = JSON
        self._body_read = False
        try:
            pipeline.check_token(self.headers.get("Authorization"))
            self._path_route()
            raise HTTPError(405, grpc.StatusCode.UNIMPLEMENTED, f"{self.command} is not supported; use POST",
                            {"Allow": "POST"})
        except IngestError as error:
            self._send_error(error)

    def _path_route(self):
        route = ROUTES.get(urlsplit(self.path).path)
        if route is None:
            raise HTTPError(404, grpc.StatusCode.NOT_FOUND, "no such endpoint; use /v1/traces or /v1/metrics")
        return route

    def _route(self):
        pipeline.check_token(self.headers.get("Authorization"))
        route = self._path_route()
        if _media_type(self.headers.get("Content-Type")) not in (PROTOBUF, JSON):
            raise HTTPError(415, grpc.StatusCode.INVALID_ARGUMENT, f"Content-Type must be {PROTOBUF} or {JSON}")
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "deflate"):
            raise HTTPError(415, grpc.StatusCode.INVALID_ARGUMENT, "Content-Encoding must be gzip, deflate or identity")
        self._encoding = encoding
        return route

    def _read_body(self):
        limit = settings.INGEST_MAX_BODY_BYTES
        try:
            body = self._read_raw(limit)
        except TimeoutError:
            raise HTTPError(408, grpc.StatusCode.DEADLINE_EXCEEDED, "timed out reading the body") from None
        except OSError:
            raise InvalidArgument("the connection failed while reading the body") from None
        self._body_read = True
        return body if self._encoding == "identity" else _decompress(body, limit, self._encoding)

    def _read_raw(self, limit):
        transfer_encoding = self.headers.get("Transfer-Encoding")
        if transfer_encoding is not None:
            if transfer_encoding.strip().lower() != "chunked":
                raise InvalidArgument("only the chunked Transfer-Encoding is supported")
            body = _read_chunked(self.rfile, limit)
            if not body:
                raise InvalidArgument("the chunked body is empty")
            return body
        length = _content_length(self.headers)
        if length is None:
            raise HTTPError(411, grpc.StatusCode.INVALID_ARGUMENT, "a Content-Length or a chunked body is required")
        if length > limit:  # compressed or not, no body this large is read
            raise TooLarge(f"the body is larger than {limit} bytes")
        return _read_exactly(self.rfile, length)

    def _decode(self, route, body):
        if self._format == JSON:
            return route.decode_json(body)
        try:
            return route.request_type.FromString(body)
        except (DecodeError, ValueError, RecursionError) as exc:
            raise InvalidArgument(f"the body is not a valid {route.request_type.DESCRIPTOR.name}: {exc}") from None

    def _send_error(self, error):
        health.counter("requests_failed_total").inc()
        status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message)
        headers = dict(getattr(error, "headers", {}))
        if error.retry_after is not None:
            headers["Retry-After"] = str(int(error.retry_after))
        self._send(error.http_status, status, headers)

    def _send(self, http_status, message, headers=None):
        body = otlp_json.encode(message) if self._format == JSON else message.SerializeToString()
        if not self._body_read:  # the unread body would be taken for the next request
            self.close_connection = True
        if self.server.draining:  # the last answer on this connection: the client reconnects elsewhere
            self.close_connection = True
        try:
            self.send_response(http_status)
            self.send_header("Content-Type", self._format)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the client went away; nothing left to tell it
            self.close_connection = True
            return
        if not self._body_read:
            self._linger()

    def _linger(self):
        """Take in and drop what the client still sends, for a while, before closing.

        Closing a socket with unread data makes the kernel answer with a reset, which can
        destroy our answer before the client reads it; exporters take a reset for a
        transient failure and would resend a body that is refused again.
        """
        deadline = time.monotonic() + LINGER_SECONDS
        try:
            self.connection.shutdown(socket.SHUT_WR)  # the answer is complete: FIN after it
            while (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                if not self.connection.recv(65536):
                    break
        except OSError:  # a timeout or a reset: closing is all that is left
            pass

    def log_message(self, format, *args):
        """Quiet: no line per request (exporters send many); failures are counted instead."""

    def log_error(self, format, *args):
        log.debug("OTLP/HTTP: " + format, *args)


class OTLPHTTPServer(ThreadingHTTPServer):
    """The threaded HTTP server, with a drain: see drain()."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.draining = False
        # Readable once the drain starts: wakes the connections waiting for a next request.
        self.draining_fd, self._start_draining_fd = os.pipe()
        self._connections = set()  # the threads serving a connection
        self._connections_lock = threading.Lock()
        super().__init__(address, OTLPHandler)

    def process_request(self, request, client_address):
        """A thread per connection, tracked for drain(); a daemon, so a connection still open
        when the drain gives up does not hold the exit."""
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                  daemon=True, name="otlp-http-connection")
        with self._connections_lock:
            self._connections.add(thread)
        thread.start()

    def _serve_connection(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(threading.current_thread())

    def open_connections(self):
        with self._connections_lock:
            return len(self._connections)

    def drain(self, deadline):
        """Stop taking connections, close idle ones, answer the requests in flight.

        1. Mark the server draining: each connection closes after its current answer,
           and the ones waiting for a next request close now.
        2. Stop serve_forever(), take the connections the kernel has already accepted
           (their clients are connected and sending: closing the listening socket would
           reset them), and close the listening socket: new connections are refused.
        3. Wait until every connection is closed, or until deadline (time.monotonic()).
        Returns how many connections were still open at the deadline.
        """
        self.draining = True
        os.write(self._start_draining_fd, b"x")
        self.shutdown()
        self.socket.setblocking(False)
        while True:
            try:
                request, client_address = self.socket.accept()
            except OSError:  # none left (BlockingIOError), or the socket failed
                break
            self.process_request(request, client_address)
        self.server_close()
        while True:
            with self._connections_lock:
                threads = list(self._connections)
            remaining = deadline - time.monotonic()
            if not threads or remaining <= 0:
                return len(threads)
            threads[0].join(remaining)

    def server_bind(self):
        # Several ingest processes listen on the same port; the kernel spreads connections.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        TCPServer.server_bind(self)  # HTTPServer's would resolve the host name: slow, not needed
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        log.exception("OTLP/HTTP connection from %s failed", client_address[0])


def build_server():
    return OTLPHTTPServer((settings.BIND, settings.OTLP_HTTP_PORT))
