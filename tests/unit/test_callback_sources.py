"""Where a callback came from: the peer, or behind our own proxies the forwarded client."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from payments.callback_sources import SAFARICOM_CALLBACK_IPS, CallbackSources, IpMode
from storage.sealing import generate_key

SAFARICOM = "196.201.214.200"


def empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("")
    return path


def sources(*proxies: str) -> CallbackSources:
    return CallbackSources(
        IpMode.ENFORCE,
        frozenset({ipaddress.ip_address(SAFARICOM)}),
        tuple(ipaddress.ip_network(p) for p in proxies),
    )


def test_without_trusted_proxies_a_forwarded_header_is_ignored() -> None:
    assert sources().source_of("203.0.113.9", SAFARICOM) == "203.0.113.9"


def test_behind_a_trusted_proxy_the_forwarded_client_counts() -> None:
    assert sources("10.0.0.0/8").source_of("10.0.0.2", SAFARICOM) == SAFARICOM


def test_only_the_hop_our_proxy_saw_counts_not_what_the_client_claimed() -> None:
    """The client can write anything at the left of the header; our proxy appends."""
    found = sources("10.0.0.0/8").source_of("10.0.0.2", f"{SAFARICOM}, 203.0.113.9")
    assert found == "203.0.113.9"


def test_an_unreadable_forwarded_hop_is_no_address() -> None:
    found = sources("10.0.0.2/32").source_of("10.0.0.2", "not-an-ip")
    assert found is None
    assert not sources().listed(found)


def test_only_listed_addresses_are_listed() -> None:
    assert sources().listed(SAFARICOM)
    assert not sources().listed("196.201.214.201")


def test_production_defaults_to_safaricoms_addresses_and_logging(tmp_path: Path) -> None:
    env = {
        "MPESA_ENVIRONMENT": "sandbox",
        "DUKA_DATA_KEY": generate_key(),
        "MPESA_CONSUMER_KEY": "k",
        "MPESA_CONSUMER_SECRET": "s",
        "MPESA_PASSKEY": "p",
        "MPESA_CALLBACK_URL": "https://shop.example.com/hooks/stk/Zk3p9qLm2VbX8rT5wYc7NdA4hG6jE",
    }
    config = load_config(env=env, path=empty_file(tmp_path))
    assert config.callback_sources.mode is IpMode.LOG
    assert {str(a) for a in config.callback_sources.allowed} == set(SAFARICOM_CALLBACK_IPS)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DUKA_CALLBACK_IP_MODE", "block"),
        ("DUKA_CALLBACK_IPS", "196.201.214.200,nope"),
        ("DUKA_TRUSTED_PROXIES", "10.0.0.0/33"),
    ],
)
def test_a_wrong_source_setting_names_its_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(env={name: value}, path=empty_file(tmp_path))
    assert refused.value.key == name
