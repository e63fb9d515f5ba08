"""Who may reach the service: loopback binding, the Host allowlist and peers in local mode.

In local mode (``LAYERTRACER_AUTH=none``) the service answers this machine only:
- the settings refuse a non-loopback ``LAYERTRACER_HOST`` (``backend.settings``);
- ``ExposureGuard`` refuses a request from a peer that is not on a loopback address (403), in case the
  server was bound elsewhere by hand (``uvicorn --host 0.0.0.0``), and a Host header outside the
  allowlist (400), which is what stops a DNS-rebinding page in the user's own browser from driving the
  local API (its requests carry the attacker's host name).
``LAYERTRACER_INSECURE_EXPOSE_WITHOUT_AUTH=1`` lifts the peer rule and the bind rule for those who put
their own authenticating gateway in front; the Host allowlist still applies. In token mode the
allowlist is ``*`` unless ``LAYERTRACER_ALLOWED_HOSTS`` names hosts.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Iterable, Optional

# Host names that mean this machine, whatever the resolver says.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback_host(host: Optional[str]) -> bool:
    """Whether a bind address or peer address is on this machine only: ``localhost``, 127.0.0.0/8,
    ::1 (also IPv4-mapped). Wildcards (``0.0.0.0``, ``::``, ``""``) and other names are not."""
    if not host:
        return False
    text = host.strip().strip("[]").lower()
    if text == "localhost" or text.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def host_name(header: str) -> str:
    """The name part of a Host header, lower-cased: ``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text[1:]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def default_allowed_hosts(auth: str, bind_host: str) -> list[str]:
    """Local mode: the loopback names (and the bind address when it is a specific loopback one);
    token mode: any host (``*``)."""
    if auth == "token":
        return ["*"]
    hosts = list(LOOPBACK_NAMES)
    bound = host_name(bind_host)
    if is_loopback_host(bound) and bound not in hosts:
        hosts.append(bound)
    return hosts


def _host_allowed(name: str, allowed: Iterable[str]) -> bool:
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def _peer_is_local(client) -> bool:
    # No peer (a unix socket) or a peer that is no IP address (an in-process test transport) is not a
    # network peer; a TCP peer always arrives as an IP address.
    if not client or not client[0]:
        return True
    try:
        ipaddress.ip_address(str(client[0]).strip("[]"))
    except ValueError:
        return True
    return is_loopback_host(str(client[0]))


class ExposureGuard:
    """ASGI middleware: the Host allowlist (400) and, in local mode, loopback peers only (403)."""

    def __init__(self, app, *, allowed_hosts: list[str], local_only: bool) -> None:
        self.app, self.allowed_hosts, self.local_only = app, allowed_hosts, local_only

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        name = host_name(headers.get(b"host", b"").decode("latin-1"))
        if not _host_allowed(name, self.allowed_hosts):
            return await _refuse(scope, send, 400, f"host {name!r} is not allowed here "
                                 "(LAYERTRACER_ALLOWED_HOSTS lists the names this server answers to)")
        if self.local_only and not _peer_is_local(scope.get("client")):
            return await _refuse(scope, send, 403, "this server runs without authentication and answers this "
                                 "machine only (set LAYERTRACER_AUTH=token to serve a network)")
        return await self.app(scope, receive, send)


async def _refuse(scope, send, status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def dashboard_exposure_problem(api_url: str, api_auth: Optional[str], insecure_override: bool) -> Optional[str]:
    """Why a dashboard served alone may not answer other machines, or None when it may.

    The dashboard holds no credential of its own: each call it makes carries its browser tab's token.
    It is therefore as open as the API it drives, and may face a network only when that API checks
    tokens (``api_auth``, from the API's ``/health``; None: it did not answer) or behind the user's
    own authenticating gateway (``insecure_override``).
    """
    if api_auth == "token" or insecure_override:
        return None
    why = ("did not answer, so whether it checks tokens is unknown (start the API first)" if api_auth is None
           else "runs without authentication (LAYERTRACER_AUTH=none), so anyone reaching the dashboard could drive it")
    return f"the API at {api_url} {why}"
