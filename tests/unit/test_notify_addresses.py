"""The SSRF guard: which webhook URLs and resolved addresses are refused, and why.

No traffic leaves the machine: resolution goes through injected or monkeypatched
resolvers, and nothing connects.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from freight.errors import InvalidRequestError
from freight.notify.addresses import (
    MAX_URL_LENGTH,
    check_url_text,
    ip_literal,
    refusal,
    resolve_allowed,
)

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.1.1": "link-local",
    "169.254.169.254": "cloud metadata",
    "fd00:ec2::254": "cloud metadata",
    "100.100.100.200": "cloud metadata",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "100.64.0.1": "not a globally routable",  # carrier-grade NAT
    "::1": "loopback",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:169.254.169.254": "cloud metadata",
    "64:ff9b::a00:1": "private",  # NAT64 of 10.0.0.1
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
}
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001:81b::200e"]


@pytest.mark.parametrize(("address", "why"), REFUSED.items())
def test_refused_ranges_say_why(address: str, why: str) -> None:
    """Every refused range (IPv4, IPv6, mapped and embedded forms) is refused with its reason."""
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    """Globally routable addresses are allowed."""
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "::1", "fe80::1", "192.168.0.9"])
def test_allow_private_lets_private_ranges_through(address: str) -> None:
    """``allow_private`` admits loopback, private and link-local receivers."""
    assert refusal(ipaddress.ip_address(address), allow_private=True) is None


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "224.0.0.1", "::"]
)
def test_metadata_multicast_unspecified_stay_refused_with_allow_private(address: str) -> None:
    """Cloud metadata, multicast and unspecified addresses are refused even with allow_private."""
    assert refusal(ipaddress.ip_address(address), allow_private=True) is not None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("[::1]", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("example.com", None),
        ("1.example.com", None),
    ],
)
def test_ip_literals_in_every_form_the_resolver_takes(host: str, expected: str | None) -> None:
    """Bracketed, zoned, decimal and hex IPv4 forms are recognised as the addresses they are."""
    found = ip_literal(host)
    assert (None if found is None else str(found)) == expected


def _refused(url: str, allow_private: bool = False) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        check_url_text(url, allow_private=allow_private)
    assert info.value.code == "webhook_refused"
    return info.value


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "must be http or https, not 'ftp'"),
        ("file:///etc/passwd", "must be http or https, not 'file'"),
        ("hooks.example.com/x", "must be http or https"),
        ("http:///path", "has no host"),
        ("http://hooks.example.com:99999/", "invalid port"),
        ("http://hooks.example .com/", "whitespace"),
        ("http://localhost:8080/hook", "localhost is a loopback name"),
        ("http://api.localhost/hook", "loopback name"),
        ("http://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
        ("http://[::1]:9000/hook", "::1 is a loopback address"),
        ("http://10.0.0.7/hook", "10.0.0.7 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://2130706433/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("hTtP://\u00df\u00dc[\u00a5cz", "not a valid URL"),  # urlsplit: "Invalid IPv6 URL"
        ("http://[::1/hook", "not a valid URL"),
    ],
)
def test_check_url_text_refuses_plainly_wrong_urls(url: str, message: str) -> None:
    """Each plainly refused URL fails at create time with a message saying exactly why."""
    error = _refused(url)
    assert message in error.message


def test_too_long_urls_are_refused() -> None:
    """A URL over 2048 characters is refused, and the message gives both lengths."""
    url = "https://hooks.example.com/" + "a" * MAX_URL_LENGTH
    error = _refused(url)
    assert str(len(url)) in error.message and str(MAX_URL_LENGTH) in error.message


def test_refusal_messages_name_the_host_not_the_url() -> None:
    """The message never echoes the whole URL, which may carry a token in its query."""
    error = _refused("http://10.0.0.7/hook?token=s3cr3t-t0ken")
    assert "s3cr3t-t0ken" not in error.message and "10.0.0.7" in error.message


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/freight",
        "http://hooks.example.com:8080/x?y=1",
        "https://8.8.8.8/",
    ],
)
def test_check_url_text_passes_public_urls(url: str) -> None:
    """A public hostname or address passes unchanged (hostnames are resolved at delivery)."""
    assert check_url_text(url) == url


def test_allow_private_admits_loopback_but_not_metadata() -> None:
    """With allow_private a loopback receiver is fine; the metadata address still is not."""
    assert check_url_text("http://127.0.0.1:9000/hook", allow_private=True)
    assert check_url_text("http://localhost:9000/hook", allow_private=True)
    assert "cloud metadata" in _refused("http://169.254.169.254/", allow_private=True).message


def _resolver(answers: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    return resolve


async def test_a_hostname_resolving_to_a_private_address_is_refused() -> None:
    """A harmless-looking name that resolves to 10.x is refused at delivery time."""
    resolver = _resolver({"hooks.example.com": ["10.20.30.40"]})
    with pytest.raises(InvalidRequestError) as info:
        await resolve_allowed("hooks.example.com", 443, resolver=resolver)
    assert info.value.code == "webhook_refused"
    assert "resolves to 10.20.30.40, a private address" in info.value.message


async def test_a_mix_of_public_and_private_answers_is_refused_whole() -> None:
    """One refused address among public ones refuses the name (the client might pick it)."""
    resolver = _resolver({"rebind.example.com": ["93.184.216.34", "fd00:ec2::254"]})
    with pytest.raises(InvalidRequestError, match="cloud metadata"):
        await resolve_allowed("rebind.example.com", 443, resolver=resolver)


async def test_public_answers_are_returned() -> None:
    """A name resolving to public addresses yields them, for the connection to use."""
    resolver = _resolver({"hooks.example.com": ["93.184.216.34", "2606:4700:4700::1111"]})
    addresses = await resolve_allowed("hooks.example.com", 443, resolver=resolver)
    assert addresses == ["93.184.216.34", "2606:4700:4700::1111"]


async def test_allow_private_lets_a_private_answer_through() -> None:
    """With allow_private a name resolving to a private address (on-premise) is fine."""
    resolver = _resolver({"hooks.internal": ["10.0.0.8"]})
    assert await resolve_allowed("hooks.internal", 80, allow_private=True, resolver=resolver) == [
        "10.0.0.8"
    ]


async def test_the_system_resolver_path_goes_through_getaddrinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default resolver asks getaddrinfo through the loop, and its answer is checked."""
    asked: list[tuple[str, int]] = []

    def fake_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.7.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(InvalidRequestError, match=r"192\.168\.7\.7, a private address"):
        await resolve_allowed("printer.example.com", 443)
    assert asked == [("printer.example.com", 443)]


async def test_localhost_is_refused_without_resolving() -> None:
    """``localhost`` is refused at delivery time too, before any lookup."""

    async def never(host: str, port: int) -> list[str]:
        raise AssertionError("resolved")

    with pytest.raises(InvalidRequestError, match="loopback name"):
        await resolve_allowed("localhost", 80, resolver=never)


async def test_ip_literals_are_checked_without_resolving() -> None:
    """An address in the URL is judged as is; no resolver is asked."""

    async def never(host: str, port: int) -> list[str]:
        raise AssertionError("resolved")

    with pytest.raises(InvalidRequestError, match="loopback"):
        await resolve_allowed("0x7f.0.0.1", 80, resolver=never)
    assert await resolve_allowed("8.8.8.8", 443, resolver=never) == ["8.8.8.8"]


async def test_a_name_without_answers_is_an_oserror() -> None:
    """A name that resolves to nothing is a delivery failure (OSError), not a refusal."""
    with pytest.raises(OSError, match="no address"):
        await resolve_allowed("void.example.com", 443, resolver=_resolver({"void.example.com": []}))
