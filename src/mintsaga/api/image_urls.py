"""The static half of the worker's image checks, run before a mint starts.

A URL a worker would refuse (not https; a host the one address policy, `mintsaga.addresses`,
refuses as written: any spelling of a loopback, private, reserved, link-local or metadata
address, the IPv6 forms carrying one, `localhost`) is refused here, before anything is started;
`mintsaga.ipfs.images` does the rest, per redirect hop, with the addresses each host resolves to.
"""

from __future__ import annotations

import os

from mintsaga.api.errors import StarterError
from mintsaga.ipfs.images import PRIVATE_URLS_SETTING, url_problem
from mintsaga.setting_readers import SettingsError, bool_setting
from mintsaga.workflows.models import (
    MintRequest,
)


def allow_private_urls_here() -> bool:
    """MINT_IMAGE_ALLOW_PRIVATE_URLS where the starter runs (the devstack sets it)."""
    try:
        return bool_setting(os.environ, PRIVATE_URLS_SETTING)
    except SettingsError as exc:
        raise StarterError(str(exc)) from None


def check_image_url(request: MintRequest, *, allow_private_urls: bool | None = None) -> None:
    """Refuse an image URL no worker should fetch, before anything starts.

    Only https, to a host `mintsaga.ipfs.images.url_problem` lets through (the address policy
    on the host as written). With `allow_private_urls` (the devstack: its servers are on
    loopback) http and loopback or private hosts pass; link-local and metadata addresses
    (169.254.169.254, fd00:ec2::254) never do. Host names are resolved by the worker, which
    checks every address of every hop again.
    """
    url = request.image.url
    if url is None:
        return
    allow = allow_private_urls_here() if allow_private_urls is None else allow_private_urls
    problem = url_problem(url, allow_private=allow)
    if problem:
        raise StarterError(f"invalid request, nothing started: image.url: {problem}")
