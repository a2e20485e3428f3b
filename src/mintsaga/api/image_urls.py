"""The static half of the worker's image checks, run before a mint starts.

A URL a worker would refuse (not https, a loopback, private or link-local host) is refused here,
before anything is started; `mintsaga.ipfs.images` does the rest, per redirect hop, with the
addresses each host resolves to.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

from mintsaga.api.errors import StarterError
from mintsaga.ipfs.images import is_link_local, is_public_address
from mintsaga.workflows.models import (
    MintRequest,
)

# The static half of the worker's image checks (clients.images does the rest, per redirect hop).
PRIVATE_URLS_SETTING = "MINT_IMAGE_ALLOW_PRIVATE_URLS"


def allow_private_urls_here() -> bool:
    """MINT_IMAGE_ALLOW_PRIVATE_URLS where the starter runs (the devstack sets it)."""
    raw = os.environ.get(PRIVATE_URLS_SETTING, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise StarterError(f"{PRIVATE_URLS_SETTING}: {raw!r} is not a boolean (use true or false)")


def check_image_url(request: MintRequest, *, allow_private_urls: bool | None = None) -> None:
    """Refuse an image URL no worker should fetch, before anything starts.

    Only https, to a host that is not a loopback, private or link-local address literal (or
    `localhost`). With `allow_private_urls` (the devstack: its servers are on loopback) http
    and private hosts pass; link-local (169.254.169.254, cloud metadata) never does. Host
    names are resolved by the worker, which checks every address of every hop again.
    """
    url = request.image.url
    if url is None:
        return
    allow = allow_private_urls_here() if allow_private_urls is None else allow_private_urls
    problem = _image_url_problem(url, allow)
    if problem:
        raise StarterError(f"invalid request, nothing started: image.url: {problem}")


def _image_url_problem(url: str, allow_private: bool) -> str | None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("https", "http"):
        return f"must be an https URL, not {parts.scheme or 'schemeless'}"
    if not host:
        return "has no host"
    if parts.scheme == "http" and not allow_private:
        return f"must be https (http is for the devstack only: {PRIVATE_URLS_SETTING})"
    address = _address_literal(host)
    if address is not None and is_link_local(address):
        return f"host {host} is link-local (cloud metadata lives there); it is never fetched"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"host {host} is loopback; only public hosts may be fetched"
    if address is not None and not is_public_address(address):
        return (
            f"host {host} is a loopback, private or reserved address;"
            " only public hosts may be fetched"
        )
    return None


def _address_literal(host: str) -> str | None:
    """The IP address a host literal spells (127.1 and 2130706433 too, as resolvers read them)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if all(c in "0123456789abcdefx." for c in host.lower()):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None
