"""Statistics: events recorded at every step (no personal data), their rollups, the reports.

- ``events.py``: ``EventKind`` and ``record()``, one row per meaningful step.
- ``rollups.py``: the rollup keys (design notes) and their upkeep at every flush.
- ``rebuild.py``: ``rebuild_rollups``, the same keys derived in SQL after bulk imports.
- ``filters.py``: what a request asks for (period, channel, theme, step), ``FilterError``.
- ``queries.py``: ``build_report`` reads the rollups into a ``Report``.
- ``display.py``: how figures are shown (small counts, French numbers, map classes).
- ``export.py``: the dashboard's tables as CSV and the API's JSON.

Imports point one way: events ← rollups ← rebuild, and rollups ← filters ← queries ←
display ← export. The rights checks' figures (``queries.RightsFigures``) are published by
``server/rights/figures.py``: server.rights imports server.stats, never the other way.
"""
