"""A classified error never carries NUL: its message may quote a remote host's answer, and it
ends up in workflow histories, logs and Postgres text (which refuses NUL). Nor an endpoint's key:
`redact_url` takes it out of every URL shape the major Solana RPC providers document."""

from __future__ import annotations

import httpx
import pytest

from mintsaga.errors import ErrorKind, ServiceError, redact_url, url_secrets, without_nul
from mintsaga.http_errors import json_body


def test_nul_in_a_message_is_shown_not_kept() -> None:
    assert without_nul("a\x00b\x00") == "a\ufffdb\ufffd"
    error = ServiceError(
        "image host answered 404: not\x00found",
        service="image",
        kind=ErrorKind.PERMANENT,
        code="ImageNotFound",
    )
    assert "\x00" not in error.message and "\x00" not in str(error)
    assert error.message.endswith("not\ufffdfound")


# -- redact_url: the forms the major Solana RPC providers use ---------------------------------
#
# Each row: a URL as its provider's documentation spells it (the keys made up), the secrets in it,
# and what may be shown. The keys' lengths and alphabets are the docs' where they say; where the
# docs only show a placeholder (YOUR_API_KEY, <ACCESS_TOKEN>, "redacted"), the row says so.

HELIUS_KEY = "0f4b6a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"  # docs: YOUR_API_KEY (a UUID in the dashboard)
QUICKNODE_TOKEN = "3f2a9c1b7d4e8f0a6b5c2d1e9f8a7b6c5d4e3f2a"  # docs: "redacted"; length not given
ALCHEMY_KEY = "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1v_"  # docs: API_KEY; length not given
TRITON_TOKEN = "3b9f2c1e-7a4d-4e8b-9c0f-1a2b3c4d5e6f"  # docs: your-secret-token; format not given
TRITON_HOST_KEY = "5f3e2d1c0b9a8f7e"  # the <name>-<key> host form: not in the docs found
ANKR_KEY = "9c1f" * 16  # docs: <API_KEY>; 64 hex is what the dashboard issues (docs silent)
CHAINSTACK_KEY = "4e0a7c2d9b1f6e3a8c5d0b7f2e9a4c61"  # docs' example key: 32 hex, in the path
CHAINSTACK_USER, CHAINSTACK_PASSWORD = "elastic-user", "wobbly-Hat-7-pencil-9"  # password auth
GETBLOCK_TOKEN = "0123abcd4567ef890123abcd4567ef89"  # docs: <ACCESS_TOKEN>; 32 hex issued
GETBLOCK_OLD_KEY = "a7e1c3b5-9d2f-4a6b-8c0e-1f3a5b7c9d2e"  # the deprecated API key
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtaW50c2FnYSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"

REDACTIONS = [
    # Helius, https://www.helius.dev/docs/api-reference/endpoints: the key in the query,
    # `https://mainnet.helius-rpc.com/?api-key=YOUR_API_KEY`, `wss://` the same.
    (
        f"https://mainnet.helius-rpc.com/?api-key={HELIUS_KEY}",
        [HELIUS_KEY],
        "https://mainnet.helius-rpc.com/",
    ),
    (
        f"wss://mainnet.helius-rpc.com/?api-key={HELIUS_KEY}",
        [HELIUS_KEY],
        "wss://mainnet.helius-rpc.com/",
    ),
    (
        f"https://devnet.helius-rpc.com?api-key={HELIUS_KEY}&commitment=confirmed",
        [HELIUS_KEY],
        "https://devnet.helius-rpc.com",
    ),
    # QuickNode, https://quicknode.com/docs/quicknode-sdk/Solana/Overview: the token is the
    # path, `https://some-cool-name.solana-mainnet.quiknode.pro/<token>` (shown "redacted").
    (
        f"https://some-cool-name.solana-mainnet.quiknode.pro/{QUICKNODE_TOKEN}/",
        [QUICKNODE_TOKEN],
        "https://some-cool-name.solana-mainnet.quiknode.pro/***/",
    ),
    (
        f"wss://some-cool-name.solana-mainnet.quiknode.pro/{QUICKNODE_TOKEN}/",
        [QUICKNODE_TOKEN],
        "wss://some-cool-name.solana-mainnet.quiknode.pro/***/",
    ),
    # Alchemy, https://www.alchemy.com/rpc/solana: `https://solana-mainnet.g.alchemy.com/v2/
    # API_KEY`, and `wss://` the same.
    (
        f"https://solana-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
        [ALCHEMY_KEY],
        "https://solana-mainnet.g.alchemy.com/v2/***",
    ),
    (
        f"wss://solana-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
        [ALCHEMY_KEY],
        "wss://solana-mainnet.g.alchemy.com/v2/***",
    ),
    # Triton One, https://docs.triton.one/getting-started: the endpoint
    # `https://your-app.mainnet.rpcpool.com`, the secret token appended as its path. Older
    # endpoints carry a key in the host label (`<name>-<key>.mainnet.rpcpool.com`); the docs
    # found do not show that form, so it is masked by shape.
    (
        f"https://mintsaga.mainnet.rpcpool.com/{TRITON_TOKEN}",
        [TRITON_TOKEN],
        "https://mintsaga.mainnet.rpcpool.com/***",
    ),
    (
        f"https://mintsaga-{TRITON_HOST_KEY}.mainnet.rpcpool.com/",
        [TRITON_HOST_KEY],
        "https://mintsaga-***.mainnet.rpcpool.com/",
    ),
    (
        f"wss://mintsaga-{TRITON_HOST_KEY}.mainnet.rpcpool.com/whirligig",
        [TRITON_HOST_KEY],
        "wss://mintsaga-***.mainnet.rpcpool.com/whirligig",
    ),
    # Ankr, https://www.ankr.com/docs/api-reference/: `https://rpc.ankr.com/<chain>/<API_KEY>`
    # (the WebSocket path `/solana/ws/<key>` is not on that page: by analogy).
    (f"https://rpc.ankr.com/solana/{ANKR_KEY}", [ANKR_KEY], "https://rpc.ankr.com/solana/***"),
    (f"wss://rpc.ankr.com/solana/ws/{ANKR_KEY}", [ANKR_KEY], "wss://rpc.ankr.com/solana/ws/***"),
    # Chainstack, https://docs.chainstack.com/reference/getblock: `https://nd-326-444-187.
    # p2pify.com/<32 hex>/` (the node id in the host is not secret); node details
    # (https://docs.chainstack.com/reference/chainstack-platform-api-v2-retrieve-node) give
    # `wss://ws-nd-123-456-789.p2pify.com`; https://docs.chainstack.com/blockchains/solana:
    # "protected either with the key or password". The Global Node's
    # `solana-mainnet.core.chainstack.com/<key>` is the same shape (not on the pages found).
    (
        f"https://nd-326-444-187.p2pify.com/{CHAINSTACK_KEY}/",
        [CHAINSTACK_KEY],
        "https://nd-326-444-187.p2pify.com/***/",
    ),
    (
        f"wss://ws-nd-326-444-187.p2pify.com/{CHAINSTACK_KEY}",
        [CHAINSTACK_KEY],
        "wss://ws-nd-326-444-187.p2pify.com/***",
    ),
    (
        f"https://{CHAINSTACK_USER}:{CHAINSTACK_PASSWORD}@nd-326-444-187.p2pify.com",
        [CHAINSTACK_PASSWORD],
        "https://nd-326-444-187.p2pify.com",
    ),
    (
        f"https://solana-mainnet.core.chainstack.com/{CHAINSTACK_KEY}",
        [CHAINSTACK_KEY],
        "https://solana-mainnet.core.chainstack.com/***",
    ),
    # GetBlock, https://docs.getblock.io/getting-started/authentication-with-access-tokens:
    # `https://go.getblock.io/<ACCESS_TOKEN>/`, tokens in the path only; the deprecated API key
    # (https://getblock.io/docs/get-started/auth-with-api-key) in the path or `?api_key=`.
    (f"https://go.getblock.io/{GETBLOCK_TOKEN}/", [GETBLOCK_TOKEN], "https://go.getblock.io/***/"),
    (f"wss://go.getblock.io/{GETBLOCK_TOKEN}/", [GETBLOCK_TOKEN], "wss://go.getblock.io/***/"),
    (
        f"https://sol.getblock.io/{GETBLOCK_OLD_KEY}/mainnet/",
        [GETBLOCK_OLD_KEY],
        "https://sol.getblock.io/***/mainnet/",
    ),
    (
        f"https://sol.getblock.io/mainnet/?api_key={GETBLOCK_OLD_KEY}",
        [GETBLOCK_OLD_KEY],
        "https://sol.getblock.io/mainnet/",
    ),
    # Shapes, whoever uses them: a key as a host label of its own, a JWT in the path, a short
    # random id, a port kept; IPv6 literals keep their brackets.
    (
        f"https://{CHAINSTACK_KEY}.rpc.example.com:8443/",
        [CHAINSTACK_KEY],
        "https://***.rpc.example.com:8443/",
    ),
    (f"https://rpc.example.com/auth/{JWT}/", [JWT], "https://rpc.example.com/auth/***/"),
    ("https://rpc.example.com/k/a1b2c3d4e5f6", ["a1b2c3d4e5f6"], "https://rpc.example.com/k/***"),
    (
        f"wss://[2001:db8::7]:8900/{GETBLOCK_TOKEN}",
        [GETBLOCK_TOKEN],
        "wss://[2001:db8::7]:8900/***",
    ),
    (
        f"http://u:{CHAINSTACK_PASSWORD}@[::1]:8899/?token=abc",
        [CHAINSTACK_PASSWORD, "abc"],
        "http://[::1]:8899/",
    ),
]


@pytest.mark.parametrize(("url", "secrets", "shown"), REDACTIONS)
def test_a_provider_url_is_shown_without_its_key(url: str, secrets: list[str], shown: str) -> None:
    redacted = redact_url(url)
    assert redacted == shown
    for secret in secrets:
        assert secret not in redacted
        assert secret in url_secrets(url)  # what the log guard scrubs from any line
    error = ServiceError("down", service="solana", kind=ErrorKind.TRANSIENT, code="X", endpoint=url)
    assert error.endpoint == shown and not any(secret in str(error) for secret in secrets)
    assert redact_url(redacted) == redacted  # a shown name is its own name (breaker names)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.mainnet-beta.solana.com",
        "https://rpc.ankr.com/solana_devnet",
        "https://abc-456-fast-mainnet.helius-rpc.com",  # Helius's secure URL: no key in it
        "https://nd-326-444-187.p2pify.com/graphql",
        "wss://ws-nd-123-456-789.p2pify.com",
        "https://solana-mainnet.core.chainstack.com",
        "http://127.0.0.1:8899",
        "http://[::1]:8899",
        "wss://[fe80::1]:8900/v1",
        "https://us-east-1.rpc.example.com/v2/mainnet",
    ],
)
def test_a_url_with_no_key_is_shown_as_it_is(url: str) -> None:
    assert redact_url(url) == url
    assert url_secrets(url) == []


def test_what_cannot_be_parsed_is_not_shown() -> None:
    assert redact_url("http://[::1") == "<unparsable url>"
    assert redact_url("https://rpc.example.com:99999/") == "<unparsable url>"


def test_an_answer_that_is_not_json_names_its_path_without_the_key() -> None:
    url = f"https://go.getblock.io/{GETBLOCK_TOKEN}/"
    answer = httpx.Response(200, text="<html>proxy</html>", request=httpx.Request("POST", url))
    with pytest.raises(ServiceError) as caught:
        json_body(answer, service="solana", endpoint=url)
    assert "answer to /***/ is not JSON" in str(caught.value)
    assert GETBLOCK_TOKEN not in str(caught.value)
