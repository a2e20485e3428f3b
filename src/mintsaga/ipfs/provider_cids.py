"""Whether a provider's CID for bytes we uploaded names exactly those bytes, checked by the
CID's blocks (issue 16): a provider that builds another layout than ours (a Kubo node on the
``unixfs-v1-2025`` import profile: 1 MiB chunks, wider nodes) answers another CID for the same
file, and that is not a reason to refuse the upload when the CID's DAG holds our bytes.

- Kubo: its own export of the DAG, ``POST /api/v0/dag/export?arg=<cid>`` ("Streams the
  selected DAG as a .car stream on stdout", docs.ipfs.tech/reference/kubo/rpc/#api-v0-dag-export),
  read bounded and checked block by block (`mintsaga.ipfs.car`).
- Pinata: Pinata's API serves no blocks, so the CID is read through the gateways (the
  dedicated one first), trustless (`GatewayReader.read`), inside the upload attempt's time.

The file reassembled from the verified blocks must equal the bytes uploaded. A DAG that does
not verify, or holds other bytes, answers a reason (the upload is then a ``CidMismatch``); a
provider or gateway that could not be asked raises its retryable ``ServiceError`` (the upload
step is retried); so does any failure of the gateway read for Pinata's CID: only blocks that
verify and hold other bytes are a mismatch.
"""

from __future__ import annotations

import httpx

from mintsaga.errors import ErrorKind, ServiceError, redact_url
from mintsaga.http_errors import (
    BodyRefused,
    capped_error_answer,
    read_bounded,
    status_error,
    transport_error,
)
from mintsaga.ipfs.car import BlockError, Cid, car_allowance, file_from_car
from mintsaga.ipfs.gateways import GatewayReader

KUBO = "kubo"


class ProviderCids:
    """Checks a provider's other CID for our bytes (see the module docstring)."""

    def __init__(
        self, http: httpx.AsyncClient, *, kubo_api_url: str, gateways: GatewayReader | None
    ) -> None:
        self._http = http
        self._kubo_api_url = kubo_api_url.rstrip("/")
        self._gateways = gateways

    def __repr__(self) -> str:
        kubo = redact_url(self._kubo_api_url)
        return f"ProviderCids(kubo_api_url={kubo!r}, gateways={self._gateways!r})"

    async def mismatch(self, cid: str, data: bytes, provider: str) -> str | None:
        """None when ``cid``'s blocks, as ``provider`` serves them, are exactly ``data``;
        else why not (for the ``CidMismatch`` message).

        Raises:
            ServiceError: the provider (or every gateway) could not be asked; retryable when
                asking again may answer.
        """
        try:
            root = Cid.parse(cid)
        except BlockError as exc:
            return str(exc)
        if provider == KUBO:
            body = await self._kubo_export(cid, len(data))
            if body is None:
                return f"kubo's export of {cid} is larger than a CAR of {len(data)} bytes can be"
            try:
                held, _ = file_from_car(body, root, max_bytes=len(data))
            except BlockError as exc:
                return f"kubo's export of {cid} does not verify: {exc}"
        else:
            if self._gateways is None:
                return f"no gateway to read {cid} from and check its blocks"
            try:
                served = await self._gateways.read(cid, max_bytes=len(data))
            except ServiceError as exc:
                # One gateway's failure proves nothing about Pinata's DAG (a public gateway's
                # wrong bytes, one without trustless formats checking with our layout, a CID
                # still being found): asked again, never taken for a mismatch.
                raise ServiceError(
                    f"could not check {cid}'s blocks through the gateways: {exc.message}",
                    service="pinata",
                    kind=ErrorKind.TRANSIENT,
                    code="ProviderCidUnverified",
                    endpoint=exc.endpoint,
                    retry_after=exc.retry_after,
                ) from exc
            if not served.trustless:
                raise ServiceError(
                    f"{cid} was served, but not by its blocks (no trustless format)",
                    service="pinata",
                    kind=ErrorKind.TRANSIENT,
                    code="ProviderCidUnverified",
                    endpoint=redact_url(served.url),
                )
            held = served.data
        if held != data:
            return f"{cid}'s blocks verify but hold other bytes than the ones uploaded"
        return None

    async def _kubo_export(self, cid: str, size: int) -> bytes | None:
        """Kubo's CAR of ``cid``; None when it is larger than a file of ``size`` bytes
        allows."""
        action = f"export {cid}"
        url = f"{self._kubo_api_url}/api/v0/dag/export"
        try:
            async with self._http.stream("POST", url, params={"arg": cid}) as response:
                if not response.is_success:
                    capped = await capped_error_answer(response)
                    raise status_error(
                        capped, service=KUBO, endpoint=self._kubo_api_url, action=action
                    )
                try:
                    return await read_bounded(response, car_allowance(size))
                except BodyRefused:
                    return None
        except httpx.RequestError as exc:
            raise transport_error(
                exc, service=KUBO, endpoint=self._kubo_api_url, action=action
            ) from exc
