"""Ephemeral TURN credentials (TURN REST API convention, as coturn checks them)."""

from __future__ import annotations

import pytest

from second_brain_database.config import Settings
from second_brain_database.webrtc.turn import rtc_configuration, turn_credential


def test_known_vector() -> None:
    assert turn_credential("north", "1735689600:alice") == "HbvWA6hGDtdv3wflBolXLhvzs0w="


def test_configuration_with_turn() -> None:
    settings = Settings(
        jwt_secret="x" * 40,
        stun_urls=["stun:stun.example.org:3478"],
        turn_urls=["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
        turn_secret="north",
        turn_ttl=3600,
    )
    config = rtc_configuration(settings, "alice", now=1735686000).model_dump(exclude_none=True)
    assert config == {
        "iceServers": [
            {"urls": ["stun:stun.example.org:3478"]},
            {
                "urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
                "username": "1735689600:alice",
                "credential": "HbvWA6hGDtdv3wflBolXLhvzs0w=",
            },
        ],
        "iceTransportPolicy": "all",
    }


def test_url_lists_come_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SBD_TURN_URLS", "turn:a.example.org:3478, turns:b.example.org:5349")
    monkeypatch.setenv("SBD_STUN_URLS", "")
    settings = Settings(jwt_secret="x" * 40)
    assert settings.turn_urls == ["turn:a.example.org:3478", "turns:b.example.org:5349"]
    assert settings.stun_urls == []


def test_no_turn_without_a_secret() -> None:
    settings = Settings(jwt_secret="x" * 40, turn_urls=["turn:t.example.org"])
    servers = rtc_configuration(settings, "alice").iceServers
    assert [s.urls for s in servers] == [["stun:stun.l.google.com:19302"]]
