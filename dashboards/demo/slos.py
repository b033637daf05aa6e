"""The demo's sample SLOs: one that stays healthy, one that the payment-slow fault burns.

They go through the same validation and save as the SLO API (dashboards.api.slos), so they
are exactly what a user could have made. Running the demo again updates them by name and
keeps any channels a user has added to them.
"""

from django.db import transaction

from dashboards.api.slos import definition_from, save_slo
from dashboards.models import SLO

SAMPLE_SLOS = (
    {"name": "checkout-availability",
     "description": "99.5 % of the orders checkout is asked to place succeed (demo shop; "
                    "manage.py demo --fault inventory-errors burns it).",
     "service": "checkout", "sli": {"type": "availability"}, "objective": 0.995, "window": "30d"},
    {"name": "checkout-latency",
     "description": "95 % of checkouts in the shop's frontend finish within 1 s (demo shop; "
                    "manage.py demo --fault payment-slow burns it).",
     "service": "frontend", "operation": "POST /checkout", "sli": {"type": "latency", "threshold_ms": 1000},
     "objective": 0.95, "window": "30d"},
)


def ensure_sample_slos():
    """Create or update the sample SLOs; returns [(name, "created" | "updated")]."""
    done = []
    with transaction.atomic():
        for definition in SAMPLE_SLOS:
            existing = SLO.objects.filter(name=definition["name"]).first()
            channels = [channel.name for channel in existing.channels.all()] if existing else []
            fields, channels = definition_from({**definition, "channels": channels})
            save_slo(fields, channels, existing)
            done.append((definition["name"], "updated" if existing else "created"))
    return done
