"""Trace settling: which traces have been idle for the settle window.

Ingest adds every trace id it stores to a Redis sorted set (ingest.pipeline.PENDING_TRACES_KEY,
score = when a span of it was last stored). settle_once():
1. If Redis lost its data since the last tick (the sentinel key is gone), put back the
   traces of every span received since the last tick that saw Redis whole, from PostgreSQL.
2. Take the traces idle for SIGHTLINE_SETTLE_SECONDS, hand them to correlation in chunks.
3. Remove them from the set only if no span arrived meanwhile (score unchanged); a trace
   that got a span since stays pending, and is correlated again later: re-opened.
"""

import datetime as dt
import time

from django.conf import settings
from django.db import connection

from ingest.pipeline import PENDING_TRACES_KEY
from traces.models import CorrelationState

SENTINEL_KEY = "sightline:redis:alive"
LAST_WHOLE = "redis_last_whole"  # CorrelationState key: when Redis was last seen with its data
CHUNK = 200  # traces per correlation task

# Remove members whose score is still <= the cutoff (no span arrived since they were read).
_RELEASE = """
local removed = 0
for i, member in ipairs(ARGV) do
    if i > 1 then
        local score = redis.call('ZSCORE', KEYS[1], member)
        if score and tonumber(score) <= tonumber(ARGV[1]) then
            removed = removed + redis.call('ZREM', KEYS[1], member)
        end
    end
end
return removed
"""


def recover_pending(client, since):
    """Put back the traces of spans received since `since` (after Redis lost its data)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT trace_id, extract(epoch FROM max(received_at)) FROM sightline_span "
                       "WHERE received_at >= %s GROUP BY trace_id", [since])
        rows = cursor.fetchall()
    for start in range(0, len(rows), 1000):
        client.zadd(PENDING_TRACES_KEY, {bytes(trace_id).hex(): float(seen) for trace_id, seen in rows[start:start + 1000]})
    return len(rows)


def _check_redis_whole(client, now):
    """Recover if Redis restarted empty; remember when it was last seen whole."""
    if not client.exists(SENTINEL_KEY):
        state = CorrelationState.objects.filter(key=LAST_WHOLE).first()
        if state is not None:
            margin = 2 * settings.SETTLE_SECONDS + 60
            since = dt.datetime.fromtimestamp(float(state.value) - margin, tz=dt.timezone.utc)
            recover_pending(client, since)
        client.set(SENTINEL_KEY, "1")
    CorrelationState.objects.update_or_create(key=LAST_WHOLE, defaults={"value": repr(now)})


def settle_once(client, enqueue, limit=20_000):
    """Hand the settled traces to enqueue(list of hex ids) in chunks; return how many."""
    now = time.time()
    _check_redis_whole(client, now)
    cutoff = now - settings.SETTLE_SECONDS
    due = [member.decode() for member in client.zrangebyscore(PENDING_TRACES_KEY, "-inf", cutoff, start=0, num=limit)]
    for start in range(0, len(due), CHUNK):
        enqueue(due[start:start + CHUNK])
    for start in range(0, len(due), 1000):
        client.eval(_RELEASE, 1, PENDING_TRACES_KEY, cutoff, *due[start:start + 1000])
    return len(due)
