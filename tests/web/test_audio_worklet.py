"""The widget's AudioWorklet processors, run in Chromium: capture resampling and playback flush."""

from __future__ import annotations

import itertools
import math
import struct
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.web.support import INSTALL_HOST, TENANT_HOST, Nginx, goto

pytestmark = pytest.mark.browser


def pcm16le(data: list[int]) -> list[int]:
    raw = bytes(data)
    return list(struct.unpack(f"<{len(raw) // 2}h", raw))


def tone_amplitude(samples: list[int], frequency: float, rate: int) -> float:
    """Amplitude of one frequency component (a single DFT bin), in PCM16 units."""
    re = sum(s * math.cos(2 * math.pi * frequency * n / rate) for n, s in enumerate(samples))
    im = sum(s * math.sin(2 * math.pi * frequency * n / rate) for n, s in enumerate(samples))
    return 2 * math.hypot(re, im) / len(samples)


def open_lab(page: Page, install: Nginx, tenant: Nginx) -> str:
    goto(page, tenant.url(TENANT_HOST, "/audio-lab.html"))
    page.click("#activate")  # a user gesture, so an AudioContext may start
    # Loaded cross-origin from the install, exactly as a tenant's page loads it.
    return install.url(INSTALL_HOST, "/widget-audio.js")


def capture(page: Page, worklet: str, **tone: float) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        "args => window.captureTone(args)", {"workletUrl": worklet, "seconds": 1.0, **tone}
    )
    return result


@pytest.mark.parametrize("rate", [48000, 44100])
def test_capture_resamples_a_tone_to_16khz_pcm16le(
    page: Page, static_nginx: Nginx, tenant_site: Nginx, rate: int
) -> None:
    worklet = open_lab(page, static_nginx, tenant_site)
    result = capture(page, worklet, rate=rate, frequency=1000, amplitude=0.5)

    # 40 ms frames of 640 samples; one second of input is 16000 samples out.
    assert set(result["frameSizes"]) == {1280}
    samples = pcm16le(result["bytes"])
    assert len(samples) == 16000
    steady = samples[800:]  # past the filter's start-up
    # Decoding as little-endian gives back the tone at its level; big-endian would be noise.
    assert tone_amplitude(steady, 1000, 16000) == pytest.approx(0.5 * 32767, rel=0.05)
    crossings = sum(1 for a, b in itertools.pairwise(steady) if (a < 0) != (b < 0))
    seconds = len(steady) / 16000
    assert crossings / seconds / 2 == pytest.approx(1000, rel=0.01)


def test_capture_filters_what_16khz_cannot_carry(
    page: Page, static_nginx: Nginx, tenant_site: Nginx
) -> None:
    """A 12 kHz tone must not fold back into the speech band (it would alias to 4 kHz)."""
    worklet = open_lab(page, static_nginx, tenant_site)
    result = capture(page, worklet, rate=48000, frequency=12000, amplitude=0.5)

    steady = pcm16le(result["bytes"])[800:]
    rms = math.sqrt(sum(s * s for s in steady) / len(steady))
    assert rms < 0.01 * 0.5 * 32767
    assert tone_amplitude(steady, 4000, 16000) < 0.01 * 0.5 * 32767


def test_playback_flush_silences_queued_audio_at_once(
    page: Page, static_nginx: Nginx, tenant_site: Nginx
) -> None:
    worklet = open_lab(page, static_nginx, tenant_site)
    result: dict[str, Any] = page.evaluate(
        "args => window.playbackFlush(args)", {"workletUrl": worklet}
    )

    assert result["levelWhilePlaying"] > 0.2  # a 0.5 sine has an RMS of 0.35
    flushed = result["flushed"]
    # Some audio had played, the rest was dropped, nothing was lost or invented.
    assert flushed["played"] >= 7200
    assert flushed["dropped"] > 0
    assert flushed["played"] + flushed["dropped"] == result["total"]
    # After the flush: silence, nothing queued, nothing more played.
    assert result["levelAfterFlush"] < 1e-4
    assert result["last"]["queued"] == 0
    assert result["last"]["played"] == flushed["played"]
