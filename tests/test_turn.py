"""TURN REST credentials: a known HMAC vector, a real coturn, and the iceServers JSON shapes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.turn import TurnCredentials, ice_servers, turn_credentials

TURNSERVER = "/usr/bin/turnserver"
UCLIENT = "/usr/bin/turnutils_uclient"

# Obtained independently of the code under test, once, with:
#   printf %s '1700000000:sess-1' | openssl dgst -sha1 -hmac north -binary | base64
VECTOR_SECRET = "north"
VECTOR_USERNAME = "1700000000:sess-1"
VECTOR_PASSWORD = "CKaKChP9GXK6KUhlrjMKWekWaVk="


def test_credentials_match_the_openssl_vector() -> None:
    credentials = turn_credentials(VECTOR_SECRET, "sess-1", 3600, now=1_700_000_000 - 3600)

    assert credentials == TurnCredentials(
        username=VECTOR_USERNAME, password=VECTOR_PASSWORD, ttl=3600, expires_at=1_700_000_000
    )


def test_expiry_is_issue_time_in_whole_seconds_plus_ttl() -> None:
    credentials = turn_credentials("s", "42", 60, now=1_000.9)

    assert credentials.expires_at == 1_060
    assert credentials.username == "1060:42"
    assert credentials.ttl == 60


def test_default_issue_time_is_now() -> None:
    before = int(time.time())
    credentials = turn_credentials("s", "42", 600)
    after = int(time.time())

    assert before + 600 <= credentials.expires_at <= after + 600


def test_other_secret_or_session_gives_other_password() -> None:
    base = turn_credentials("north", "sess-1", 60, now=0)

    assert turn_credentials("south", "sess-1", 60, now=0).password != base.password
    assert turn_credentials("north", "sess-2", 60, now=0).password != base.password


@pytest.mark.parametrize(
    ("secret", "session_id", "ttl"),
    [("", "sess-1", 60), ("north", "", 60), ("north", "sess-1", 0), ("north", "sess-1", -5)],
)
def test_unusable_arguments_are_refused(secret: str, session_id: str, ttl: int) -> None:
    with pytest.raises(ValueError):
        turn_credentials(secret, session_id, ttl)


def test_password_stays_out_of_repr_and_credentials_are_frozen() -> None:
    credentials = turn_credentials(VECTOR_SECRET, "sess-1", 3600, now=1_699_996_400)

    assert VECTOR_PASSWORD not in repr(credentials)
    with pytest.raises(dataclasses.FrozenInstanceError):
        credentials.password = "x"  # type: ignore[misc]


# --- iceServers -----------------------------------------------------------------------------


CREDENTIALS = TurnCredentials(username="60:s", password="pw", ttl=60, expires_at=60)


def test_ice_servers_empty_when_nothing_configured() -> None:
    assert ice_servers([], [], None) == []
    assert ice_servers((), (), CREDENTIALS) == []


def test_ice_servers_stun_only() -> None:
    urls = ["stun:turn.example.org:3478", "stun:stun2.example.org"]

    assert ice_servers(urls, [], None) == [{"urls": urls}]


def test_ice_servers_turn_carries_username_and_credential() -> None:
    turn = ("turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349")

    servers = ice_servers(("stun:turn.example.org:3478",), turn, CREDENTIALS)

    assert servers == [
        {"urls": ["stun:turn.example.org:3478"]},
        {"urls": list(turn), "username": "60:s", "credential": "pw"},
    ]
    assert json.loads(json.dumps(servers)) == servers


def test_ice_servers_refuse_turn_without_credentials() -> None:
    with pytest.raises(ValueError):
        ice_servers([], ["turn:turn.example.org:3478"], None)


def test_ice_servers_refuse_a_bare_string() -> None:
    with pytest.raises(TypeError):
        ice_servers("stun:turn.example.org:3478", [], None)


# --- A real coturn --------------------------------------------------------------------------


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_stun(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Send STUN Binding requests until coturn answers one (it is then ready to allocate)."""
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            assert process.poll() is None, "turnserver exited during start-up"
            sock.sendto(request, ("127.0.0.1", port))
            try:
                response = sock.recv(2048)
            except (TimeoutError, ConnectionRefusedError):
                continue
            if response[:2] == b"\x01\x01" and response[8:20] == request[8:20]:
                return
    raise AssertionError(f"turnserver did not answer STUN on port {port}")


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[int]:
    """A coturn on a free loopback port in REST-secret mode, as deploy/coturn configures it."""
    port = _free_udp_port()
    process = subprocess.Popen(
        [
            TURNSERVER,
            "-n",  # no configuration file: everything is on the command line
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            "--use-auth-secret",
            f"--static-auth-secret={VECTOR_SECRET}",
            "--realm=test.invalid",
            "--allow-loopback-peers",  # uclient's two clients talk over 127.0.0.1
            "--no-tcp",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            f"--pidfile={tmp_path / 'turnserver.pid'}",
            f"--userdb={tmp_path / 'turndb'}",
            f"--log-file={tmp_path / 'turn.log'}",
            "--no-stdout-log",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_stun(port, process, time.monotonic() + 15)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _allocate(port: int, username: str, password: str) -> subprocess.CompletedProcess[str]:
    """Two turnutils_uclient clients allocate relays and exchange one message through them."""
    return subprocess.run(
        [
            UCLIENT,
            "-y",
            "-c",
            "-n",
            "1",
            "-z",
            "1",
            "-p",
            str(port),
            "-u",
            username,
            "-w",
            password,
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_coturn_relays_with_derived_credentials_and_refuses_bad_ones(coturn: int) -> None:
    good = turn_credentials(VECTOR_SECRET, "sess-1", 600)
    expired = turn_credentials(VECTOR_SECRET, "sess-1", 60, now=time.time() - 3600)

    accepted = _allocate(coturn, good.username, good.password)
    tampered = _allocate(coturn, good.username, VECTOR_PASSWORD)
    late = _allocate(coturn, expired.username, expired.password)

    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    received = re.search(r"start_mclient: tot_send_msgs=\d+, tot_recv_msgs=(\d+)", accepted.stdout)
    assert received is not None, accepted.stdout
    assert int(received.group(1)) > 0, accepted.stdout
    assert tampered.returncode != 0
    assert late.returncode != 0
    assert "Cannot complete Allocation" in tampered.stdout + tampered.stderr
