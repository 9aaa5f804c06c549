"""The real google-genai SDK against the emulator: the paths the gateway depends on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.genai import errors, types

from runtime.emulator.testing import CertPair, EmulatorHandle, running_emulator
from tests.emulator.conftest import (
    MODEL,
    receive_turn,
    receive_until,
    receive_until_closed,
    silence,
    stream_pcm,
    text,
    tone,
)

TRANSCRIBED = types.LiveConnectConfig(
    response_modalities=[types.Modality.AUDIO],
    system_instruction="You are a helpful voice assistant.",
    input_audio_transcription=types.AudioTranscriptionConfig(),
    output_audio_transcription=types.AudioTranscriptionConfig(),
)

WEATHER_TOOL = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Current weather in a city",
            parameters_json_schema={
                "type": "object",
                "properties": {"city": {"type": "string"}, "unitSystem": {"type": "string"}},
                "required": ["city"],
            },
        )
    ]
)


def config(**changes: object) -> types.LiveConnectConfig:
    return TRANSCRIBED.model_copy(update=changes)


async def test_setup_is_answered_and_recorded(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    async with (
        asyncio.timeout(10),
        client.aio.live.connect(
            model=MODEL, config=config(tools=[WEATHER_TOOL], system_instruction="Be brief.")
        ) as session,
    ):
        assert session.setup_complete is not None
    [record] = await emulator.get_json("/sessions")
    assert record["model"] == f"models/{MODEL}"
    assert record["system_instruction"] == "Be brief."
    assert record["declared_functions"] == ["get_weather"]
    assert record["close_code"] == 1000


async def test_audio_round_trip_with_automatic_activity_detection(
    emulator: EmulatorHandle,
) -> None:
    client = emulator.client()
    async with (
        asyncio.timeout(15),
        client.aio.live.connect(model=MODEL, config=config()) as session,
    ):
        # 600 ms of speech then 600 ms of silence: the VAD ends the turn on the silence.
        await stream_pcm(session, tone(600) + silence(600))
        turn = await receive_turn(session)
    assert turn.turn_complete
    assert turn.input_text == ["Hello there."]
    assert "".join(turn.output_text) == "Hi! How can I help?"
    assert turn.audio_mime_types == {"audio/pcm;rate=24000"}
    assert len(turn.audio) == 24_000 * 2 * 1200 // 1000  # the default reply: 1.2 s at 24 kHz
    assert turn.usage is not None
    assert turn.usage.prompt_token_count and turn.usage.response_token_count
    assert turn.usage.total_token_count == (
        turn.usage.prompt_token_count + turn.usage.response_token_count
    )
    stats = await emulator.get_json("/stats")
    assert stats["audio_bytes_in"] == len(tone(600) + silence(600))
    assert stats["turns"] == 1


async def test_quiet_audio_alone_does_not_start_a_turn(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    async with (
        asyncio.timeout(15),
        client.aio.live.connect(model=MODEL, config=config()) as session,
    ):
        await stream_pcm(session, tone(1000, amplitude=150) + silence(1000))
        await stream_pcm(session, tone(400) + silence(600))
        turn = await receive_turn(session)
    assert turn.turn_complete
    stats = await emulator.get_json("/stats")
    assert stats["turns"] == 1


@pytest.mark.parametrize("end", ["activity_end", "audio_stream_end"])
async def test_explicit_end_of_turn(emulator: EmulatorHandle, end: str) -> None:
    manual = end == "activity_end"
    detection = types.AutomaticActivityDetection(disabled=manual)
    client = emulator.client()
    async with (
        asyncio.timeout(15),
        client.aio.live.connect(
            model=MODEL,
            config=config(
                realtime_input_config=types.RealtimeInputConfig(
                    automatic_activity_detection=detection
                )
            ),
        ) as session,
    ):
        if manual:
            await session.send_realtime_input(activity_start=types.ActivityStart())
        await stream_pcm(session, tone(300))  # no trailing silence: only the explicit end ends it
        if manual:
            await session.send_realtime_input(activity_end=types.ActivityEnd())
        else:
            await session.send_realtime_input(audio_stream_end=True)
        turn = await receive_turn(session)
    assert turn.turn_complete
    assert turn.input_text == ["Hello there."]


async def test_text_turn_through_client_content(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    async with (
        asyncio.timeout(10),
        client.aio.live.connect(model=MODEL, config=config()) as session,
    ):
        await session.send_client_content(turns=text("Hi"), turn_complete=True)
        turn = await receive_turn(session)
    assert turn.turn_complete
    assert turn.input_text == []  # typed input is not transcribed
    assert "".join(turn.output_text) == "Hi! How can I help?"
    [record] = await emulator.get_json("/sessions")
    assert record["text_inputs"] == ["Hi"]


async def test_tool_call_round_trip_passes_payloads_through_untouched(
    emulator: EmulatorHandle,
) -> None:
    client = emulator.client()
    instruction = "Weather bot. [[emulator scenario=weather]]"
    async with (
        asyncio.timeout(10),
        client.aio.live.connect(
            model=MODEL, config=config(tools=[WEATHER_TOOL], system_instruction=instruction)
        ) as session,
    ):
        await session.send_client_content(turns=text("Weather in Paris?"))
        first = await receive_until(session, lambda s: bool(s.tool_calls))
        [call] = first.tool_calls
        assert call.name == "get_weather"
        assert call.args == {"city": "Paris"}
        assert call.id
        payload = {"result": {"tempC": 21, "sky_state": "sunny", "nestedKey": {"a_b": 1}}}
        await session.send_tool_response(
            function_responses=[
                types.FunctionResponse(id=call.id, name=call.name, response=payload)
            ]
        )
        answer = await receive_until(session, lambda s: s.turn_complete)
    assert "".join(answer.output_text) == (
        'Here is the weather: {"result":{"tempC":21,"sky_state":"sunny","nestedKey":{"a_b":1}}}'
    )
    assert answer.audio
    assert answer.usage is not None
    [record] = await emulator.get_json("/sessions")
    assert record["tool_responses"] == [{"id": call.id, "name": "get_weather", "response": payload}]


async def test_tool_args_keys_reach_the_sdk_unchanged(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    args = {"cityName": "Paris", "unit_system": "metric", "filters": {"maxTempC": 30}}
    scenario = {
        "turns": [{"tool_call": {"args": args}, "after_tool": {"output_transcription": "ok"}}]
    }
    async with running_emulator(tmp_path, cert=emulator_cert, scenario=scenario) as emulator:
        client = emulator.client()
        async with (
            asyncio.timeout(10),
            client.aio.live.connect(model=MODEL, config=config(tools=[WEATHER_TOOL])) as session,
        ):
            await session.send_client_content(turns=text("go"))
            summary = await receive_until(session, lambda s: bool(s.tool_calls))
    assert summary.tool_calls[0].args == args


async def test_go_away_then_resume_continues_the_scenario(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    scenario = {
        "turns": [
            {"output_transcription": "first answer", "audio_ms": 200},
            {"output_transcription": "second answer", "audio_ms": 200},
        ]
    }
    async with running_emulator(
        tmp_path,
        cert=emulator_cert,
        scenario=scenario,
        connection_cap_seconds=1.5,
        go_away_seconds=0.5,
    ) as emulator:
        client = emulator.client()
        resumable = config(session_resumption=types.SessionResumptionConfig())
        async with (
            asyncio.timeout(10),
            client.aio.live.connect(model=MODEL, config=resumable) as session,
        ):
            await session.send_client_content(turns=text("one"))
            first = await receive_turn(session)
            rest, closed = await receive_until_closed(session)
        assert "".join(first.output_text) == "first answer"
        assert rest.go_away == "0.5s"
        assert closed.code == 1011
        assert "Deadline expired" in str(closed)
        handle = (first.handles + rest.handles)[-1]
        resume = config(session_resumption=types.SessionResumptionConfig(handle=handle))
        async with (
            asyncio.timeout(10),
            client.aio.live.connect(model=MODEL, config=resume) as resumed,
        ):
            await resumed.send_client_content(turns=text("two"))
            second = await receive_until(resumed, lambda s: s.turn_complete)
        stats = await emulator.get_json("/stats")
    assert "".join(second.output_text) == "second answer"
    assert stats["sessions_resumed"] == 1


async def test_unknown_api_key_is_refused_with_1008(emulator: EmulatorHandle) -> None:
    client = emulator.client(api_key="not-a-key")
    with pytest.raises(errors.APIError) as refused:
        async with asyncio.timeout(10), client.aio.live.connect(model=MODEL, config=config()):
            pass
    assert refused.value.code == 1008
    assert "API key not valid" in str(refused.value)
    stats = await emulator.get_json("/stats")
    assert stats["sessions_refused"] == 1


async def test_key_rotation_takes_effect_without_restart(emulator: EmulatorHandle) -> None:
    emulator.set_api_keys([emulator.api_key, "new-key"])
    async with (
        asyncio.timeout(10),
        emulator.client(api_key="new-key").aio.live.connect(model=MODEL),
    ):
        pass
    emulator.set_api_keys(["new-key"])
    with pytest.raises(errors.APIError) as refused:
        async with asyncio.timeout(10), emulator.client().aio.live.connect(model=MODEL):
            pass
    assert refused.value.code == 1008


async def test_unknown_resumption_handle_is_refused(emulator: EmulatorHandle) -> None:
    resume = config(session_resumption=types.SessionResumptionConfig(handle="Cj0Kbogus"))
    with pytest.raises(errors.APIError) as refused:
        async with (
            asyncio.timeout(10),
            emulator.client().aio.live.connect(model=MODEL, config=resume),
        ):
            pass
    assert refused.value.code == 1007


async def test_unknown_model_is_refused_like_the_real_service(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    async with running_emulator(
        tmp_path, cert=emulator_cert, accepted_models=frozenset({MODEL})
    ) as emulator:
        client = emulator.client()
        async with asyncio.timeout(10), client.aio.live.connect(model=MODEL):
            pass
        with pytest.raises(errors.APIError) as refused:
            async with asyncio.timeout(10), client.aio.live.connect(model="bogus"):
                pass
    assert refused.value.code == 1008
    assert "models/bogus is not found for API version v1, or is not supported" in str(refused.value)


async def test_echo_reply_follows_the_utterance_and_usage_counts_all_audio(
    emulator: EmulatorHandle,
) -> None:
    instruction = "[[emulator scenario=echo]]"
    async with (
        asyncio.timeout(15),
        emulator.client().aio.live.connect(
            model=MODEL, config=config(system_instruction=instruction)
        ) as session,
    ):
        # 2 s of room silence before the caller speaks for 0.5 s, then pauses.
        await stream_pcm(session, silence(2000) + tone(500) + silence(600))
        turn = await receive_turn(session)
    # The utterance is the speech plus the 500 ms of silence that ended it.
    assert len(turn.audio) == 24_000 * 2 * 1000 // 1000
    assert "".join(turn.output_text) == "You spoke for 1.0 seconds."
    assert turn.usage is not None
    assert turn.usage.prompt_token_count == 96  # 3 s streamed until the turn ended, 32/s
