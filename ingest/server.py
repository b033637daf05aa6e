"""The ingest process: OTLP/gRPC with the standard health service."""

import logging
import signal
import threading
from concurrent import futures

import grpc
from django.conf import settings
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger("sightline.ingest")


def build_grpc_server():
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="otlp-grpc"),
        options=[("grpc.so_reuseport", 1)],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"{settings.BIND}:{settings.OTLP_GRPC_PORT}")
    return server, health_servicer


def serve(processes=1):
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server, health_servicer = build_grpc_server()
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("OTLP/gRPC listening on %s:%s", settings.BIND, settings.OTLP_GRPC_PORT)
    stopping.wait()
    log.info("stopping")
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=5).wait()
    log.info("stopped")
