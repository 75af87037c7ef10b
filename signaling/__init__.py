"""Signalling for the `/assist` namespace: typed wire messages and TURN credentials."""
