"""The weak-network benchmark's bookkeeping (bench/weak_network.py), without a browser: how it
names WebSocket frames, masks link tokens, folds runs of frames and judges figures."""

from __future__ import annotations

from bench.weak_network import (
    CODE_CONSENT,
    HOME,
    LOOPBACK,
    SLOW_3G,
    WHOLE,
    NetLog,
    _emulation,
    frame_summary,
    short_path,
    summarise,
)


def test_frames_are_named_by_packet_type_and_event_without_their_payload() -> None:
    assert frame_summary('0{"sid":"secret","upgrades":[]}', 1) == "0 open"
    assert frame_summary("40", 1) == "40 sio connect"
    assert frame_summary('40/assist,{"sid":"secret"}', 1) == "40 sio connect"
    assert frame_summary('42["offer",{"sdp":"v=0 secret"}]', 1) == "42 offer"
    assert frame_summary('42/assist,["welcome",{"peers":[]}]', 1) == "42 welcome"
    assert frame_summary("2", 1) == "2 ping"
    assert frame_summary("AAAA", 2) == "binary, 4 chars base64"


def test_paths_mask_link_tokens_and_session_ids() -> None:
    assert short_path("http://127.0.0.1:8080/j/AbC123?x=1") == "/j/…?x=1"
    assert short_path("ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket&sid=abc") == (
        "ws:/socket.io/?EIO=4&transport=websocket&sid=…"
    )


def test_emulation_uses_the_issue_profile_in_bytes_per_second() -> None:
    assert _emulation(SLOW_3G) == {
        "offline": False,
        "latency": 400.0,
        "downloadThroughput": 50_000.0,
        "uploadThroughput": 50_000.0,
    }
    assert not LOOPBACK.emulated


def test_round_trip_table_merges_marks_folds_frame_runs_and_keeps_the_window() -> None:
    log = NetLog()
    wall = 1_000_000.0  # s; CDP monotonic time 10 s ↔ wall 1,000,010 s
    log._request(
        {
            "requestId": "1",
            "timestamp": 10.0,
            "wallTime": wall + 10.0,
            "type": "Document",
            "initiator": {"type": "other"},
            "request": {"method": "POST", "url": "http://h/code"},
        }
    )
    log._request(
        {
            "requestId": "1",
            "timestamp": 10.2,
            "type": "Document",
            "redirectResponse": {"status": 303},
            "request": {"method": "GET", "url": "http://h/b"},
        }
    )
    log._finished({"requestId": "1", "timestamp": 10.4, "encodedDataLength": 3000})
    for t in (10.5, 10.51, 10.52):
        log._frame({"timestamp": t, "response": {"payloadData": '42["candidate",{}]'}}, "ws →")
    log._frame({"timestamp": 10.6, "response": {"payloadData": '42["answer",{}]'}}, "ws ←")
    log._frame({"timestamp": 99.0, "response": {"payloadData": "2"}}, "ws ←")  # after the end
    t0 = (wall + 10.0) * 1000
    rows = log.table(t0, t0 + 700, [(t0 + 450, "peer connected")])
    assert [(r["start_ms"], r["kind"], r["what"], r["status"]) for r in rows] == [
        (0, "redirect", "POST /code", "303"),
        (200, "http", "GET /b", ""),
        (450, "page", "peer connected", ""),
        (500, "ws →", "42 candidate ×3", ""),
        (600, "ws ←", "42 answer", ""),
    ]
    assert rows[1]["end_ms"] == 400 and rows[1]["bytes"] == 3000
    assert rows[3]["end_ms"] == 520
    assert log.wire_bytes(t0, t0 + 700) == 3000


def test_rows_compare_with_loopback_and_judge_the_median_against_the_issue_targets() -> None:
    def run(home: float, consent: float, whole: float) -> dict[str, float]:
        return {HOME: home, CODE_CONSENT: consent, WHOLE: whole}

    main = {
        LOOPBACK.name: [run(100, 200, 500), run(120, 220, 600), run(110, 210, 700)],
        SLOW_3G.name: [run(1000, 1400, 2000), run(1200, 1600, 3500), run(1100, 1500, 2900)],
    }
    rows, details = summarise(main, {})
    by_metric = {row.metric: row for row in rows}
    whole = by_metric[f"Slow 3G: {WHOLE}, p50"]
    assert (whole.ours, whole.baseline, whole.met) == (2900, 600, True)
    assert by_metric[f"Slow 3G: {WHOLE}, max"].met is False
    consent = by_metric[f"Slow 3G: {CODE_CONSENT}, p50"]
    assert (consent.ours, consent.target, consent.met) == (1500, "≤ 1,500", True)
    assert not any(row.metric.startswith("loopback") for row in rows)
    slow_whole = next(d for d in details if d["figure"] == WHOLE and d["conditions"] == "Slow 3G")
    assert slow_whole["max_ms"] == 3500 and slow_whole["max_met"] is False
