from django.db import migrations

# Hotspots over long windows read a uniform sample of traces chosen by the last two bytes of
# the trace id (traces.hotspots); with the sample key in the index, a day's summaries are
# sampled inside the index instead of fetching every row.
SAMPLE_INDEX = """
CREATE INDEX sightline_trace_time_sample ON sightline_trace_summary
    (start_time, (get_byte(trace_id, 15) * 256 + get_byte(trace_id, 14)))
"""


class Migration(migrations.Migration):

    dependencies = [
        ("traces", "0003_rollups_by_hour_and_environment"),
    ]

    operations = [
        migrations.RunSQL(SAMPLE_INDEX, "DROP INDEX sightline_trace_time_sample"),
    ]
