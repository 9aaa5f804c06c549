"""The emulator's pieces on their own: VAD, base64, scenarios, control keyword, key file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from runtime.emulator.apikeys import ApiKeyFile
from runtime.emulator.audio import AudioDecodeError, EnergyVad, decode_base64, synthetic_speech
from runtime.emulator.scenario import Faults, ScenarioError, load_scenarios, parse_control
from runtime.emulator.testing import write_atomic
from tests.emulator.conftest import silence, tone


def test_vad_ends_a_turn_after_the_configured_silence() -> None:
    vad = EnergyVad(silence_ms=500)
    assert vad.feed(tone(300)) == ["speech_start"]
    assert vad.feed(silence(400)) == []
    assert vad.feed(silence(100)) == ["speech_end"]
    assert vad.feed(silence(1000)) == []


def test_vad_ignores_clicks_and_quiet_noise() -> None:
    vad = EnergyVad()
    assert vad.feed(tone(20) + silence(600) + tone(2000, amplitude=200) + silence(600)) == []


def test_vad_hears_the_emulators_own_speech() -> None:
    """The synthetic replies are speech-like enough for a VAD (a gateway may run one too)."""
    vad = EnergyVad(rate=24_000)
    reply = synthetic_speech(600, "noise", 440.0)
    assert vad.feed(reply + silence(600, rate=24_000)) == ["speech_start", "speech_end"]


def test_base64_in_both_alphabets() -> None:
    raw = bytes(range(256))
    assert decode_base64(base64.b64encode(raw).decode()) == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).decode()) == raw
    with pytest.raises(AudioDecodeError):
        decode_base64("not base64!")


def test_scenario_file_shapes(tmp_path: Path) -> None:
    listing = tmp_path / "list.yaml"
    listing.write_text("- output_transcription: hi\n  audio_ms: 100\n")
    assert load_scenarios(listing)["default"].turns[0].output_transcription == "hi"
    named = tmp_path / "named.yaml"
    named.write_text("scenarios:\n  short:\n    pace: 1\n    turns:\n      - echo: true\n")
    scenarios = load_scenarios(named)
    assert scenarios["short"].turns[0].echo
    assert {"default", "echo", "weather", "short"} <= set(scenarios)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("turns: []\n", "turns"),
        ("- audio_ms: -5\n", "turns.0.audio_ms"),
        ("turns:\n  - faults: {explode: true}\n", "turns.0.faults.explode"),
        ("{unclosed\n", "not valid YAML"),
    ],
)
def test_scenario_errors_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ScenarioError, match=message.replace(".", r"\.")):
        load_scenarios(path)


def test_missing_scenario_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenarios(tmp_path / "absent.yaml")


def test_control_keyword() -> None:
    control = parse_control(
        "Be nice. [[emulator scenario=weather cap_s=5 go_away_s=1 latency_ms=300 "
        "duplicate_tool_call interrupt=after_turn_complete]]"
    )
    assert control.scenario == "weather"
    assert (control.cap_s, control.go_away_s) == (5.0, 1.0)
    assert control.faults == Faults(
        latency_ms=300, duplicate_tool_call=True, interrupt="after_turn_complete"
    )
    assert parse_control("no keyword here").faults is None
    with pytest.raises(ScenarioError, match="interrupt"):
        parse_control("[[emulator interrupt=sometimes]]")


def test_faults_merge_explicit_fields_only() -> None:
    base = Faults(latency_ms=100, duplicate_tool_call=True)
    merged = base.merged(Faults(latency_ms=0))
    assert merged == Faults(latency_ms=0, duplicate_tool_call=True)


def test_api_key_file_follows_edits_and_replacements(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    write_atomic(path, "alpha\n\n  beta  \n")
    keys = ApiKeyFile(path)
    assert keys.accepts("alpha") and keys.accepts("beta")
    assert not keys.accepts("gamma") and not keys.accepts("") and not keys.accepts(None)
    write_atomic(path, "gamma\n")  # rotation by atomic replace
    assert keys.accepts("gamma") and not keys.accepts("alpha")
    with path.open("a") as stream:  # rotation by in-place edit
        stream.write("delta\n")
    os.utime(path, ns=(1, 1))  # a distinct mtime even within the clock's granularity
    assert keys.accepts("delta")
    path.unlink()
    assert not keys.accepts("gamma")


def test_without_a_key_file_any_key_is_accepted() -> None:
    keys = ApiKeyFile(None)
    assert keys.accepts("whatever")
    assert not keys.accepts("")
