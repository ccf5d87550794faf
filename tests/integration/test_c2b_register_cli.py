"""``duka c2b-register`` against a Daraja simulator running on its own, over real HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli import _c2b_register
from payments.simulator import RunningSimulator, SimulatorConfig, start_simulator

CONFIRMATION_SECRET = "5e0c2b9d8f7a6e5d4c3b2a1908f7e6d5"
VALIDATION_SECRET = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
# The process environment a deployment sets; the rest is cleared so the host's cannot leak in.
DUKA_VARIABLES = (
    "MPESA_ENVIRONMENT",
    "MPESA_BASE_URL",
    "MPESA_SHORTCODE",
    "MPESA_TILL_NUMBER",
    "MPESA_CALLBACK_URL",
    "MPESA_C2B_CONFIRMATION_URL",
    "MPESA_C2B_VALIDATION_URL",
    "MPESA_CONSUMER_KEY",
    "MPESA_CONSUMER_SECRET",
    "MPESA_PASSKEY",
    "DUKA_HTTP_HOST",
    "DUKA_HTTP_PORT",
    "DUKA_DATABASE_URL",
    "TELEGRAM_BOT_TOKEN",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
)
CONFIRMATION_URL = f"https://shop.example.com/hooks/c2b/{CONFIRMATION_SECRET}"


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """A `duka simulator` of its own, as production Daraja: registration happens once."""
    running = await start_simulator(SimulatorConfig(callback_delay_seconds=0.05), "127.0.0.1", 0)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: RunningSimulator
) -> pytest.MonkeyPatch:
    """The variables a merchant exports before running the command, and an empty config."""
    for name in DUKA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config_file = tmp_path / "config.toml"
    config_file.write_text("")
    monkeypatch.setenv("DUKA_CONFIG", str(config_file))
    monkeypatch.setenv("MPESA_ENVIRONMENT", "simulator")
    monkeypatch.setenv("MPESA_BASE_URL", sim.base_url)
    monkeypatch.setenv("MPESA_C2B_CONFIRMATION_URL", CONFIRMATION_URL)
    return monkeypatch


async def register() -> tuple[int, list[str]]:
    said: list[str] = []
    code = await _c2b_register(said.append)
    return code, said


def assert_no_secret(said: list[str]) -> None:
    text = "\n".join(said)
    assert CONFIRMATION_SECRET not in text
    assert VALIDATION_SECRET not in text


async def test_first_run_registers_and_second_run_explains(
    environment: pytest.MonkeyPatch, sim: RunningSimulator
) -> None:
    """Registered once with our URLs; a second run is 500.003.1001, explained, exit 0."""
    code, said = await register()
    assert code == 0, said
    registration = sim.simulator.c2b_registration
    assert registration is not None
    assert registration.confirmation_url == CONFIRMATION_URL
    assert registration.validation_url == CONFIRMATION_URL + "/validate"
    assert registration.response_type == "Completed"
    assert registration.short_code == "174379"
    [line] = said
    assert line.startswith("Registered for short code 174379")
    assert "https://shop.example.com/hooks/c2b/***" in line
    assert_no_secret(said)

    again_code, again = await register()
    assert again_code == 0
    [explanation] = again
    assert "500.003.1001" in explanation
    assert "already" in explanation
    assert_no_secret(again)
    assert len(sim.simulator.c2b_register_requests) == 2
    assert sim.simulator.c2b_registration == registration  # Daraja keeps the first URLs


async def test_a_separate_validation_url_is_registered_and_never_printed(
    environment: pytest.MonkeyPatch, sim: RunningSimulator
) -> None:
    """MPESA_C2B_VALIDATION_URL is what gets registered, and its secret is not printed."""
    validation = f"https://shop.example.com/hooks/c2b-check/{VALIDATION_SECRET}"
    environment.setenv("MPESA_C2B_VALIDATION_URL", validation)
    code, said = await register()
    assert code == 0, said
    registration = sim.simulator.c2b_registration
    assert registration is not None
    assert registration.validation_url == validation
    assert_no_secret(said)


async def test_without_a_confirmation_url_it_says_what_to_set(
    environment: pytest.MonkeyPatch, sim: RunningSimulator
) -> None:
    """No MPESA_C2B_CONFIRMATION_URL: exit 2 naming it, nothing sent to Daraja."""
    environment.delenv("MPESA_C2B_CONFIRMATION_URL")
    code, said = await register()
    assert code == 2
    assert "MPESA_C2B_CONFIRMATION_URL is not set" in said[0]
    assert sim.simulator.c2b_register_requests == []


async def test_a_till_is_not_registered_for_the_paybill_fallback(
    environment: pytest.MonkeyPatch, sim: RunningSimulator
) -> None:
    """A till has no account number: exit 2, nothing sent to Daraja."""
    environment.setenv("MPESA_TILL_NUMBER", "600200")
    code, said = await register()
    assert code == 2
    assert "Paybill" in said[0]
    assert sim.simulator.c2b_register_requests == []


async def test_the_duka_command_registers_and_prints_no_secret(
    environment: pytest.MonkeyPatch, sim: RunningSimulator
) -> None:
    """The installed `duka c2b-register`: exit 0, and neither stdout nor the logs hold a secret."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "duka"),
        "c2b-register",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().startswith("Registered for short code 174379")
    assert_no_secret([stdout.decode(), stderr.decode()])
    registration = sim.simulator.c2b_registration
    assert registration is not None
    assert registration.confirmation_url == CONFIRMATION_URL
