"""JSON the way Node's ``JSON.parse`` then ``JSON.stringify`` round-trips it.

Pinata runs on Node: ``pinJSONToIPFS`` pins ``JSON.stringify(pinataContent)``. To hand out the
same CID, the emulator must produce the same bytes: integer-like keys first, ``1.0`` printed as
``1``, big integers rounded to doubles, ``1e-7`` not ``1e-07``, lone surrogates escaped.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_MAX_SAFE = 2**53
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')


def loads(text: str | bytes) -> Any:
    """Parse like ``JSON.parse``: every number is a double."""
    return json.loads(text, parse_int=_js_int, parse_constant=_reject_constant)


def _js_int(literal: str) -> int | float:
    value = int(literal)
    return value if abs(value) <= _MAX_SAFE else float(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def stringify(value: Any) -> str:
    """``JSON.stringify(value)`` with no indentation."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int | float):
        out.append(format_number(float(value) if abs(value) > _MAX_SAFE else value))
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(_js_key_order(value)):
            if i:
                out.append(",")
            out.append(_quote(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON")


def _js_key_order(obj: dict[str, Any]) -> list[str]:
    """Array-index keys ascending first, then the rest in insertion order (ES2015+)."""
    index_keys = [k for k in obj if _ARRAY_INDEX.fullmatch(k) and int(k) < 2**32 - 1]
    others = [k for k in obj if k not in set(index_keys)]
    return sorted(index_keys, key=int) + others


def _quote(text: str) -> str:
    def escape(match: re.Match[str]) -> str:
        ch = match.group()
        return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"

    # Surrogates reach here only when unpaired (json.loads pairs valid ones), and well-formed
    # JSON.stringify escapes exactly those.
    return '"' + _NEEDS_ESCAPE.sub(escape, text) + '"'


def format_number(value: int | float) -> str:
    """ECMAScript Number::toString for a finite double (or a safe integer)."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # n: position of the decimal point relative to the first significant digit
    point = len(int_part) + (int(exp_text) if exp_text else 0)
    point -= len(int_part + frac_part) - len((int_part + frac_part).lstrip("0"))
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * (-point) + digits
    exponent = point - 1
    exp_str = f"e{'+' if exponent > 0 else '-'}{abs(exponent)}"
    if k == 1:
        return sign + digits + exp_str
    return sign + digits[0] + "." + digits[1:] + exp_str
