"""A static-files finder for the one file of the plotly package the pages need.

plotly.js comes from the installed plotly wheel (no CDN: Sightline works offline) and is
served as /static/plotly/plotly.min.js; the rest of plotly's package data is left alone.
"""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).parent / "package_data"
PATH = "plotly/plotly.min.js"


class PlotlyFinder(BaseFinder):
    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        match = str(PLOTLY_DIR / "plotly.min.js") if path == PATH else None
        if find_all:
            return [match] if match else []
        return match

    def list(self, ignore_patterns):
        storage = FileSystemStorage(location=str(PLOTLY_DIR))
        storage.prefix = "plotly"
        yield "plotly.min.js", storage
