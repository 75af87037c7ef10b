"""Statistics: events recorded at every step (no personal data), their rollups, the reports."""
