"""The OTLP response contract over gRPC: what is acknowledged is stored; errors say whether to retry."""

import subprocess
import threading
import time
import uuid

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from config.embedded import EmbeddedPostgres, EmbeddedRedis
from ingest.health import STATS_KEY
from tests.conftest import PYTHON, ROOT
from tests.otlp_builders import trace_request, trace_stub
from tests.processes import wait_until
from traces.models import Span
from traces.redis_client import get_redis

pytestmark = pytest.mark.django_db(transaction=True)


def export(address, request, metadata=None, compression=None, credentials=None, timeout=10):
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        return trace_stub(channel).Export.with_call(request, metadata=metadata, compression=compression,
                                                    timeout=timeout)


def rpc_error(address, request, **kwargs):
    with pytest.raises(grpc.RpcError) as caught:
        export(address, request, **kwargs)
    return caught.value


def retry_info(error):
    """The RetryInfo delay in the error's status details, or None. The same delay must be in
    google.rpc.retryinfo-bin, where the Python SDK's exporter looks for it."""
    metadata = dict(error.trailing_metadata() or ())
    if "grpc-status-details-bin" not in metadata:
        return None
    bare = error_details_pb2.RetryInfo.FromString(metadata["google.rpc.retryinfo-bin"])
    for detail in status_pb2.Status.FromString(metadata["grpc-status-details-bin"]).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            assert bare.retry_delay.seconds == info.retry_delay.seconds
            return info.retry_delay.seconds
    return None


def stored(service):
    return Span.objects.filter(service_name=service).count()


def test_an_empty_request_succeeds(ingest_server):
    response, call = export(ingest_server["grpc"], trace_service_pb2.ExportTraceServiceRequest())
    assert call.code() == grpc.StatusCode.OK
    assert not response.HasField("partial_success")


def test_a_half_invalid_batch_stores_the_valid_spans_and_reports_the_rest(ingest_server):
    service = f"half-{uuid.uuid4().hex[:8]}"
    request = trace_request(service, spans=4)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = bytes(16)
    spans[1].trace_id = b"\x01" * 15
    response, _ = export(ingest_server["grpc"], request)
    assert response.partial_success.rejected_spans == 2
    assert "trace_id" in response.partial_success.error_message
    assert stored(service) == 2


def test_a_batch_delivered_twice_is_stored_once(ingest_server):
    service = f"dup-{uuid.uuid4().hex[:8]}"
    request = trace_request(service, spans=50)
    export(ingest_server["grpc"], request)
    response, _ = export(ingest_server["grpc"], request)
    assert not response.HasField("partial_success")
    assert stored(service) == 50


def test_a_body_over_the_limit_is_refused_without_retry_even_when_gzip_hides_it(start_ingest):
    ingest = start_ingest(SIGHTLINE_INGEST_MAX_BODY_BYTES="200000")
    service = f"big-{uuid.uuid4().hex[:8]}"
    big = trace_request(service, spans=1000)  # ~ 400 kB
    assert big.ByteSize() > 200_000
    for compression in (None, grpc.Compression.Gzip):
        error = rpc_error(ingest["grpc"], big, compression=compression)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_info(error) is None
    export(ingest["grpc"], trace_request(service, spans=10))
    assert stored(service) == 10


def test_ingest_tokens_are_required_when_configured(start_ingest):
    ingest = start_ingest(SIGHTLINE_INGEST_TOKENS="s3cret,other")
    service = f"auth-{uuid.uuid4().hex[:8]}"
    request = trace_request(service, spans=3)
    for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
        assert rpc_error(ingest["grpc"], request, metadata=metadata).code() == grpc.StatusCode.UNAUTHENTICATED
    assert stored(service) == 0
    export(ingest["grpc"], request, metadata=(("authorization", "Bearer other"),))
    assert stored(service) == 3


def self_signed_certificate(directory):
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return cert_pem


def test_grpc_with_tls_from_certificate_files(start_ingest, tmp_path):
    cert_pem = self_signed_certificate(tmp_path)
    ingest = start_ingest(wait=False, SIGHTLINE_GRPC_TLS_CERT=str(tmp_path / "cert.pem"),
                          SIGHTLINE_GRPC_TLS_KEY=str(tmp_path / "key.pem"))
    ingest["proc"].wait_for_line("OTLP/gRPC listening", timeout=60)
    assert "(TLS)" in ingest["proc"].output
    service = f"tls-{uuid.uuid4().hex[:8]}"
    address = f"localhost:{ingest['ports']['grpc']}"
    credentials = grpc.ssl_channel_credentials(root_certificates=cert_pem)
    export(address, trace_request(service, spans=2), credentials=credentials)
    assert stored(service) == 2
    with pytest.raises(grpc.RpcError):  # plaintext is not accepted on a TLS port
        export(address, trace_request(service, spans=2), timeout=3)


def sdk_batches(service, batches, spans_per_batch):
    """ReadableSpans made by the real SDK, ready for OTLPSpanExporter.export()."""
    provider = TracerProvider(resource=SdkResource.create({"service.name": service}))
    tracer = provider.get_tracer("overload")
    result = []
    for _ in range(batches):
        batch = []
        for index in range(spans_per_batch):
            span = tracer.start_span(f"op-{index % 5}", attributes={f"k{n}": f"v{n}" for n in range(8)})
            span.end()
            batch.append(span)
        result.append(batch)
    return result


def stats():
    return {key.decode(): float(value) for key, value in get_redis().hgetall(STATS_KEY).items()}


def test_overload_is_answered_retry_and_every_acknowledged_span_is_stored(start_ingest):
    ingest = start_ingest(SIGHTLINE_INGEST_MAX_INFLIGHT="1")
    service = f"overload-{uuid.uuid4().hex[:8]}"
    senders, batches, size = 6, 4, 500
    work = [sdk_batches(service, batches, size) for _ in range(senders)]
    overloaded_before = stats().get("requests_overloaded_total", 0)
    acknowledged = []

    def send(my_batches):
        exporter = OTLPSpanExporter(endpoint=ingest["grpc"], insecure=True, timeout=30)
        for batch in my_batches:
            if exporter.export(batch) == SpanExportResult.SUCCESS:
                acknowledged.append(len(batch))
        exporter.shutdown()

    threads = [threading.Thread(target=send, args=(mine,)) for mine in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(acknowledged) > 0
    assert stored(service) == sum(acknowledged)  # counted, not sampled
    assert sum(acknowledged) == senders * batches * size  # the exporters retried until accepted
    wait_until(lambda: stats().get("requests_overloaded_total", 0) > overloaded_before, 10,
               "the overload counter to move")


def migrate(url):
    env = {"DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    subprocess.run([PYTHON, str(ROOT / "manage.py"), "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=120)


def count_spans(url, service):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM sightline_span WHERE service_name = %s", [service]).fetchone()[0]


def export_until_ok(address, request, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return export(address, request)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_database_outage_is_retryable_and_ingest_recovers_without_restart(start_ingest, tmp_path):
    postgres = EmbeddedPostgres(tmp_path / "pg")
    url = postgres.start()
    try:
        migrate(url)
        ingest = start_ingest(DATABASE_URL=url)
        pid = ingest["proc"].pid
        service = f"outage-{uuid.uuid4().hex[:8]}"
        export(ingest["grpc"], trace_request(service, spans=10))
        postgres.stop()
        error = rpc_error(ingest["grpc"], trace_request(service, spans=10))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_info(error) is not None
        postgres.start(port=postgres.port)
        export_until_ok(ingest["grpc"], trace_request(service, spans=10))
        assert count_spans(url, service) == 20
        assert ingest["proc"].proc.poll() is None and ingest["proc"].pid == pid
    finally:
        postgres.stop()


def get_redis_at(url):
    import redis as redis_module

    return redis_module.Redis.from_url(url)


def test_a_redis_outage_is_retryable_and_ingest_recovers_without_restart(start_ingest, tmp_path):
    redis = EmbeddedRedis(tmp_path / "redis")
    redis_url = redis.start()
    try:
        ingest = start_ingest(REDIS_URL=redis_url)
        service = f"redis-outage-{uuid.uuid4().hex[:8]}"
        export(ingest["grpc"], trace_request(service, spans=5))
        redis.stop()
        request = trace_request(service, spans=5)
        error = rpc_error(ingest["grpc"], request)
        assert error.code() == grpc.StatusCode.UNAVAILABLE and retry_info(error) is not None
        redis.start(port=redis.port)
        export_until_ok(ingest["grpc"], request)  # the exporter retries the same batch
        assert stored(service) == 10  # written once, although it was sent twice
        trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
        assert get_redis_at(redis_url).zscore("sightline:traces:pending", trace_id) is not None
    finally:
        redis.stop()


def test_several_ingest_processes_share_the_ports(start_ingest):
    ingest = start_ingest(args=("--processes", "2"))
    import psutil

    wait_until(lambda: len(psutil.Process(ingest["proc"].pid).children()) == 2, 30, "two receiver processes")
    receivers = psutil.Process(ingest["proc"].pid).children()

    def listening(process):
        return any(c.laddr.port == ingest["ports"]["grpc"] and c.status == psutil.CONN_LISTEN
                   for c in process.net_connections())

    wait_until(lambda: all(listening(p) for p in receivers), 30, "both listening on the gRPC port")
    service = f"multi-{uuid.uuid4().hex[:8]}"
    for _ in range(20):  # a channel each, so the kernel spreads the connections
        export(ingest["grpc"], trace_request(service, spans=5))
    assert stored(service) == 100
