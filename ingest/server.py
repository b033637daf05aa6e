"""The ingest process: OTLP/gRPC (with the standard health service) and OTLP/HTTP.

serve(processes=N) with N > 1 runs N receiver processes on the same ports (SO_REUSEPORT,
the kernel spreads connections over them) and stops them together.
"""

import gc
import logging
import signal
import subprocess
import sys
import threading
from concurrent import futures

import grpc
from django.conf import settings
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ingest import grpc_receiver, health, http_receiver, pipeline
from traces.redis_client import get_redis

log = logging.getLogger("sightline.ingest")
GRACE_SECONDS = 5


def build_grpc_server():
    limit = settings.INGEST_MAX_BODY_BYTES
    server = grpc.server(
        # More threads than admitted requests, so the excess is answered "retry", not queued.
        futures.ThreadPoolExecutor(max_workers=settings.INGEST_MAX_INFLIGHT + 8, thread_name_prefix="otlp-grpc"),
        options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", 4 * 1024 * 1024)],
    )
    health_servicer = grpc_health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    grpc_receiver.add_to_server(server)
    address = f"{settings.BIND}:{settings.OTLP_GRPC_PORT}"
    if settings.GRPC_TLS_CERT:
        with open(settings.GRPC_TLS_KEY, "rb") as key, open(settings.GRPC_TLS_CERT, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    return server, health_servicer


def serve(processes=1):
    if processes > 1:
        return _serve_many(processes)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    # Converting a batch allocates thousands of short-lived containers; collecting them
    # every 700 allocations, and re-scanning Django's long-lived objects, costs throughput.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    grpc_server, health_servicer = build_grpc_server()
    http_server = http_receiver.build_server()
    grpc_server.start()
    threading.Thread(target=http_server.serve_forever, daemon=True, name="otlp-http").start()
    stats_stop, stats_thread = health.start_flusher(get_redis(), lambda: pipeline.admission().in_flight)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("OTLP/gRPC listening on %s:%s%s", settings.BIND, settings.OTLP_GRPC_PORT,
             " (TLS)" if settings.GRPC_TLS_CERT else "")
    log.info("OTLP/HTTP listening on %s:%s", settings.BIND, settings.OTLP_HTTP_PORT)
    stopping.wait()
    # Drain: stop taking new requests, finish (and acknowledge) the ones in flight.
    log.info("stopping: finishing requests in flight")
    health_servicer.enter_graceful_shutdown()
    http_server.shutdown()
    http_server.server_close()
    grpc_server.stop(grace=GRACE_SECONDS).wait()
    stats_stop.set()
    stats_thread.join(3)
    log.info("stopped")


def _serve_many(processes):
    argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "ingest", "--processes", "1"]
    children = [subprocess.Popen(argv) for _ in range(processes)]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info("started %d ingest processes: %s", processes, ", ".join(str(c.pid) for c in children))
    while not stopping.wait(1.0):
        for index, child in enumerate(children):
            if child.poll() is not None:
                log.warning("ingest process %d exited with code %s; restarting it", child.pid, child.returncode)
                children[index] = subprocess.Popen(argv)
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(GRACE_SECONDS + 2)
        except subprocess.TimeoutExpired:
            child.kill()
