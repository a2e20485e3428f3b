"""The Kubo emulator's ``Import`` configuration and how ``ipfs add`` resolves its layout.

From Kubo's own documentation and code (ipfs/kubo at 867cdc5, read 2026-12-03):

- docs/config.md "Import": ``Import.CidVersion`` (default 0), ``Import.UnixFSRawLeaves``
  ("false if CidVersion=0; true if CidVersion=1"), ``Import.UnixFSChunker`` (default
  ``size-262144``; ``size-<bytes>`` up to "2MiB - 256 bytes (2096896 bytes)"),
  ``Import.HashFunction`` (default sha2-256), ``Import.UnixFSFileMaxLinks`` (default 174),
  ``Import.UnixFSDirectoryMaxLinks``, ``Import.UnixFSHAMTDirectoryMaxFanout``,
  ``Import.UnixFSHAMTDirectorySizeThreshold``, ``Import.UnixFSHAMTDirectorySizeEstimation``,
  ``Import.UnixFSDAGLayout`` (balanced | trickle); unset values are JSON ``null`` ("apply the
  default value"). "Note that using CLI flags will override the options defined here."
- config/profile.go: ``unixfs-v1-2025`` sets CidVersion 1, UnixFSRawLeaves true, UnixFSChunker
  ``size-1048576``, HashFunction sha2-256, UnixFSFileMaxLinks 1024, UnixFSDirectoryMaxLinks 0,
  UnixFSHAMTDirectoryMaxFanout 256, UnixFSHAMTDirectorySizeThreshold ``256KiB``,
  UnixFSHAMTDirectorySizeEstimation ``block``, UnixFSDAGLayout ``balanced``;
  ``unixfs-v0-2015`` (alias ``legacy-cid-v0``) CidVersion 0, UnixFSRawLeaves **false**,
  ``size-262144``, 174 links, estimation ``links``, the rest alike.
- core/commands/add.go: each of ``--chunker``, ``--hash``, ``--cid-version``,
  ``--raw-leaves``, ``--max-file-links``, ``--trickle`` falls back to its Import key only
  when the flag is absent; core/coreiface/options/unixfs.go: a CID version above 0 turns raw
  leaves on only when raw leaves were not set (by flag *or* config), so under
  ``unixfs-v0-2015`` an ``add --cid-version=1`` builds dag-pb leaves.

Only the file layout is modelled (directories are not added through the emulator); the
directory and HAMT keys are kept and shown, not used.

``ignore_add_flags`` is a devstack knob, not a Kubo setting: the node then builds every file
with its Import config alone, as a node behind a proxy that drops query parameters, or a node
too old for a flag (``--max-file-links`` came with Kubo 0.35), would. It lets tests see a
provider return another CID than ours for the same bytes.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from devstack.ipfs.unixfs import MAX_CHUNK, Layout, LayoutError

DEFAULT_CHUNKER = "size-262144"
DEFAULT_MAX_FILE_LINKS = 174

IMPORT_KEYS: dict[str, type | tuple[type, ...]] = {
    "CidVersion": int,
    "UnixFSRawLeaves": bool,
    "UnixFSChunker": str,
    "HashFunction": str,
    "UnixFSFileMaxLinks": int,
    "UnixFSDirectoryMaxLinks": int,
    "UnixFSHAMTDirectoryMaxFanout": int,
    "UnixFSHAMTDirectorySizeThreshold": str,
    "UnixFSHAMTDirectorySizeEstimation": str,
    "UnixFSDAGLayout": str,
    "BatchMaxNodes": int,
    "BatchMaxSize": int,
    "FastProvideRoot": bool,
    "FastProvideDAG": bool,
    "FastProvideWait": bool,
}

_V0_2015: dict[str, Any] = {
    "CidVersion": 0,
    "UnixFSRawLeaves": False,
    "UnixFSChunker": "size-262144",
    "HashFunction": "sha2-256",
    "UnixFSFileMaxLinks": 174,
    "UnixFSDirectoryMaxLinks": 0,
    "UnixFSHAMTDirectoryMaxFanout": 256,
    "UnixFSHAMTDirectorySizeThreshold": "256KiB",
    "UnixFSHAMTDirectorySizeEstimation": "links",
    "UnixFSDAGLayout": "balanced",
}
PROFILES: dict[str, dict[str, Any]] = {
    "unixfs-v1-2025": {
        "CidVersion": 1,
        "UnixFSRawLeaves": True,
        "UnixFSChunker": "size-1048576",
        "HashFunction": "sha2-256",
        "UnixFSFileMaxLinks": 1024,
        "UnixFSDirectoryMaxLinks": 0,
        "UnixFSHAMTDirectoryMaxFanout": 256,
        "UnixFSHAMTDirectorySizeThreshold": "256KiB",
        "UnixFSHAMTDirectorySizeEstimation": "block",
        "UnixFSDAGLayout": "balanced",
    },
    "unixfs-v0-2015": _V0_2015,
    "legacy-cid-v0": _V0_2015,
}
# The devstack's name for "a fresh `ipfs init`": every Import key unset (null).
DEFAULT_PROFILE = "default"


class KuboConfigError(ValueError):
    """A config key, value or profile Kubo would refuse (the message is Kubo's form)."""


class UnsupportedImport(ValueError):
    """An import option Kubo accepts but the devstack does not model (names it)."""


def check_kubo_profile(name: str) -> str:
    """``name`` if it is a profile the emulator applies (``up --kubo-profile``)."""
    if name != DEFAULT_PROFILE and name not in PROFILES:
        known = ", ".join([*PROFILES, DEFAULT_PROFILE])
        raise KuboConfigError(f"{name!r} is not a profile; known: {known}")
    return name


def parse_chunker(text: str) -> int:
    """``size-<bytes>`` -> bytes (boxo chunker/parse.go's forms; rabin/buzhash not modelled)."""
    match = re.fullmatch(r"size-(\d+)", text)
    if match is None:
        if text.startswith(("rabin", "buzhash")):
            raise UnsupportedImport(f"chunker={text}: only size-<bytes> is modelled")
        raise KuboConfigError(f"unrecognized chunker option: {text}")
    size = int(match.group(1))
    if size <= 0:
        raise KuboConfigError("chunker size must be greater than 0")
    if size > MAX_CHUNK:
        raise KuboConfigError(
            f"chunker parameters may not exceed the maximum chunk size of {MAX_CHUNK}"
        )
    return size


@dataclass
class AddFlags:
    """The add flags that change a file's CID, as given on the request (None: absent)."""

    cid_version: int | None = None
    raw_leaves: bool | None = None
    chunker: str | None = None
    hash: str | None = None
    max_file_links: int | None = None
    trickle: bool | None = None


class KuboConfig:
    """The node's config as ``ipfs config`` shows it (the ``Import`` section modelled)."""

    def __init__(self, profile: str = DEFAULT_PROFILE) -> None:
        self.imports: dict[str, Any] = dict.fromkeys(IMPORT_KEYS)
        self.profile = DEFAULT_PROFILE  # the last profile applied (keys set later on top)
        self.ignore_add_flags = False  # module docstring: not a Kubo setting
        self.apply_profile(profile)

    def show(self) -> dict[str, Any]:
        """``config show``: the sections the emulator has (Identity.PrivKey never shown)."""
        return {"Import": dict(self.imports)}

    def get(self, key: str) -> Any:
        section, _, name = key.partition(".")
        if section != "Import" or not name:
            if section == "Import" and not name:
                return dict(self.imports)
            raise KuboConfigError(f'failed to get config value: "key has no attribute {key}"')
        if name not in self.imports:
            raise KuboConfigError(f'failed to get config value: "key has no attribute {name}"')
        return self.imports[name]

    def set(self, key: str, value: Any) -> None:
        section, _, name = key.partition(".")
        if section != "Import" or name not in IMPORT_KEYS:
            raise KuboConfigError(
                f"failed to set config value: key {key} is not modelled by the devstack"
            )
        wanted = IMPORT_KEYS[name]
        ok = value is None or (
            isinstance(value, wanted) and not (wanted is int and isinstance(value, bool))
        )
        if not ok:
            raise KuboConfigError(
                f"failed to set config value: json: cannot unmarshal {type(value).__name__}"
                f" into Go struct field Config.Import.{name} (maybe use --json?)"
            )
        self.imports[name] = value

    def apply_profile(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``config profile apply``: (old config, new config)."""
        if name == DEFAULT_PROFILE:
            changes: dict[str, Any] = dict.fromkeys(IMPORT_KEYS)
        elif name in PROFILES:
            changes = PROFILES[name]
        else:
            raise KuboConfigError(f"{name} is not a profile")
        old = copy.deepcopy(self.show())
        self.imports.update(changes)
        self.profile = name
        return old, self.show()

    def layout_for(self, flags: AddFlags) -> Layout:
        """The layout ``ipfs add`` builds with these flags over this config (add.go)."""
        if self.ignore_add_flags:
            flags = AddFlags()
        cfg = self.imports
        hash_name = (flags.hash or cfg["HashFunction"] or "sha2-256").lower()
        if hash_name != "sha2-256":
            raise UnsupportedImport(f"hash={hash_name}: only sha2-256 is modelled")
        trickle = flags.trickle
        if trickle is None and cfg["UnixFSDAGLayout"] is not None:
            trickle = cfg["UnixFSDAGLayout"] == "trickle"
        if trickle:
            raise UnsupportedImport("trickle: only the balanced layout is modelled")
        chunk = parse_chunker(flags.chunker or cfg["UnixFSChunker"] or DEFAULT_CHUNKER)
        cid_version = flags.cid_version
        if cid_version is None:
            cid_version = cfg["CidVersion"] if cfg["CidVersion"] is not None else 0
        if cid_version not in (0, 1):
            raise KuboConfigError(f"unknown CID version: {cid_version}")
        raw_leaves = flags.raw_leaves
        if raw_leaves is None:
            raw_leaves = cfg["UnixFSRawLeaves"]
        if raw_leaves is None:  # options/unixfs.go: CIDv1 turns raw leaves on when unset
            raw_leaves = cid_version > 0
        max_links = flags.max_file_links
        if max_links is None:
            max_links = cfg["UnixFSFileMaxLinks"] or DEFAULT_MAX_FILE_LINKS
        try:
            return Layout(
                cid_version=cid_version,
                raw_leaves=raw_leaves,
                chunk_size=chunk,
                max_links=max_links,
            )
        except LayoutError as exc:
            raise KuboConfigError(str(exc)) from exc
