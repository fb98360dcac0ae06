"""The API's JSON renderer: DRF's JSONRenderer, encoding with orjson.

DRF encodes with the standard library's `json` and a Python `JSONEncoder` subclass; for a
presign's answer (a signed policy of a kilobyte and more) that was a tenth of the request's
instructions, and orjson writes the same bytes in a tenth of the time (docs/performance.md).
Same output, to the byte, for everything DRF itself writes in its default (compact, UTF-8)
mode: the same separators and key order, U+2028 and U+2029 escaped as DRF escapes them, and
every type orjson does not encode natively (datetimes, decimals, lazy translations, querysets,
...) handed to DRF's own encoder. Two differences, for floats only, which this API's bodies do
not carry: some are spelled differently (orjson's `1e16` where Python writes `1e+16`, the same
number), and NaN or an infinity is written `null` where DRF's strict mode refuses it.

Anything else goes to DRF's renderer unchanged: an indented answer (`Accept: application/json;
indent=4`), COMPACT_JSON or UNICODE_JSON turned off, or a body orjson refuses (an integer beyond
64 bits, a non-string key, a lone surrogate), which then renders, or fails, as DRF's would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework import renderers
from rest_framework.utils import encoders

# Types orjson would encode itself, differently from DRF (datetimes: DRF writes `Z` for UTC and
# keeps a naive one naive; dataclasses: DRF refuses them), go to DRF's encoder instead.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_drf_default = encoders.JSONEncoder().default


class JSONRenderer(renderers.JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        if (
            self.ensure_ascii  # UNICODE_JSON off
            or not self.compact
            or self.get_indent(accepted_media_type or "", renderer_context or {}) is not None
        ):
            return super().render(data, accepted_media_type, renderer_context)
        default = (
            _drf_default
            if self.encoder_class is encoders.JSONEncoder
            else self.encoder_class().default
        )
        try:
            out = orjson.dumps(data, default=default, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError too: DRF's renderer answers, or fails, as before
            return super().render(data, accepted_media_type, renderer_context)
        # DRF escapes these two so that the JSON is also valid JavaScript (an ASCII body has
        # neither, and most bodies are ASCII: one fast scan).
        if not out.isascii() and (b"\xe2\x80\xa8" in out or b"\xe2\x80\xa9" in out):
            out = out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return out
