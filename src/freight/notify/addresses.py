"""The SSRF guard: which URLs freight may POST a webhook to (or call from a pipeline's
``kind: http`` step: the same guard, the same ``allow_private``).

A webhook URL comes from whoever creates a prediction, so without a guard any
caller could make freight's servers call into the private network (the metadata
service of a cloud VM, an admin port on loopback). Two checks:

* :func:`check_url_text` at create time refuses what is plainly wrong from the
  text alone: a scheme other than http(s), an over-long URL, ``localhost``, an IP
  literal in a refused range. A hostname is not resolved then: what it resolves
  to at create time says nothing about delivery time.
* :func:`resolve_allowed` at delivery time resolves the host and refuses it when
  *any* address is in a refused range. The webhook sink calls it from inside its
  connection backend (``sinks/webhook.py``) and connects to an address it just
  checked, so a DNS answer that changes between check and connect (rebinding)
  cannot slip through.

``allow_private=True`` lets private, loopback and link-local receivers through
(on-premise deployments, tests). Cloud metadata addresses stay refused even then:
no legitimate receiver lives there, and it is the address an attacker wants.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

from freight.errors import InvalidRequestError

MAX_URL_LENGTH: Final = 2048
SCHEMES: Final = frozenset({"http", "https"})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: instance metadata services (AWS/GCP/Azure/OpenStack; AWS's IPv6 one; Alibaba)
METADATA: Final[frozenset[IPAddress]] = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LEGACY_V4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)

#: ``(host, port) -> addresses``: the system resolver by default; tests inject one
Resolver = Callable[[str, int], Awaitable[list[str]]]


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), judged as itself."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why freight must not connect to ``ip`` (e.g. ``"a private address"``), or None."""
    inner = _embedded_v4(ip)
    if inner is not None:
        return refusal(inner, allow_private=allow_private)
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if allow_private:
        return None
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a globally routable address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one, in any form the system resolver would
    take (``[::1]``, ``fe80::1%eth0``, ``2130706433``, ``0x7f.1``), else None."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _LEGACY_V4.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def _refuse(message: str, **detail: object) -> InvalidRequestError:
    return InvalidRequestError(message, code="webhook_refused", **detail)


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def check_url_text(url: str, *, allow_private: bool = False, what: str = "webhook") -> str:
    """Refuse a webhook URL that is plainly not allowed, from its text alone; return it.
    ``what`` names the URL's use in messages (``webhook``; ``http step``).

    Raises InvalidRequestError (``webhook_refused``) whose message says exactly why.
    The message names the host, never the whole URL (which may carry a token).
    A URL accepted once is accepted from memory after (the text alone decides; most
    creates of a service name the same few URLs): a refusal is never remembered.
    """
    return _checked(url, allow_private, what)


@functools.lru_cache(maxsize=1024)
def _checked(url: str, allow_private: bool, what: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(
            f"the {what} URL is {len(url)} characters long; at most {MAX_URL_LENGTH} are taken",
            reason="too_long",
        )
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise _refuse(f"the {what} URL contains whitespace or control characters", reason="text")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed "[" of an IPv6 host, which urlsplit refuses
        raise _refuse(f"the {what} URL is not a valid URL", reason="text") from None
    if parts.scheme.lower() not in SCHEMES:
        shown = parts.scheme or "(none)"
        raise _refuse(f"the {what} URL must be http or https, not {shown!r}", reason="scheme")
    try:
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise _refuse(f"the {what} URL has an invalid port", reason="port") from None
    if not host:
        raise _refuse(f"the {what} URL has no host", reason="host")
    if allow_private:
        ip = ip_literal(host)
        why = None if ip is None else refusal(ip, allow_private=True)
    elif _is_localhost(host):
        why = "a loopback name"
    else:
        ip = ip_literal(host)
        why = None if ip is None else refusal(ip)
    if why is not None:
        raise _refuse(f"the {what} host {host} is {why}", reason="address", host=host)
    return url


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now, through the event loop's getaddrinfo."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


async def resolve_allowed(
    host: str,
    port: int = 443,
    *,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    what: str = "webhook",
) -> list[str]:
    """Resolve ``host`` at delivery time and return its addresses, every one allowed.

    Raises InvalidRequestError (``webhook_refused``) when any address is refused (a
    name that resolves to a mix is refused whole: the attacker picks which one the
    client would use); lets OSError through when the name does not resolve.
    """
    literal = ip_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        if not allow_private and _is_localhost(host):
            raise _refuse(f"the {what} host {host} is a loopback name", host=host)
        addresses = await (resolver or system_resolve)(host, port)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for text in addresses:
        why = refusal(ipaddress.ip_address(text.split("%", 1)[0]), allow_private=allow_private)
        if why is not None:
            raise _refuse(
                f"the {what} host {host} resolves to {text}, {why}", host=host, address=text
            )
    return addresses
