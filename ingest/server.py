"""The ingest process: OTLP/gRPC (with the standard health service) and OTLP/HTTP.

On SIGTERM (or SIGINT) it drains, then exits:
1. gRPC health goes NOT_SERVING; both receivers stop taking connections and requests
   (new gRPC calls get UNAVAILABLE, new HTTP connections are refused: exporters retry);
2. every request already taken is finished and answered (success only once committed),
   for up to SIGHTLINE_SHUTDOWN_GRACE_SECONDS; idle HTTP keep-alive connections are
   closed at once, busy ones after their answer;
3. exit 0; or, if requests are still running when the grace is over, exit 1 without
   answering them: nothing unanswered was acknowledged, so their senders retry.

serve(processes=N) with N > 1 runs N receiver processes on the same ports (SO_REUSEPORT,
the kernel spreads connections over them), passes SIGTERM on and waits for them to drain.
"""

import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
from django.conf import settings
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc

from config.embedded import die_with_parent
from ingest import grpc_receiver, health, http_receiver, pipeline
from traces.redis_client import get_redis

log = logging.getLogger("sightline.ingest")
# Past the grace, the time a receiver process takes to exit (threads, stats flush); the
# parent of several waits this much longer before it kills one.
EXIT_MARGIN_SECONDS = 3


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
    stopping = _stop_on_signals()
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
    # Wake up now and then: a signal delivered to another thread (gRPC's, the HTTP
    # server's) runs its Python handler only when the main thread runs bytecode, and a
    # bare wait() would block the main thread in the lock until something else woke it.
    while not stopping.wait(0.2):
        pass
    finished = _drain(grpc_server, health_servicer, http_server)
    stats_stop.set()
    stats_thread.join(3)
    if not finished:
        logging.shutdown()  # flush the log: os._exit skips it
        os._exit(1)  # the stuck requests' threads would hold a normal exit


def _drain(grpc_server, health_servicer, http_server):
    """Stop taking requests, finish the ones taken within the grace; True if all finished."""
    grace = settings.SHUTDOWN_GRACE_SECONDS
    started = time.monotonic()
    log.info("stopping: %d export requests in flight, %d HTTP connections open; up to %d s to finish them",
             pipeline.admission().in_flight, http_server.open_connections(), grace)
    health_servicer.enter_graceful_shutdown()
    grpc_stopped = grpc_server.stop(grace=grace)  # at once: no new calls; those running get the grace
    open_connections = http_server.drain(started + grace)
    grpc_stopped.wait(max(started + grace - time.monotonic(), 0) + 1)
    running = pipeline.admission().in_flight
    if running or open_connections:
        log.warning("stopped after the grace of %d s: %d export requests still running, %d HTTP connections "
                    "still open; they are not answered, so their senders retry", grace, running, open_connections)
    else:
        log.info("stopped: every request answered, in %.1f s", time.monotonic() - started)
    return running == 0


def _stop_on_signals():
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    return stopping


def _serve_many(processes):
    argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "ingest", "--processes", "1"]
    start = lambda: subprocess.Popen(argv, preexec_fn=die_with_parent)  # noqa: E731
    children = [start() for _ in range(processes)]
    stopping = _stop_on_signals()
    log.info("started %d ingest processes: %s", processes, ", ".join(str(c.pid) for c in children))
    while not stopping.wait(1.0):
        for index, child in enumerate(children):
            if child.poll() is not None:
                log.warning("ingest process %d exited with code %s; restarting it", child.pid, child.returncode)
                children[index] = start()
    # Pass SIGTERM on; each child drains on its own (after a Ctrl-C in a terminal, which
    # reached them too, a second signal changes nothing).
    for child in children:
        child.terminate()
    deadline = time.monotonic() + settings.SHUTDOWN_GRACE_SECONDS + EXIT_MARGIN_SECONDS
    codes = []
    for child in children:
        try:
            codes.append(child.wait(max(deadline - time.monotonic(), 0)))
        except subprocess.TimeoutExpired:
            log.warning("ingest process %d did not stop in time; killing it", child.pid)
            child.kill()
            codes.append(child.wait())
    if any(codes):
        sys.exit(1)
