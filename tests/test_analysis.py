"""traces.analysis: trace summary, skew, self time, critical path, edges, RED and histograms.

Pure functions over hand-built traces: no database. Times below are written in ms from a
minute boundary T0; every expected number is exact to the ns.
"""

import math
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces.analysis import (
    CLIENT, CONSUMER, GROWTH, INTERNAL, PRODUCER, SERVER, STATUS_ERROR, STATUS_OK, STATUS_UNSET,
    Edge, RedPoint, SpanRecord, analyze, bucket_bounds, bucket_index, histogram, is_error, merge, quantile,
)

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
MINUTE = 28_333_333
T0 = MINUTE * 60_000_000_000
MS = 1_000_000


def sid(name):
    return name.encode().ljust(8, b"-")


def span(name, parent=None, *, service="web", start=0, end=0, kind=INTERNAL, status=STATUS_UNSET,
         attributes=None, links=()):
    """A span of TRACE; start and end in ms after T0; parent by name."""
    return SpanRecord(TRACE, sid(name), sid(parent) if parent else None, service, name, kind,
                      T0 + start * MS, T0 + end * MS, status, attributes or {}, links)


def link_to(name, trace=TRACE):
    return (trace.hex(), sid(name).hex())


def named(mapping):
    """{span id: ns} as {name: ns}, for readable comparisons."""
    return {key.rstrip(b"-").decode(): value for key, value in mapping.items()}


def ms(**values):
    return {name: value * MS for name, value in values.items()}


def assert_invariants(analysis, spans):
    assert sum(analysis.critical_ns.values()) == analysis.duration_ns
    assert all(value >= 0 for value in analysis.critical_ns.values())
    lengths = {s.span_id: max(s.end_ns, s.start_ns) - s.start_ns for s in spans}
    assert set(analysis.self_ns) == set(lengths)
    for span_id, self_time in analysis.self_ns.items():
        assert 0 <= self_time <= lengths[span_id]


# --- Fan-out, concurrency, children that outlive their parent ------------------------------


def fan_out():
    return [
        span("R", start=0, end=100),
        span("A", "R", start=10, end=60),
        span("B", "R", start=20, end=90),
        span("C", "R", start=30, end=50),
    ]


def test_the_child_that_finishes_last_is_on_the_critical_path_and_overlapped_ones_are_not():
    result = analyze(fan_out())
    # R waits for B from 90 to 100; B ran 20..90; before B started only A ran (10..20); R alone 0..10.
    assert named(result.critical_ns) == ms(R=20, B=70, A=10)


def test_self_time_subtracts_the_union_of_concurrent_children():
    result = analyze(fan_out())
    assert named(result.self_ns) == ms(R=20, A=50, B=70, C=20)  # R: children cover 10..90


def test_the_summary_of_a_fan_out():
    result = analyze(fan_out())
    assert (result.root_span_id, result.root_missing) == (sid("R"), False)
    assert (result.root_service, result.root_operation) == ("web", "R")
    assert (result.start_ns, result.end_ns, result.duration_ns) == (T0, T0 + 100 * MS, 100 * MS)
    assert (result.span_count, result.error_count, result.services) == (4, 0, ["web"])
    assert result.orphan_span_ids == [] and result.skew_ns == {} and result.edges == []
    assert_invariants(result, fan_out())


def test_sequential_children_are_all_on_the_critical_path():
    spans = [span("R", start=0, end=100), span("A", "R", start=10, end=40), span("B", "R", start=50, end=90)]
    result = analyze(spans)
    assert named(result.critical_ns) == ms(R=30, A=30, B=40)
    assert named(result.self_ns) == ms(R=30, A=30, B=40)


def test_a_child_that_outlives_its_parent_is_on_the_critical_path():
    spans = [
        span("R", start=0, end=100),
        span("X", "R", start=50, end=150),  # same service: a background task, never shifted
        span("Y", "X", start=120, end=140),
    ]
    result = analyze(spans)
    assert (result.duration_ns, result.skew_ns) == (150 * MS, {})
    assert named(result.critical_ns) == ms(R=50, X=80, Y=20)
    assert named(result.self_ns) == ms(R=50, X=80, Y=20)  # R's self time clips X to 50..100
    assert_invariants(result, spans)


def test_a_parent_fully_covered_by_its_child_stays_on_the_path_with_zero():
    spans = [span("R", start=0, end=100), span("A", "R", start=0, end=100)]
    result = analyze(spans)
    assert named(result.critical_ns) == ms(R=0, A=100)
    assert named(result.self_ns) == ms(R=0, A=100)


def test_children_ending_together_put_the_longer_one_on_the_path():
    spans = [span("R", start=0, end=100), span("A", "R", start=10, end=80), span("B", "R", start=40, end=80)]
    assert named(analyze(spans).critical_ns) == ms(R=30, A=70)


# --- Missing roots and orphans ---------------------------------------------------------------


def test_a_missing_root_picks_the_earliest_top_span_and_lists_orphans():
    spans = [
        span("A", "gone1", start=10, end=50),
        span("A1", "A", start=20, end=40),
        span("B", "gone2", service="api", start=5, end=30),
    ]
    result = analyze(spans)
    assert (result.root_span_id, result.root_missing) == (sid("B"), True)
    assert (result.root_service, result.root_operation) == ("api", "B")
    assert result.orphan_span_ids == [sid("B"), sid("A")]
    assert (result.start_ns, result.duration_ns) == (T0 + 5 * MS, 45 * MS)
    # The other top span (A) is walked as an asynchronous child of B.
    assert named(result.critical_ns) == ms(B=5, A=20, A1=20)
    assert_invariants(result, spans)


def test_a_true_root_wins_over_earlier_orphans():
    spans = [
        span("O", "gone", start=-10, end=30),
        span("R", start=0, end=100),
        span("O2", "gone", start=80, end=130),
    ]
    result = analyze(spans)
    assert (result.root_span_id, result.root_missing) == (sid("R"), False)
    assert result.orphan_span_ids == [sid("O"), sid("O2")]
    assert result.duration_ns == 140 * MS
    # O2 ran last (80..130); R alone 30..80; O ran -10..30 and is the deepest span then.
    assert named(result.critical_ns) == ms(R=50, O2=50, O=40)
    assert_invariants(result, spans)


def test_of_several_true_roots_the_earliest_is_the_root():
    spans = [span("late", start=50, end=60), span("early", start=0, end=10)]
    result = analyze(spans)
    assert (result.root_span_id, result.root_missing) == (sid("early"), False)
    # Nothing runs from 10 to 50: the idle time goes to the span that ran after it.
    assert named(result.critical_ns) == ms(early=10, late=50)


def test_parent_cycles_are_cut_at_their_earliest_span():
    spans = [span("A", "B", start=0, end=10), span("B", "A", start=5, end=20), span("S", "S", start=30, end=40)]
    result = analyze(spans)
    assert (result.root_span_id, result.root_missing) == (sid("A"), True)
    assert result.orphan_span_ids == []  # their parents are in the trace
    assert result.span_count == 3
    assert_invariants(result, spans)


def test_a_repeated_span_id_counts_once_and_the_first_record_wins():
    spans = [span("R", start=0, end=10), span("R", start=0, end=99)]
    result = analyze(spans)
    assert (result.span_count, result.duration_ns, len(result.red)) == (1, 10 * MS, 1)


def test_a_span_ending_before_it_starts_lasts_zero():
    result = analyze([span("R", start=0, end=100), span("A", "R", start=50, end=40)])
    assert named(result.self_ns) == ms(R=100, A=0)
    assert result.red[1].duration_ns == 0


def test_a_trace_without_spans_is_refused():
    with pytest.raises(ValueError):
        analyze([])


# --- Clock skew -------------------------------------------------------------------------------


def skewed():
    """api's clock is 50 ms behind web's: its server span appears to start before the call."""
    return [
        span("R", service="web", kind=CLIENT, start=0, end=100),
        span("S", "R", service="api", kind=SERVER, start=-30, end=30),
        span("S1", "S", service="api", kind=CLIENT, start=-20, end=0),
        span("G", "S1", service="auth", kind=SERVER, start=-15, end=-5),
    ]


def test_a_skewed_child_and_its_subtree_are_centred_in_the_parent():
    result = analyze(skewed())
    assert named(result.skew_ns) == ms(S=50)  # S1 and G move with S; G then fits in S1
    assert [(p.operation, p.minute, p.duration_ns) for p in result.red] == [
        ("R", MINUTE, 100 * MS), ("S", MINUTE, 60 * MS), ("S1", MINUTE, 20 * MS), ("G", MINUTE, 10 * MS),
    ]  # S started in the previous minute by api's clock
    assert (result.start_ns, result.duration_ns) == (T0, 100 * MS)


def test_critical_path_and_self_time_use_the_adjusted_times():
    result = analyze(skewed())
    # Adjusted: S 20..80, S1 30..50, G 35..45.
    assert named(result.critical_ns) == ms(R=40, S=40, S1=10, G=10)
    assert named(result.self_ns) == ms(R=40, S=40, S1=10, G=10)
    assert_invariants(result, skewed())


def test_edges_use_the_adjusted_times():
    result = analyze(skewed())
    assert result.edges == [
        Edge("web", "api", "service", MINUTE, 100 * MS, False, sid("R")),
        Edge("api", "auth", "service", MINUTE, 20 * MS, False, sid("S1")),
    ]


def test_the_shift_is_rounded_down_to_whole_ns():
    spans = [
        SpanRecord(TRACE, sid("R"), None, "web", "R", CLIENT, T0, T0 + 101, 0, {}),
        SpanRecord(TRACE, sid("S"), sid("R"), "api", "S", SERVER, T0 + 60, T0 + 140, 0, {}),
    ]
    result = analyze(spans)
    assert named(result.skew_ns) == {"S": (101 - 80) // 2 - 60}  # ends after its parent: -50
    assert result.red[1].duration_ns == 80 and result.duration_ns == 101


def test_a_child_longer_than_its_parent_is_aligned_at_the_start():
    spans = [span("R", kind=CLIENT, start=0, end=10), span("S", "R", service="api", kind=SERVER, start=-5, end=25)]
    result = analyze(spans)
    assert named(result.skew_ns) == ms(S=5)
    assert (result.duration_ns, named(result.critical_ns)) == (30 * MS, ms(R=0, S=30))


def test_children_of_the_same_service_are_never_shifted():
    spans = [span("R", start=0, end=10), span("A", "R", start=-5, end=20)]
    result = analyze(spans)
    assert result.skew_ns == {}
    assert (result.start_ns, result.duration_ns) == (T0 - 5 * MS, 25 * MS)
    assert named(result.critical_ns) == ms(R=0, A=25)
    assert_invariants(result, spans)


def test_a_consumer_may_end_after_its_parent_but_not_start_before_it():
    late = [span("P", kind=PRODUCER, start=0, end=10), span("C", "P", service="w", kind=CONSUMER, start=5, end=50)]
    early = [span("P", kind=PRODUCER, start=0, end=10), span("C", "P", service="w", kind=CONSUMER, start=-4, end=2)]
    assert analyze(late).skew_ns == {}
    assert named(analyze(early).skew_ns) == ms(C=6)  # centred: 2..8


def test_a_span_fitting_in_its_parent_is_not_shifted():
    spans = [span("R", kind=CLIENT, start=0, end=100), span("S", "R", service="api", kind=SERVER, start=0, end=100)]
    assert analyze(spans).skew_ns == {}


# --- Producer and consumer ---------------------------------------------------------------------


def queue():
    kafka = {"messaging.system": "kafka", "messaging.destination.name": "orders"}
    return [
        span("R", kind=SERVER, start=0, end=40),
        span("P", "R", kind=PRODUCER, start=10, end=20, attributes=kafka),
        span("C", service="worker", kind=CONSUMER, start=60, end=100, links=(link_to("P"),)),
    ]


def test_a_consumer_linked_to_its_producer_draws_a_service_edge():
    result = analyze(queue())
    assert result.edges == [Edge("web", "worker", "service", MINUTE, 10 * MS, False, sid("P"))]
    assert (result.root_span_id, result.root_missing, result.orphan_span_ids) == (sid("R"), False, [])


def test_the_critical_path_includes_the_asynchronous_consumer():
    result = analyze(queue())
    assert result.duration_ns == 100 * MS and result.skew_ns == {}
    # C ran 60..100; 40..60 nobody ran (the message waited): charged to C, which was waited for;
    # 20..40 R still ran; P 10..20; R 0..10.
    assert named(result.critical_ns) == ms(R=30, P=10, C=60)
    assert named(result.self_ns) == ms(R=30, P=10, C=40)
    assert_invariants(result, queue())


def test_a_consumer_with_its_own_parent_still_draws_the_edge_through_its_link():
    spans = queue()[:2] + [
        span("poll", "R", service="worker", start=25, end=35),
        span("C", "poll", service="worker", kind=CONSUMER, start=30, end=34, links=(link_to("P"),)),
    ]
    assert analyze(spans).edges == [Edge("web", "worker", "service", MINUTE, 10 * MS, False, sid("P"))]


def test_a_consumer_that_is_the_producers_child_draws_the_edge():
    spans = queue()[:2] + [span("C", "P", service="worker", kind=CONSUMER, start=15, end=30, status=STATUS_ERROR)]
    assert analyze(spans).edges == [Edge("web", "worker", "service", MINUTE, 10 * MS, True, sid("P"))]


def test_a_producer_without_a_consumer_in_the_trace_calls_the_broker():
    result = analyze(queue()[:2])
    assert result.edges == [Edge("web", "kafka orders", "messaging", MINUTE, 10 * MS, False, sid("P"))]


def test_links_as_stored_dicts_and_malformed_links_are_accepted():
    stored = {"trace_id": TRACE.hex(), "span_id": sid("P").hex(), "trace_state": "", "attributes": {}}
    spans = queue()[:2] + [span("C", service="worker", kind=CONSUMER, start=60, end=100,
                                links=(("zz", "not hex"), (TRACE.hex(),), stored))]
    result = analyze(spans)
    assert result.edges[0].child == "worker" and result.duration_ns == 100 * MS


def test_a_link_to_another_trace_does_not_attach():
    other = bytes(15) + b"\x01"
    spans = [span("R", start=0, end=10), span("C", service="w", kind=CONSUMER, start=20, end=30,
                                              links=(link_to("R", other),))]
    result = analyze(spans)
    assert named(result.critical_ns) == ms(R=10, C=20)  # a second true root, walked as async
    assert result.root_span_id == sid("R")


def test_a_link_that_would_make_a_cycle_is_ignored():
    spans = [span("R", start=0, end=100, links=(link_to("A"),)), span("A", "R", start=10, end=20)]
    result = analyze(spans)
    assert (result.root_span_id, result.root_missing) == (sid("R"), False)
    assert named(result.critical_ns) == ms(R=90, A=10)


# --- Uninstrumented callees ---------------------------------------------------------------------


def call(attributes, status=STATUS_UNSET, kind=CLIENT):
    return [span("R", kind=SERVER, start=0, end=50),
            span("Q", "R", kind=kind, start=10, end=30, status=status, attributes=attributes)]


@pytest.mark.parametrize("attributes, child, child_type", [
    ({"db.system": "postgresql", "db.name": "orders"}, "postgresql orders", "database"),
    ({"db.system": "redis", "server.address": "cache"}, "redis", "database"),
    ({"db.system.name": "mysql", "db.namespace": "shop"}, "mysql shop", "database"),
    ({"messaging.system": "rabbitmq", "messaging.destination": "jobs"}, "rabbitmq jobs", "messaging"),
    ({"messaging.system": "kafka"}, "kafka", "messaging"),
    ({"peer.service": "payments", "server.address": "10.0.0.1"}, "payments", "external"),
    ({"server.address": "api.stripe.com"}, "api.stripe.com", "external"),
    ({"net.peer.name": "legacy.example"}, "legacy.example", "external"),
])
def test_a_call_to_something_uninstrumented_draws_a_virtual_node(attributes, child, child_type):
    assert analyze(call(attributes)).edges == [Edge("web", child, child_type, MINUTE, 20 * MS, False, sid("Q"))]


def test_a_failed_database_call_is_an_error_edge():
    assert analyze(call({"db.system": "postgresql"}, status=STATUS_ERROR)).edges[0].error is True


def test_a_call_naming_nothing_draws_no_edge():
    assert analyze(call({"db.system": 5, "http.request.method": "GET"})).edges == []


def test_a_clients_own_internal_children_do_not_hide_the_database():
    spans = call({"db.system": "postgresql"}) + [span("connect", "Q", start=10, end=12)]
    assert [e.child for e in analyze(spans).edges] == ["postgresql"]


def test_internal_spans_with_database_attributes_draw_no_edge():
    assert analyze(call({"db.system": "postgresql"}, kind=INTERNAL)).edges == []


# --- Service calls and errors -------------------------------------------------------------------


def service_call(client_status=STATUS_UNSET, server_status=STATUS_UNSET, server_attributes=None):
    return [
        span("C", service="web", kind=CLIENT, start=0, end=100, status=client_status,
             attributes={"peer.service": "ignored: the callee is instrumented"}),
        span("S", "C", service="api", kind=SERVER, start=10, end=90, status=server_status,
             attributes=server_attributes),
    ]


@pytest.mark.parametrize("client_status, server_status, error", [
    (STATUS_UNSET, STATUS_UNSET, False),
    (STATUS_UNSET, STATUS_ERROR, True),
    (STATUS_ERROR, STATUS_OK, True),
])
def test_a_client_server_pair_across_services_is_a_service_edge(client_status, server_status, error):
    result = analyze(service_call(client_status, server_status))
    assert result.edges == [Edge("web", "api", "service", MINUTE, 100 * MS, error, sid("C"))]
    assert result.error_count == int(client_status == STATUS_ERROR) + int(server_status == STATUS_ERROR)
    assert result.services == ["api", "web"]


def test_a_server_answering_5xx_makes_the_edge_an_error():
    result = analyze(service_call(server_attributes={"http.response.status_code": 503}))
    assert result.edges[0].error is True and result.error_count == 1
    assert [p.error for p in result.red] == [False, True]


def test_a_call_within_one_service_draws_no_edge():
    spans = service_call()
    spans[1] = span("S", "C", service="web", kind=SERVER, start=10, end=90)
    assert analyze(spans).edges == []


def test_one_edge_per_called_service():
    spans = service_call() + [span("S2", "C", service="api", kind=SERVER, start=20, end=30, status=STATUS_ERROR),
                              span("S3", "C", service="auth", kind=SERVER, start=30, end=40)]
    assert [(e.child, e.error) for e in analyze(spans).edges] == [("api", True), ("auth", False)]


def record(kind, status=STATUS_UNSET, **attributes):
    return SpanRecord(TRACE, sid("x"), None, "svc", "op", kind, T0, T0 + 1, status, attributes)


@pytest.mark.parametrize("span_record, error", [
    (record(SERVER, **{"http.response.status_code": 500}), True),
    (record(SERVER, **{"http.status_code": 503}), True),  # legacy attribute
    (record(SERVER, **{"http.response.status_code": "502"}), True),
    (record(SERVER, **{"http.response.status_code": 404}), False),
    (record(SERVER, STATUS_OK, **{"http.response.status_code": 500}), False),  # explicit OK wins
    (record(SERVER, **{"http.response.status_code": True}), False),
    (record(CLIENT, **{"http.response.status_code": 500}), False),  # the caller decides
    (record(CLIENT, **{"http.status_code": 404}), False),
    (record(CLIENT, STATUS_ERROR), True),
    (record(INTERNAL, STATUS_ERROR), True),
    (record(INTERNAL), False),
])
def test_is_error(span_record, error):
    assert is_error(span_record) is error


def test_red_has_one_point_per_span_in_start_order():
    result = analyze(service_call(server_status=STATUS_ERROR))
    assert result.red == [
        RedPoint(MINUTE, "web", "C", CLIENT, 100 * MS, False, entry=True),
        RedPoint(MINUTE, "api", "S", SERVER, 80 * MS, True, entry=True),
    ]


def test_a_span_is_an_entry_where_a_request_enters_its_service():
    spans = service_call() + [
        span("Q", "S", service="api", kind=CLIENT, start=20, end=30),  # api calls out: not an entry
        span("O", "missing", service="api", start=40, end=50),  # parent never seen: the top of what we have
    ]
    entries = {point.operation: point.entry for point in analyze(spans).red}
    assert entries == {"C": True, "S": True, "Q": False, "O": True}


# --- Random trees --------------------------------------------------------------------------------


@st.composite
def random_traces(draw):
    """Random spans: parents in the trace, missing, self or cyclic; links; skew; bad times."""
    count = draw(st.integers(1, 30))
    names = [f"s{i}" for i in range(count)]
    spans = []
    for i, name in enumerate(names):
        parent = draw(st.one_of(st.none(), st.sampled_from(names), st.just("gone")))
        start = draw(st.integers(-1000, 1000))
        end = start + draw(st.integers(-5, 800))
        links = tuple(draw(st.lists(st.sampled_from([link_to(n) for n in names] + [("bad", "link")]), max_size=2)))
        attributes = draw(st.sampled_from([{}, {"db.system": "redis"}, {"http.response.status_code": 500},
                                           {"messaging.system": "kafka"}, {"peer.service": "x"}]))
        spans.append(SpanRecord(TRACE, sid(name), sid(parent) if parent else None,
                                draw(st.sampled_from(["a", "b", "c"])), name, draw(st.integers(0, 5)),
                                start, end, draw(st.integers(0, 2)), attributes, links))
    return spans


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_traces(), st.randoms())
def test_invariants_hold_on_random_traces_whatever_the_span_order(spans, rng):
    result = analyze(spans)
    assert_invariants(result, spans)
    assert result.span_count == len(spans) == len(result.red)
    assert result.root_span_id in {s.span_id for s in spans}
    assert set(result.critical_ns) <= set(result.self_ns)
    shuffled = list(spans)
    rng.shuffle(shuffled)
    assert analyze(shuffled) == result


@st.composite
def nested_trees(draw):
    """One service, every child inside its parent: no skew, no idle time."""
    spans = [span("s0", start=0, end=draw(st.integers(0, 1000)))]
    for i in range(1, draw(st.integers(1, 40))):
        parent = draw(st.sampled_from(spans))
        low, high = parent.start_ns - T0, parent.end_ns - T0
        start = draw(st.integers(low // MS, high // MS))
        end = draw(st.integers(start, high // MS))
        spans.append(span(f"s{i}", parent.name, start=start, end=end))
    return spans


@settings(max_examples=300, deadline=None)
@given(nested_trees())
def test_on_nested_trees_a_span_books_at_most_its_self_time_on_the_path(spans):
    result = analyze(spans)
    assert_invariants(result, spans)
    for span_id, booked in result.critical_ns.items():
        assert booked <= result.self_ns[span_id]


# --- Size ----------------------------------------------------------------------------------------


def test_a_3000_deep_chain_of_services_needs_no_recursion():
    spans = [SpanRecord(TRACE, i.to_bytes(8, "big"), (i - 1).to_bytes(8, "big") if i > 1 else None,
                        f"svc{i % 2}", "op", SERVER, T0 - i, T0 + 10_000 - 2 * i, 0, {})
             for i in range(1, 3001)]  # each child starts 1 ns before its parent: all shifted by 1
    result = analyze(spans)
    assert set(result.skew_ns.values()) == {1} and len(result.skew_ns) == 2999
    assert_invariants(result, spans)


def test_a_3000_deep_chain_of_async_work_needs_no_recursion():
    spans = [SpanRecord(TRACE, i.to_bytes(8, "big"), (i - 1).to_bytes(8, "big") if i > 1 else None,
                        "svc", "op", INTERNAL, T0 + 10 * i, T0 + 10 * i + 5, 0, {}) for i in range(1, 3001)]
    result = analyze(spans)
    assert result.duration_ns == 10 * 2999 + 5
    # Each span runs 5 ns and is waited for 5 ns before it starts; the root only runs.
    assert result.critical_ns[(1).to_bytes(8, "big")] == 5
    assert set(result.critical_ns.values()) == {5, 10}
    assert_invariants(result, spans)


def test_a_5000_span_trace_is_analyzed_quickly():
    rng = random.Random(5)
    spans = [span("root", start=0, end=10_000)]
    for i in range(1, 5000):
        parent = spans[rng.randrange(len(spans))]
        start = rng.randint(parent.start_ns - T0, parent.end_ns - T0) // MS + rng.randint(-3, 3)  # some skew
        spans.append(span(f"{i:x}", parent.name, service=f"svc{i % 7}", kind=rng.choice([CLIENT, SERVER]),
                          start=start, end=start + rng.randint(0, 500)))
    began = time.perf_counter()
    result = analyze(spans)
    assert time.perf_counter() - began < 2
    assert_invariants(result, spans)


# --- Histograms ----------------------------------------------------------------------------------


def exact_quantile(values, q):
    """Nearest rank over the sorted sample."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def lognormal_sample(seed, size=10_000):
    rng = random.Random(seed)
    return [int(rng.lognormvariate(math.log(5 * MS), 1.2)) for _ in range(size)]


def test_bucket_zero_holds_durations_under_a_microsecond():
    assert [bucket_index(d) for d in (-5, 0, 999, 1000, 1079, 1080)] == [0, 0, 0, 1, 1, 2]
    assert bucket_bounds(0) == (0.0, 1000.0)
    assert bucket_bounds(1) == (1000.0, 1000.0 * GROWTH)


def test_buckets_are_contiguous():
    for index in range(0, 400):
        assert bucket_bounds(index)[1] == pytest.approx(bucket_bounds(index + 1)[0], rel=1e-12)


@given(st.integers(1000, 10**13))
def test_every_duration_is_inside_its_bucket_and_estimated_within_5_percent(duration):
    low, high = bucket_bounds(bucket_index(duration))
    assert low <= duration < high
    assert abs(quantile(histogram([duration]), 0.5) - duration) <= 0.05 * duration


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_of_10000_latencies_are_within_5_percent(seed):
    sample = lognormal_sample(seed)
    hist = histogram(sample)
    assert sum(hist.values()) == 10_000
    for q in (0.5, 0.95, 0.99):
        exact = exact_quantile(sample, q)
        assert abs(quantile(hist, q) - exact) <= 0.05 * exact


def test_merged_histograms_equal_the_whole_and_keep_percentiles_within_5_percent():
    sample = lognormal_sample(7)
    parts = [histogram(sample[:1000]), histogram(sample[1000:6500]), histogram(sample[6500:])]
    merged = merge(*parts)
    assert merged == histogram(sample)
    for q in (0.5, 0.95, 0.99):
        exact = exact_quantile(sample, q)
        assert abs(quantile(merged, q) - exact) <= 0.05 * exact


def test_merge_accepts_keys_read_back_from_json():
    assert merge({"3": 2}, {3: 1, 7: 4}) == {3: 3, 7: 4}


def test_quantile_edges():
    assert quantile({}, 0.5) is None
    assert quantile({4: 0}, 0.5) is None
    assert quantile({0: 3}, 0.99) == 500.0
    hist = histogram([1000, 2_000_000])
    assert quantile(hist, 0) == quantile(hist, 0.5) == pytest.approx(1000 * GROWTH**0.5)
    assert quantile(hist, 1) == pytest.approx(1000 * GROWTH ** (bucket_index(2_000_000) - 0.5))
    with pytest.raises(ValueError):
        quantile(hist, 1.5)


def test_histograms_are_sparse():
    assert histogram([1500, 1500, 10**9]) == {bucket_index(1500): 2, bucket_index(10**9): 1}
