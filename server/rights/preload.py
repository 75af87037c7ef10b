"""Imported by the pool's fork server (``server/rights/engine.py``): loads OpenFisca-France and
warms its caches once, so that every worker process forks from a warm model."""

from server.rights.compute import system

system()
