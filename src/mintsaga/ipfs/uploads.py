"""Uploading to IPFS with provider failover: Pinata first, Kubo when Pinata is unavailable.

The CID is computed locally before anything is sent, so it is known even when an answer is
lost, and every provider's answer is checked against it: same bytes, same CID, whichever
provider holds them.

Failover rules, inside one call (the caller's retry policy wraps the whole call):

- Pinata answers with the right CID -> ``Upload(cid, "pinata")``.
- Pinata fails *retryably* (down, 5xx, 429) -> Kubo; its right CID -> ``Upload(cid, "kubo")``.
- Pinata fails permanently (400) or needs an operator (401/403) -> raised as is: a bad JWT
  must be seen, not hidden behind the backup.
- Any provider's CID differs from the local one -> PERMANENT ``CidMismatch``.
- Both fail -> Pinata's error (the primary is what recovers; its ``retry_after`` counts), with
  Kubo's failure attached as a note.

A lost answer (Pinata pinned, then the connection dropped) can leave a pin on Pinata while
``provider`` says Kubo: compensation should unpin on both providers (``unpin_all``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import DEFAULT_CID_VERSION, compute_cid
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.provider_cids import ProviderCids
from mintsaga.observability.metrics import record_failover

__all__ = [
    "GatewayReader",
    "IpfsUploader",
    "KuboClient",
    "PinataClient",
    "Provider",
    "Upload",
    "compute_cid",
]

log = logging.getLogger(__name__)

Provider = Literal["pinata", "kubo"]


@dataclass(frozen=True)
class Upload:
    """Where one upload landed."""

    cid: str
    provider: Provider


class IpfsUploader:
    """Pinata with Kubo as the backup provider; see the module docstring for the rules."""

    def __init__(
        self,
        pinata: PinataClient,
        kubo: KuboClient,
        *,
        provider_cids: ProviderCids | None = None,
    ) -> None:
        # Checks a provider's other CID for the same bytes by its blocks; None: refused.
        self._provider_cids = provider_cids
        self._pinata = pinata
        self._kubo = kubo

    def __repr__(self) -> str:
        return f"IpfsUploader(pinata={self._pinata!r}, kubo={self._kubo!r})"

    async def upload(
        self,
        data: bytes,
        *,
        filename: str,
        name: str,
        keyvalues: dict[str, str],
        content_type: str = "application/octet-stream",
        on_other_cid: OtherCidHook | None = None,
    ) -> Upload:
        """Pin ``data`` on Pinata, or on Kubo when Pinata is unavailable. ``content_type``: what
        Pinata's upload form declares for the file (Kubo's add takes none here).

        When both failed and one was refused by its own breaker (opened by itself, not by an
        operator), that one is asked anyway as the last resort: our breakers pick the order,
        they must not fail an upload a provider could still take (as the Solana pool's).

        ``on_other_cid``: called with a provider's other CID as soon as it answers one, before
        anything else (the caller records it as the mint's pin, so compensation unpins it
        whatever happens next); the content is then pinned again on that provider (a repeat
        pin of the same bytes: a compensation that unpinned the CID between the provider's
        answer and the record cannot leave it unpinned) and its blocks checked."""
        cid = await compute_cid(data, DEFAULT_CID_VERSION)

        async def again(provider: Provider) -> str:
            if provider == "pinata":
                return await self._pinata.pin_file(
                    data,
                    filename=filename,
                    name=name,
                    keyvalues=keyvalues,
                    content_type=content_type,
                    last_resort=True,
                )
            return await self._kubo.add(data, filename=filename, last_resort=True)

        landing = _Landing(cid, data, on_other_cid, again)
        try:
            got = await self._pinata.pin_file(
                data,
                filename=filename,
                name=name,
                keyvalues=keyvalues,
                content_type=content_type,
            )
        except ServiceError as primary:
            if not primary.retryable:
                raise
            log.warning(
                "pinata unavailable, failing over to kubo",
                extra={"cid": cid, "code": primary.code, "endpoint": primary.endpoint},
            )
            record_failover("ipfs")
            try:
                got = await self._kubo.add(data, filename=filename)
            except ServiceError as backup:
                if backup.retryable:
                    upload = await self._last_resort(
                        data,
                        landing,
                        primary,
                        backup,
                        filename=filename,
                        name=name,
                        keyvalues=keyvalues,
                        content_type=content_type,
                    )
                    if upload is not None:
                        return upload
                primary.add_note(f"backup provider failed too: {backup}")
                raise primary from primary.__cause__  # keep Pinata's own cause
            return Upload(await self._accepted(landing, got, "kubo"), "kubo")
        return Upload(await self._accepted(landing, got, "pinata"), "pinata")

    async def _last_resort(
        self,
        data: bytes,
        landing: _Landing,
        primary: ServiceError,
        backup: ServiceError,
        *,
        filename: str,
        name: str,
        keyvalues: dict[str, str],
        content_type: str,
    ) -> Upload | None:
        """The providers our own breakers refused, asked anyway; None when none was (or
        each failed again)."""
        if primary.code.endswith("CircuitOpen"):
            try:
                got = await self._pinata.pin_file(
                    data,
                    filename=filename,
                    name=name,
                    keyvalues=keyvalues,
                    content_type=content_type,
                    last_resort=True,
                )
            except ServiceError as again:
                if not again.retryable:
                    raise  # an answer about us (a refused key): not for retries to hide
                log.warning("pinata failed as the last resort", extra={"code": again.code})
            else:
                return Upload(await self._accepted(landing, got, "pinata"), "pinata")
        if backup.code.endswith("CircuitOpen"):
            try:
                got = await self._kubo.add(data, filename=filename, last_resort=True)
            except ServiceError as again:
                if not again.retryable:
                    raise
                log.warning("kubo failed as the last resort", extra={"code": again.code})
            else:
                return Upload(await self._accepted(landing, got, "kubo"), "kubo")
        return None

    async def unpin(self, cid: str, provider: Provider) -> bool:
        """Unpin from one provider; False when it held no pin (safe to repeat)."""
        if provider == "pinata":
            return await self._pinata.unpin(cid)
        if provider == "kubo":
            return await self._kubo.pin_rm(cid)
        raise ValueError(f"unknown IPFS provider {provider!r}")

    async def unpin_all(self, cid: str) -> dict[Provider, bool]:
        """Unpin from every provider (compensation after a possibly lost answer).

        Both are attempted; the first failure is raised after the other has run.
        """
        results: dict[Provider, bool] = {}
        failure: ServiceError | None = None
        providers: tuple[Provider, ...] = ("pinata", "kubo")
        for provider in providers:
            try:
                results[provider] = await self.unpin(cid, provider)
            except ServiceError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return results

    async def _accepted(self, landing: _Landing, got: str, provider: Provider) -> str:
        """The CID the upload landed under: ours, or the provider's other CID for the same
        bytes when its blocks verify against them (ipfs/provider_cids.py); else CidMismatch.
        A provider's other CID is handed to the hook first, then pinned again (`upload`)."""
        expected, data = landing.cid, landing.data
        if got == expected:
            return got
        if landing.on_other_cid is not None:
            await landing.on_other_cid(got)
            repinned = await landing.again(provider)
            if repinned != got:
                log.warning(
                    "provider answered two CIDs for the same bytes",
                    extra={"provider": provider, "first": got, "second": repinned},
                )
                await landing.on_other_cid(repinned)
                got = repinned
        endpoint = self._pinata.api_url if provider == "pinata" else self._kubo.api_url
        reason = "not checked (no provider CID verifier)"
        if self._provider_cids is not None:
            found = await self._provider_cids.mismatch(got, data, provider)
            if found is None:
                log.warning(
                    "provider built another CID for the same bytes; its blocks verify",
                    extra={"cid": expected, "provider_cid": got, "provider": provider},
                )
                return got
            reason = found
        raise _mismatch(expected, got, provider, endpoint, reason)


OtherCidHook = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class _Landing:
    """One upload's bytes, our CID for them, and what to do with a provider's other CID."""

    cid: str
    data: bytes
    on_other_cid: OtherCidHook | None
    again: Callable[[Provider], Awaitable[str]]


def _mismatch(
    expected: str, got: str, provider: Provider, endpoint: str, reason: str
) -> ServiceError:
    return ServiceError(
        f"{provider} stored the content as {got}, but it hashes to {expected} locally "
        f"and {got} does not prove the same bytes ({reason[:300]}); "
        f"the pin on {got} is the mint's (compensation unpins it) when the caller recorded it",
        service=provider,
        kind=ErrorKind.PERMANENT,
        code="CidMismatch",
        endpoint=endpoint,
    )
