"""The API's JSON renderer (backend/core/renderers.py, orjson) writes what DRF's JSONRenderer
writes, to the byte: a differential run over generated bodies and the types DRF's encoder
handles, and DRF's own answer wherever orjson cannot match it."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections import OrderedDict
from typing import Any

import pytest
from django.utils.translation import gettext_lazy
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from rest_framework import renderers as drf
from rest_framework.exceptions import ErrorDetail
from rest_framework.utils.serializer_helpers import ReturnDict

from backend.core.renderers import JSONRenderer

ours, theirs = JSONRenderer(), drf.JSONRenderer()

texts = st.text(st.characters(codec="utf-8")) | st.sampled_from(
    ["", "\u2028", "a\u2029b", '"\\/', "\x00\x1f\x7f", "Zürich 日本語 \U0001f600", "</script>"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers()  # beyond 64 bits: DRF's own renderer
    | texts
)
bodies = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(texts, inner, max_size=5)
        | st.tuples(inner, inner)
    ),
    max_leaves=25,
)


@examples(max_examples=400, deadline=None)
@given(bodies)
def test_generated_bodies_render_as_drfs(body: Any) -> None:
    assert ours.render(body) == theirs.render(body)


@pytest.mark.parametrize(
    "body",
    [
        {"at": dt.datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)},
        {"at": dt.datetime(2026, 12, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))},
        {"at": dt.datetime(2026, 12, 2, 3, 4, 5), "day": dt.date(2026, 12, 2)},
        {"time": dt.time(3, 4, 5, 6), "took": dt.timedelta(seconds=1.5)},
        {"price": decimal.Decimal("12.50"), "id": uuid.UUID(int=7)},
        {"message": gettext_lazy("This field is required."), "detail": ErrorDetail("x", "y")},
        ReturnDict({"a": [1, (2, 3)], "b": OrderedDict(c=None)}, serializer=None),
        {"blob": b"bytes", "set": frozenset()},
        {1: "an int key", None: "a null key"},
        [{"nested": [[[[{"deep": True}]]]]}],
    ],
)
def test_the_types_drfs_encoder_handles_render_as_drfs(body: Any) -> None:
    assert ours.render(body) == theirs.render(body)


def test_an_indented_answer_and_no_body_are_drfs() -> None:
    body = {"a": [1, 2], "b": "\u2028"}
    for media_type in ("application/json; indent=4", "application/json; indent=0"):
        assert ours.render(body, media_type) == theirs.render(body, media_type)
    assert ours.render(body, None, {"indent": 2}) == theirs.render(body, None, {"indent": 2})
    assert ours.render(None) == theirs.render(None) == b""


def test_what_neither_can_encode_fails_as_drfs() -> None:
    with pytest.raises(TypeError):
        theirs.render({"x": object()})
    with pytest.raises(TypeError):
        ours.render({"x": object()})


@examples(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=5))
def test_floats_are_the_same_numbers(values: list[float]) -> None:
    """The documented difference: a float's spelling may differ, never its value."""
    assert json.loads(ours.render(values)) == json.loads(theirs.render(values))
    assert not any(math.isnan(v) for v in json.loads(ours.render(values)))


def test_it_is_the_apis_renderer() -> None:
    from rest_framework.settings import api_settings

    assert api_settings.DEFAULT_RENDERER_CLASSES[0] is JSONRenderer
