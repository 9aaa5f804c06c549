"""Gemini key rotation against the real emulator through google-genai: the new key is
validated by a real Live session before use, and the old key is refused afterwards."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from orbisctl.rotation import core
from orbisctl.rotation.direct import SdkGeminiProbe
from orbisctl.rotation.steps import RotationContext, RotationFailed
from orbisctl.rotation.strategies import SecretKind
from runtime.emulator.testing import emulator_process
from tests.rotation.conftest import LocalRoller

pytestmark = pytest.mark.integration


class EmulatorReloadingRoller(LocalRoller):
    """`reload("emulator")` makes the install's key file the emulator's, as the stack must."""

    def __init__(self, install: Path, keys_file: Path) -> None:
        super().__init__()
        self.install, self.keys_file = install, keys_file

    def reload(self, service: str) -> None:
        super().reload(service)
        shutil.copyfile(self.install / "secrets" / "gemini_api_key", self.keys_file)


async def test_gemini_key_rotation_validates_then_refuses_the_old_key(
    tmp_path: Path, ctx: RotationContext, install: Path
) -> None:
    old = (install / "secrets" / "gemini_api_key").read_text().strip()
    async with emulator_process(tmp_path / "emulator", api_keys=[old]) as emulator:
        probe = SdkGeminiProbe(
            model="gemini-2.0-flash", base_url=emulator.base_url, ca_file=emulator.cert.cert_file
        )
        ctx.gemini = probe
        ctx.roller = roller = EmulatorReloadingRoller(install, emulator.api_keys_file)
        assert await asyncio.to_thread(probe.check, old) is None
        await asyncio.to_thread(core.rotate, ctx, [SecretKind.GEMINI_API_KEY])
        new = (install / "secrets" / "gemini_api_key").read_text().strip()
        assert new != old and "\n" not in new
        assert await asyncio.to_thread(probe.check, new) is None
        refusal = await asyncio.to_thread(probe.check, old)
        assert refusal is not None and old not in refusal
        assert ("roll", "gateway") in roller.calls


async def test_a_refused_new_key_stops_before_any_gateway_uses_it(
    tmp_path: Path, ctx: RotationContext, install: Path
) -> None:
    old = (install / "secrets" / "gemini_api_key").read_text().strip()
    new_key_file = tmp_path / "new_key"
    new_key_file.write_text("not-a-key-the-endpoint-knows\n")
    async with emulator_process(tmp_path / "emulator", api_keys=[old]) as emulator:
        ctx.gemini = SdkGeminiProbe(
            model="gemini-2.0-flash", base_url=emulator.base_url, ca_file=emulator.cert.cert_file
        )
        # No reload: the endpoint never learns the new key, as with a mistyped Google key.
        ctx.roller = roller = LocalRoller()
        with pytest.raises(RotationFailed, match="refused"):
            await asyncio.to_thread(
                core.rotate, ctx, [SecretKind.GEMINI_API_KEY], gemini_key_file=new_key_file
            )
        assert ("roll", "gateway") not in roller.calls
        await asyncio.to_thread(core.abort, ctx)
    assert (install / "secrets" / "gemini_api_key").read_text().strip() == old
