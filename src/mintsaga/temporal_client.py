"""One way to reach Temporal: `connect()`, for the worker, the API, the CLI and the tests.

Which Temporal, and how (address, namespace, API key, TLS, gRPC metadata, a TOML profile), is
a `mintsaga.settings.TemporalTarget`, read with the Temporal SDK's own environment
configuration (`temporalio.envconfig`) plus the older names this project used, as aliases.
What the caller adds: the data converter (the product's pydantic one, with the codec where
MINTSAGA_CODEC_KEYS is set), interceptors (tracing) and the runtime (the SDK's metrics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime

from mintsaga.temporal_settings import TemporalTarget


async def connect(
    *,
    data_converter: DataConverter,
    target: TemporalTarget | None = None,
    env: Mapping[str, str] | None = None,
    interceptors: Sequence[Interceptor] = (),
    runtime: Runtime | None = None,
) -> Client:
    """A client for `target` (default: read from `env`, default this process's environment)."""
    options = (target or TemporalTarget.from_env(env)).connect_options()
    return await Client.connect(
        options.pop("target_host"),
        data_converter=data_converter,
        interceptors=interceptors,
        runtime=runtime,
        **options,
    )
