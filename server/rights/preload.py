"""Imported by the pool's fork server (``server/rights/engine.py``): loads OpenFisca-France and
warms its caches once, so that every worker process forks from a warm model. The objects made
so far are then frozen out of the garbage collector: a collection in a worker would otherwise
write to every one of them (their GC headers) and unshare the pages it inherited."""

import gc

from server.rights.compute import system

system()
gc.collect()
gc.freeze()
