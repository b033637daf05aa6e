import functools

import redis
from django.conf import settings


@functools.cache
def get_redis():
    return redis.Redis.from_url(settings.SIGHTLINE_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
