"""What one trace says, computed from its spans: a pure module, no Django, no database.

analyze() takes the spans of one trace as SpanRecords and returns an Analysis: the trace
summary, clock-skew corrections, self time and the critical path of every span, the
service-graph edges and the spans' contributions to the per-minute RED rollups. The
latency histogram helpers (bucket_index ... quantile) are the ones the rollups store.

Decisions the callers may rely on:
- A span id that occurs twice counts once: the first record wins (ingest is idempotent).
- A span whose end is before its start is taken as lasting 0 ns from its start.
- Every result after the skew step uses the skew-adjusted times.
- A trace's root is never shifted; the offsets in skew_ns are the shift decided at that
  span, which also moves its whole subtree, so a span's total shift is the sum of the
  offsets of itself and its ancestors.
- The critical path books every ns of the trace to exactly one span, so critical_ns
  sums to duration_ns; see _critical_path and _PathCharger for who gets which ns.
- Parent pointers that form a cycle (only a broken or hostile exporter sends them) are
  cut at the earliest span of the cycle, which then heads its own subtree.
"""

import math
from dataclasses import dataclass

UNSPECIFIED, INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 0, 1, 2, 3, 4, 5  # OTLP span kinds
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
NS_PER_MINUTE = 60_000_000_000


@dataclass(frozen=True)
class SpanRecord:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    service: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict
    links: tuple = ()  # (trace_id_hex, span_id_hex) pairs; stored link dicts are accepted too


@dataclass(frozen=True)
class Edge:
    """One call from a service (its CLIENT or PRODUCER span) to another node of the graph."""

    parent: str
    child: str
    child_type: str  # "service" | "database" | "messaging" | "external"
    minute: int
    duration_ns: int
    error: bool
    span_id: bytes


@dataclass(frozen=True)
class RedPoint:
    minute: int
    service: str
    operation: str
    kind: int
    duration_ns: int
    error: bool
    entry: bool = False  # where a request enters the service: no parent, or a parent in another service


@dataclass
class Analysis:
    root_span_id: bytes
    root_missing: bool
    root_service: str
    root_operation: str
    start_ns: int
    end_ns: int
    duration_ns: int
    span_count: int
    error_count: int
    services: list[str]  # sorted
    orphan_span_ids: list[bytes]  # parent id given, parent not in the trace; by start
    skew_ns: dict[bytes, int]  # shift decided at a span (its subtree moves with it); non-zero only
    self_ns: dict[bytes, int]  # every span
    critical_ns: dict[bytes, int]  # spans the critical path walked through -> ns booked (may be 0)
    edges: list[Edge]
    red: list[RedPoint]


# --- Errors ----------------------------------------------------------------------------


def is_error(span) -> bool:
    """Status ERROR, or a SERVER span left UNSET that answered HTTP 5xx.

    OTel semantics: a server that answered 5xx failed; a client that received 4xx/5xx did
    not fail by itself (its caller decides), and an explicit status OK overrides the code.
    """
    if span.status_code == STATUS_ERROR:
        return True
    if span.status_code != STATUS_UNSET or span.kind != SERVER:
        return False
    code = _http_status(span.attributes or {})
    return code is not None and code >= 500


def _http_status(attributes):
    value = attributes.get("http.response.status_code", attributes.get("http.status_code"))
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and value.strip().isdigit():  # some exporters send it as text
        return int(value)
    return None


# --- Latency histograms ------------------------------------------------------------------
# Bucket 0 holds durations under 1 µs; bucket i >= 1 holds [1 µs * GROWTH**(i-1), 1 µs * GROWTH**i).
# Reporting a bucket's geometric middle is off by at most sqrt(GROWTH) - 1 (3.9%) from any
# value in it. Histograms are sparse {bucket: count} dicts; keys read back from JSON as
# text are accepted by merge() and quantile().

GROWTH = 1.08
_LOG_GROWTH = math.log(GROWTH)
_US = 1000.0  # ns


def bucket_index(duration_ns: int) -> int:
    if duration_ns < _US:
        return 0
    index = int(math.log(duration_ns / _US) / _LOG_GROWTH) + 1
    low, high = bucket_bounds(index)
    if duration_ns < low:  # floating point may land a value on a bound one bucket off
        index -= 1
    elif duration_ns >= high:
        index += 1
    return index


def bucket_bounds(index: int) -> tuple[float, float]:
    """[low, high) of a bucket, in ns."""
    if index < 0:
        raise ValueError(f"no bucket {index}")
    if index == 0:
        return 0.0, _US
    return _US * GROWTH ** (index - 1), _US * GROWTH**index


def _bucket_value(index):
    """The value a bucket stands for: its geometric middle (500 ns for the sub-µs bucket)."""
    return _US / 2 if index == 0 else _US * GROWTH ** (index - 0.5)


def histogram(durations_ns) -> dict[int, int]:
    counts = {}
    for duration in durations_ns:
        index = bucket_index(duration)
        counts[index] = counts.get(index, 0) + 1
    return counts


def merge(*hists) -> dict[int, int]:
    total = {}
    for hist in hists:
        for index, count in hist.items():
            index = int(index)
            total[index] = total.get(index, 0) + count
    return total


def quantile(hist: dict[int, int], q: float) -> float | None:
    """Nearest-rank quantile in ns: the value of the bucket holding the ceil(q*n)-th duration."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    buckets = sorted((int(index), count) for index, count in hist.items() if count > 0)
    total = sum(count for _, count in buckets)
    if total == 0:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for index, count in buckets:
        seen += count
        if seen >= rank:
            return _bucket_value(index)
    return _bucket_value(buckets[-1][0])


# --- The span tree -------------------------------------------------------------------------


@dataclass
class _Tree:
    spans: list  # unique SpanRecords; spans are referred to by their position here
    parent: list  # position of the tree parent, or None for the root of a subtree
    via_link: list  # True where the parent is a linked span (asynchronous, FOLLOWS_FROM)
    children: list
    roots: list
    orphans: list  # parent id given, parent not in the trace


def _has_parent_id(span):
    return bool(span.parent_span_id) and any(span.parent_span_id)


def _unique(spans):
    seen, unique = set(), []
    for span in spans:
        if span.span_id not in seen:
            seen.add(span.span_id)
            unique.append(span)
    return unique


def _link_target(link, trace_id, index):
    """Position of the span a link points to, when that span is in this trace."""
    if isinstance(link, dict):
        link = (link.get("trace_id"), link.get("span_id"))
    try:
        linked_trace, linked_span = bytes.fromhex(link[0]), bytes.fromhex(link[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None  # links are untrusted input: a malformed one is ignored
    return index.get(linked_span) if linked_trace == trace_id else None


def _is_ancestor(candidate, node, parent):
    """Whether candidate is node or above it; bounded, as parent pointers may still cycle."""
    for _ in range(len(parent) + 1):
        if node is None:
            return False
        if node == candidate:
            return True
        node = parent[node]
    return False


def _attach_links(spans, parent, index):
    """Hang each span without a parent under the first span of this trace it links to."""
    via_link = [False] * len(spans)
    loose = sorted((i for i, p in enumerate(parent) if p is None), key=lambda i: _order_key(spans, i))
    for i in loose:
        for link in spans[i].links or ():
            target = _link_target(link, spans[i].trace_id, index)
            if target is not None and not _is_ancestor(i, target, parent):  # never make a cycle
                parent[i], via_link[i] = target, True
                break
    return via_link


def _children_of(parent):
    children = [[] for _ in parent]
    for i, p in enumerate(parent):
        if p is not None:
            children[p].append(i)
    return children


def _mark_subtree(start, children, reached):
    stack = [start]
    while stack:
        node = stack.pop()
        reached[node] = True
        stack.extend(children[node])


def _cycle_through(node, parent):
    """The spans of the parent cycle that node (unreachable from any root) leads into."""
    seen = []
    positions = {}
    while node not in positions:
        positions[node] = len(seen)
        seen.append(node)
        node = parent[node]
    return seen[positions[node]:]


def _break_cycles(spans, parent, children):
    """Cut every parent cycle at its earliest span, so every span hangs under some root.

    1. Mark what the real roots reach.
    2. From any span left unmarked, follow parents until a span repeats: that is a cycle.
    3. Detach the cycle's earliest span (it becomes a root) and mark its subtree; repeat.
    """
    reached = [False] * len(spans)
    for i, p in enumerate(parent):
        if p is None:
            _mark_subtree(i, children, reached)
    for i in sorted(range(len(spans)), key=lambda i: _order_key(spans, i)):
        if not reached[i]:
            cut = min(_cycle_through(i, parent), key=lambda j: _order_key(spans, j))
            children[parent[cut]].remove(cut)
            parent[cut] = None
            _mark_subtree(cut, children, reached)


def _order_key(spans, i, starts=None):
    return (spans[i].start_ns if starts is None else starts[i], spans[i].span_id)


def _build_tree(records):
    """Steps: 1. keep each span id once; 2. parent = the parent span when it is in the trace;
    3. a span still without parent hangs under a span of this trace it links to; 4. cut cycles."""
    spans = _unique(records)
    index = {span.span_id: i for i, span in enumerate(spans)}
    parent = [index.get(span.parent_span_id) if _has_parent_id(span) else None for span in spans]
    orphans = [i for i, span in enumerate(spans) if _has_parent_id(span) and span.parent_span_id not in index]
    via_link = _attach_links(spans, parent, index)
    children = _children_of(parent)
    _break_cycles(spans, parent, children)
    roots = [i for i, p in enumerate(parent) if p is None]
    return _Tree(spans, parent, via_link, children, roots, orphans), index


def _choose_root(tree):
    """The earliest span without any parent id; if none is left, the earliest top span (root missing).

    A child is never chosen over its own ancestor, so "earliest span" of the issue is read as
    the earliest of the spans that head a subtree.
    """
    true_roots = [r for r in tree.roots if not _has_parent_id(tree.spans[r])]
    root = min(true_roots or tree.roots, key=lambda i: _order_key(tree.spans, i))
    return root, not true_roots


def _preorder(children, roots):
    order, stack = [], list(reversed(roots))
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed(children[node]))
    return order


# --- Clock skew ----------------------------------------------------------------------------


def _skew_delta(child, parent, is_async):
    """Shift that centres child (start, end) in parent (start, end), or 0 if it fits."""
    if child[0] >= parent[0] and (child[1] <= parent[1] or is_async):
        return 0
    child_length, parent_length = child[1] - child[0], parent[1] - parent[0]
    if child_length > parent_length:  # cannot fit: align the starts
        return parent[0] - child[0]
    return parent[0] + (parent_length - child_length) // 2 - child[0]


def _adjust_skew(tree, starts, ends):
    """Move children of another service (another host's clock) into their parents, like Jaeger.

    1. Walk the tree top-down, so a parent's times are adjusted before its children are seen.
    2. A child inherits its parent's total shift.
    3. If it belongs to another service and starts before the parent, or ends after it
       without being asynchronous (a CONSUMER, or hung under a linked span), centre it in
       the parent; the extra shift is reported and carried down to its subtree.
    Returns the adjusted starts and ends and {position: shift decided there}.
    """
    spans, total, decided = tree.spans, [0] * len(tree.spans), {}
    for i in _preorder(tree.children, tree.roots):
        p = tree.parent[i]
        if p is None or spans[i].service == spans[p].service:
            total[i] = total[p] if p is not None else 0
            continue
        is_async = tree.via_link[i] or spans[i].kind == CONSUMER
        child = (starts[i] + total[p], ends[i] + total[p])
        delta = _skew_delta(child, (starts[p] + total[p], ends[p] + total[p]), is_async)
        total[i] = total[p] + delta
        if delta:
            decided[i] = delta
    return [s + t for s, t in zip(starts, total)], [e + t for e, t in zip(ends, total)], decided


# --- Self time -----------------------------------------------------------------------------


def _union_length(intervals):
    covered, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            covered += end - start
            reach = end
        elif end > reach:
            covered += end - reach
            reach = end
    return covered


def _self_times(children, starts, ends):
    """A span's duration less the union of its children's intervals clipped to its own."""
    result = []
    for i, kids in enumerate(children):
        clipped = [(max(starts[k], starts[i]), min(ends[k], ends[i])) for k in kids]
        result.append(ends[i] - starts[i] - _union_length([c for c in clipped if c[0] < c[1]]))
    return result


# --- Critical path -------------------------------------------------------------------------


def _effective_bounds(order, children, starts, ends):
    """For each span, (min start, max end) over itself and all its descendants."""
    low, high = list(starts), list(ends)
    for node in reversed(order):  # children before parents
        for kid in children[node]:
            low[node] = min(low[node], low[kid])
            high[node] = max(high[node], high[kid])
    return low, high


class _PathCharger:
    """Books time on the critical path to spans, given the current path root -> span.

    Each instant goes to the deepest span on the path whose own [start, end] holds it.
    An instant no span on the path holds is idle (a message waiting in a queue, a gap
    between async work): it goes to the span booked just after it in time, the one being
    waited for (time is booked from the end backwards, so that is the previous booking).
    """

    def __init__(self, starts, ends):
        self.starts, self.ends = starts, ends
        self.path, self.max_end, self.min_start = [], [], []  # prefix extremes, for early exit
        self.totals, self.after = {}, None

    def push(self, node):
        self.path.append(node)
        self.max_end.append(max(self.ends[node], self.max_end[-1] if self.max_end else self.ends[node]))
        self.min_start.append(min(self.starts[node], self.min_start[-1] if self.min_start else self.starts[node]))
        self.totals.setdefault(node, 0)

    def pop(self):
        self.path.pop()
        self.max_end.pop()
        self.min_start.pop()

    def charge(self, low, high):
        for start, end, owner in self._split(low, high):
            if owner is None:
                owner = self.after if self.after is not None else self.path[-1]
            self.totals[owner] += end - start
            self.after = owner

    def _split(self, low, high):
        """(low, high] cut into (start, end, owner) pieces, latest first; owner None when idle."""
        pieces, owned = ([(low, high)] if high > low else []), []
        for depth in range(len(self.path) - 1, -1, -1):
            if all(b <= self.min_start[depth] or a >= self.max_end[depth] for a, b in pieces):
                break  # no span at this depth or above is running in what is left
            node = self.path[depth]
            pieces = self._take(pieces, self.starts[node], self.ends[node], node, owned)
        owned.extend((a, b, None) for a, b in pieces)
        return sorted(owned, reverse=True)

    @staticmethod
    def _take(pieces, start, end, node, owned):
        rest = []
        for a, b in pieces:
            x, y = max(a, start), min(b, end)
            if x >= y:
                rest.append((a, b))
                continue
            owned.append((x, y, node))
            rest.extend(piece for piece in ((a, x), (y, b)) if piece[0] < piece[1])
        return rest


def _critical_path(root, children, starts, ends, ids):
    """The chain of work that set the end-to-end duration, walked back from the trace end.

    1. Give each span an effective interval: from the earliest start to the latest end of
       itself and its descendants, so children that outlive their parent (and async
       consumers) can be on the path.
    2. Order each span's children by effective end, latest first (ties: the longer one,
       then the span id, so the result does not depend on the order spans arrived in).
    3. Start at the root with the cursor at its effective end (the end of the trace).
    4. At a span, take the next child whose effective start is before the cursor (the
       child that finished last; children starting at or after the cursor ran in
       parallel with what is already on the path and are skipped for good). Book the gap
       between the child's effective end, capped at the cursor, and the cursor; descend
       into the child with the cursor at that capped end.
    5. A span with no child left books (its start, cursor] and hands the cursor back to
       its parent at min(cursor, its start), which is its effective start.
    Booking is done by _PathCharger, so the path tiles the trace: the bookings sum to the
    effective interval of the root, which is the whole trace.
    Returns {position: ns booked}; spans walked through with nothing booked have 0.
    """
    low, high = _effective_bounds(_preorder(children, [root]), children, starts, ends)
    ordered = [sorted(kids, key=lambda k: (-high[k], low[k], ids[k])) for kids in children]
    charger = _PathCharger(starts, ends)
    charger.push(root)
    frames = [[root, high[root], 0]]  # span, cursor, next child to look at
    while frames:
        frame = frames[-1]
        node, cursor, pos = frame
        kids = ordered[node]
        while pos < len(kids) and low[kids[pos]] >= cursor:
            pos += 1
        frame[2] = pos + 1
        if pos < len(kids):
            child = kids[pos]
            top = min(high[child], cursor)
            charger.charge(top, cursor)
            charger.push(child)
            frames.append([child, top, 0])
            continue
        charger.charge(starts[node], cursor)
        charger.pop()
        frames.pop()
        if frames:
            frames[-1][1] = min(cursor, starts[node])
    return charger.totals


# --- Service graph and RED -----------------------------------------------------------------


def _text(attributes, *keys):
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _virtual_node(attributes):
    """(name, type) of the uninstrumented thing a CLIENT/PRODUCER span calls, or None.

    1. A database (db.system, or db.system.name of newer conventions): named by the system,
       followed by the database name when known: "postgresql", "postgresql orders".
    2. A broker (messaging.system): "kafka orders" with the destination when known.
    3. Anything else with peer.service, server.address or net.peer.name: that name.
    """
    system = _text(attributes, "db.system", "db.system.name")
    if system:
        database = _text(attributes, "db.namespace", "db.name")
        return (f"{system} {database}" if database else system), "database"
    system = _text(attributes, "messaging.system")
    if system:
        destination = _text(attributes, "messaging.destination.name", "messaging.destination")
        return (f"{system} {destination}" if destination else system), "messaging"
    peer = _text(attributes, "peer.service", "server.address", "net.peer.name")
    return (peer, "external") if peer else None


def _linked_consumers(spans, index):
    """{producer position: [consumer positions]} from CONSUMER spans' links."""
    found = {}
    for i, span in enumerate(spans):
        if span.kind != CONSUMER:
            continue
        for link in span.links or ():
            target = _link_target(link, span.trace_id, index)
            if target is not None and spans[target].kind == PRODUCER and i not in found.get(target, ()):
                found.setdefault(target, []).append(i)
    return found


def _callees(node, tree, linked):
    """The instrumented spans a CLIENT (its SERVER children) or PRODUCER (its consumers) reached."""
    spans = tree.spans
    if spans[node].kind == CLIENT:
        return [k for k in tree.children[node] if spans[k].kind == SERVER]
    kids = [k for k in tree.children[node] if spans[k].kind == CONSUMER]
    return kids + [k for k in linked.get(node, ()) if k not in kids]


def _edges_of(node, tree, linked, starts, ends):
    """Steps: 1. instrumented callees in other services give one "service" edge per service;
    2. instrumented callees only in the caller's own service give none (a self call);
    3. with no instrumented callee, the attributes may name a virtual node."""
    caller = tree.spans[node]
    common = dict(minute=starts[node] // NS_PER_MINUTE, duration_ns=ends[node] - starts[node], span_id=caller.span_id)
    callees = _callees(node, tree, linked)
    if not callees:
        virtual = _virtual_node(caller.attributes or {})
        if virtual is None:
            return []
        return [Edge(caller.service, virtual[0], virtual[1], error=is_error(caller), **common)]
    by_service = {}
    for k in callees:
        if tree.spans[k].service != caller.service:
            by_service.setdefault(tree.spans[k].service, []).append(tree.spans[k])
    return [Edge(caller.service, service, "service", error=is_error(caller) or any(map(is_error, group)), **common)
            for service, group in sorted(by_service.items())]


def _edges(tree, index, order, starts, ends):
    linked = _linked_consumers(tree.spans, index)
    edges = []
    for node in order:
        if tree.spans[node].kind in (CLIENT, PRODUCER):
            edges.extend(_edges_of(node, tree, linked, starts, ends))
    return edges


def _red(tree, order, starts, ends):
    spans, parent = tree.spans, tree.parent
    return [RedPoint(starts[i] // NS_PER_MINUTE, spans[i].service, spans[i].name, spans[i].kind,
                     ends[i] - starts[i], is_error(spans[i]),
                     parent[i] is None or spans[parent[i]].service != spans[i].service) for i in order]


# --- The whole analysis --------------------------------------------------------------------


def analyze(spans: list[SpanRecord]) -> Analysis:
    """Everything the worker stores about one trace.

    1. Build the tree (parents, then links for spans without a parent, cycles cut).
    2. Choose the root: the earliest span with no parent id, else the earliest top span
       (root_missing).
    3. Correct clock skew; every later step uses the adjusted times.
    4. Self time of every span; critical path from the root, with the other top spans
       (orphans) hung under it as asynchronous children so the path spans the whole trace.
    5. Service-graph edges and RED points, ordered by (adjusted start, span id).
    """
    if not spans:
        raise ValueError("a trace needs at least one span")
    tree, index = _build_tree(spans)
    records = tree.spans
    raw_starts = [s.start_ns for s in records]
    raw_ends = [max(s.end_ns, s.start_ns) for s in records]
    root, missing = _choose_root(tree)
    starts, ends, decided = _adjust_skew(tree, raw_starts, raw_ends)
    path_children = [list(kids) for kids in tree.children]
    path_children[root].extend(r for r in tree.roots if r != root)
    critical = _critical_path(root, path_children, starts, ends, [s.span_id for s in records])
    order = sorted(range(len(records)), key=lambda i: _order_key(records, i, starts))
    return _summary(tree, root, missing, starts, ends, decided, critical, order, index)


def _summary(tree, root, missing, starts, ends, decided, critical, order, index):
    records, orphans = tree.spans, set(tree.orphans)
    start, end = min(starts), max(ends)
    return Analysis(
        root_span_id=records[root].span_id, root_missing=missing,
        root_service=records[root].service, root_operation=records[root].name,
        start_ns=start, end_ns=end, duration_ns=end - start,
        span_count=len(records), error_count=sum(map(is_error, records)),
        services=sorted({s.service for s in records}),
        orphan_span_ids=[records[i].span_id for i in order if i in orphans],
        skew_ns={records[i].span_id: delta for i, delta in decided.items()},
        self_ns={records[i].span_id: t for i, t in enumerate(_self_times(tree.children, starts, ends))},
        critical_ns={records[i].span_id: t for i, t in critical.items()},
        edges=_edges(tree, index, order, starts, ends),
        red=_red(tree, order, starts, ends),
    )
