"""A classified error never carries NUL: its message may quote a remote host's answer, and it
ends up in workflow histories, logs and Postgres text (which refuses NUL)."""

from __future__ import annotations

from mintsaga.errors import ErrorKind, ServiceError, without_nul


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
