"""PCM16 helpers: base64 in either alphabet, an energy voice-activity detector, synthetic speech.

Everything here works on 16-bit little-endian mono PCM, the only format Gemini Live takes in
(16 kHz) and gives out (24 kHz).
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import random
import sys
from array import array
from dataclasses import dataclass, field

INPUT_RATE = 16_000
OUTPUT_RATE = 24_000
BYTES_PER_SAMPLE = 2

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class AudioDecodeError(ValueError):
    """Raised when realtime audio is not valid base64."""


def decode_base64(data: str) -> bytes:
    """Decode base64 written with the standard or the URL-safe alphabet (the SDK uses URL-safe)."""
    raw = data.encode("ascii", errors="replace").translate(_URLSAFE_TO_STANDARD)
    try:
        # Checking the alphabet with one C-level translate, then decoding leniently, is about
        # twice as fast as the strict decoder; this runs for every audio chunk of every call.
        if raw.translate(None, _BASE64_ALPHABET):
            raise binascii.Error("characters outside the base64 alphabet")
        return binascii.a2b_base64(raw)
    except binascii.Error as exc:
        raise AudioDecodeError(
            "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES), Base64 decoding failed."
        ) from exc


def encode_base64(pcm: bytes) -> str:
    """Encode audio for the wire; standard alphabet, which the SDK accepts like the real service."""
    return base64.b64encode(pcm).decode("ascii")


def pcm_duration_ms(byte_count: int, rate: int) -> float:
    return byte_count / BYTES_PER_SAMPLE / rate * 1000.0


def pcm_byte_count(duration_ms: float, rate: int) -> int:
    return int(rate * duration_ms / 1000.0) * BYTES_PER_SAMPLE


def _samples(pcm: bytes) -> array[int]:
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % BYTES_PER_SAMPLE])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _to_bytes(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def level(pcm: bytes) -> float:
    """Mean absolute amplitude, from every 8th sample: plenty to tell speech from silence.

    Decimating first keeps the per-sample Python work (one int object per sample) small;
    the VAD runs on every frame of every call.
    """
    samples = _samples(pcm)[::8]
    if not samples:
        return 0.0
    return sum(map(abs, samples)) / len(samples)


@dataclass
class EnergyVad:
    """Decides where a user's utterance ends, from the audio itself (automatic activity detection).

    Audio is judged in fixed frames by their mean absolute amplitude. Time is counted in samples received, not wall
    time, so a client that streams faster than real time (tests, a backlog) sees the same result.
    An utterance starts after `min_speech_ms` of loud frames and ends after `silence_ms` of quiet
    frames following speech.
    """

    rate: int = INPUT_RATE
    threshold: float = 450.0  # mean |amplitude|, about -37 dBFS: above room noise, below speech
    silence_ms: float = 500.0
    min_speech_ms: float = 60.0
    frame_ms: float = 20.0
    speech_ms: float = 0.0
    silence_after_speech_ms: float = 0.0
    in_speech: bool = False
    _carry: bytes = field(default=b"", repr=False)

    def feed(self, pcm: bytes) -> list[str]:
        """Consume audio; return the events it caused, in order: "speech_start", "speech_end"."""
        frame_bytes = pcm_byte_count(self.frame_ms, self.rate)
        buffered = self._carry + pcm
        whole = len(buffered) - len(buffered) % frame_bytes
        self._carry = buffered[whole:]
        events: list[str] = []
        for offset in range(0, whole, frame_bytes):
            loud = level(buffered[offset : offset + frame_bytes]) >= self.threshold
            events.extend(self._frame(loud=loud))
        return events

    def _frame(self, *, loud: bool) -> list[str]:
        if loud:
            self.speech_ms += self.frame_ms
            self.silence_after_speech_ms = 0.0
            if not self.in_speech and self.speech_ms >= self.min_speech_ms:
                self.in_speech = True
                return ["speech_start"]
            return []
        if not self.in_speech:
            # Short blips that never reached min_speech_ms are noise, not the start of a turn.
            self.speech_ms = 0.0
            return []
        self.silence_after_speech_ms += self.frame_ms
        if self.silence_after_speech_ms >= self.silence_ms:
            self.reset()
            return ["speech_end"]
        return []

    def reset(self) -> None:
        self.in_speech = False
        self.speech_ms = 0.0
        self.silence_after_speech_ms = 0.0


def synthetic_speech(
    duration_ms: int, kind: str, frequency: float, rate: int = OUTPUT_RATE
) -> bytes:
    """Speech-like audio of an exact length: a tone or noise with a syllable-rate envelope.

    The 4 Hz envelope makes the signal rise and fall like syllables, so an energy VAD on the
    receiving side sees speech, and a listener hears clearly where a reply was cut. Built by
    repeating one cached second, so long or many distinct lengths cost no synthesis time.
    """
    second = _one_second_of_speech(kind, frequency, rate)
    wanted = int(rate * duration_ms / 1000) * BYTES_PER_SAMPLE
    repeats = -(-wanted // len(second))
    return (second * repeats)[:wanted]


@functools.lru_cache(maxsize=32)
def _one_second_of_speech(kind: str, frequency: float, rate: int) -> bytes:
    noise = random.Random(int(frequency * 1000))  # noqa: S311 - a test signal, not a secret
    samples = array("h", bytes(rate * BYTES_PER_SAMPLE))
    for i in range(rate):
        t = i / rate
        envelope = 0.55 + 0.45 * math.sin(2 * math.pi * 4.0 * t)
        value = (
            noise.uniform(-1.0, 1.0) if kind == "noise" else math.sin(2 * math.pi * frequency * t)
        )
        samples[i] = int(9000 * envelope * value)
    return _to_bytes(samples)


def silence(duration_ms: float, rate: int = INPUT_RATE) -> bytes:
    return bytes(pcm_byte_count(duration_ms, rate))
