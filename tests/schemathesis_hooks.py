"""Schemathesis hooks for the API fuzz test (tests/test_api_v1.py), loaded through
SCHEMATHESIS_HOOKS in the `st` process.

- Each operation calls with its own API tokens (API_FUZZ_TOKENS, JSON operationId → tokens, a
  new one every API_FUZZ_PER_TOKEN requests), so that no token goes over its 120 requests a
  minute and the fuzzer never waits; the statistics take the coordinator's session cookie
  (API_FUZZ_SESSION).
- ``valid_input_refused_only_for_rules_stated_in_words``: a 400 answer to input the schema
  calls valid contradicts the schema, unless its code is one of the rules the schema states in
  its descriptions only (a start in the future, a number that exists…).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import schemathesis

from server.web.api.models import STATED_IN_WORDS

TOKENS: dict[str, list[str]] = json.loads(os.environ.get("API_FUZZ_TOKENS", "{}"))
PER_TOKEN = int(os.environ.get("API_FUZZ_PER_TOKEN", "100"))
SESSION = os.environ.get("API_FUZZ_SESSION", "")
SESSION_COOKIE = "vp_session"


@schemathesis.auth(refresh_interval=None)
class PerOperationCredentials:
    """Each operation's own API tokens, a fresh one every PER_TOKEN requests (the whole run
    lasts less than a minute), or the coordinator's session cookie for statistics."""

    def __init__(self) -> None:
        self.used: Counter[str] = Counter()

    def get(self, case: Any, context: Any) -> str:
        """The credential for this request."""
        operation_id = case.operation.definition.raw["operationId"]
        if operation_id == "getStatistics":
            return SESSION  # a login session has no request limit
        tokens = TOKENS[operation_id]
        index = self.used[operation_id] // PER_TOKEN
        self.used[operation_id] += 1
        if index >= len(tokens):
            raise RuntimeError(f"{operation_id}: more than {len(tokens) * PER_TOKEN} requests")
        return tokens[index]

    def set(self, case: Any, data: str, context: Any) -> None:
        """Send it as the operation's security scheme says."""
        if case.operation.definition.raw["operationId"] == "getStatistics":
            case.cookies = {**(case.cookies or {}), SESSION_COOKIE: data}
        else:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


# The coverage phase tries every value of every enum: the server's ~600 time zone names would
# take the whole minute. The fuzzer draws from a few of them (still valid ones); the test of
# the document checks the full list.
ZONE_SAMPLE = ["", "Europe/Paris", "Indian/Reunion", "America/Cayenne", "Pacific/Noumea", "UTC"]


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """Sample the time zone names."""
    zones = raw_schema["components"]["schemas"]["TimeZoneName"]
    zones["enum"] = [zone for zone in ZONE_SAMPLE if zone in zones["enum"]]


@schemathesis.check
def valid_input_refused_only_for_rules_stated_in_words(ctx: Any, response: Any, case: Any) -> None:
    """Schema-valid input is never refused as invalid, but for a rule the schema states in words."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return
    error = response.json()["error"]
    refusal = (error["code"], error.get("field"))
    if refusal not in STATED_IN_WORDS:
        raise AssertionError(
            f"schema-valid input refused with 400 {refusal}: the schema does not state this rule"
        )
