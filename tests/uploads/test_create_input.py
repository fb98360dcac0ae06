"""The create body's fast path (`UploadCreateInputSerializer.validated`) against the serializer:
for any body, either the fast path declines (and the serializer answers, errors included) or
it returns exactly what the serializer would, for a body the serializer accepts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from backend.uploads.api.serializers import (
    UploadCreateInputSerializer,
    _plainly_valid_create_input,
)

texts = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.sampled_from(" \t\n\x00\ud800a/é"), max_size=12),
    st.sampled_from(["", " ", "image/png", "photo.png", " " * 3 + "a" * 64, "a" * 65, "a" * 256]),
)
values = st.one_of(
    texts,
    st.integers(min_value=-3, max_value=10**20),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {"filename": values, "content_type": values, "size": values},
        optional={"checksum_sha256": values, "extra": values},
    ),
    st.fixed_dictionaries(
        {"filename": texts, "content_type": texts, "size": st.integers(min_value=-1)},
        optional={"checksum_sha256": texts},
    ),
    st.lists(st.integers(), max_size=2),
    st.none(),
)


def serializer_answer(data: Any) -> tuple[bool, Any]:
    serializer = UploadCreateInputSerializer(data=data)
    if serializer.is_valid():
        return True, dict(serializer.validated_data)
    return False, serializer.errors


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(bodies)
def test_the_fast_path_agrees_with_the_serializer(data: Any) -> None:
    valid, answer = serializer_answer(data)
    fast = _plainly_valid_create_input(data)
    if fast is not None:
        assert valid, (data, answer)
        assert fast == answer
    if valid:
        assert UploadCreateInputSerializer.validated(data) == answer
    else:
        with pytest.raises(ValidationError) as refused:
            UploadCreateInputSerializer.validated(data)
        assert refused.value.detail == answer


@pytest.mark.parametrize(
    "body",
    [
        {"filename": "photo.png", "content_type": "image/png", "size": 1000},
        {"filename": "  a.png", "content_type": "image/png", "size": 1, "checksum_sha256": ""},
        {"filename": "a\x00.png", "content_type": "image/png", "size": 5, "checksum_sha256": "ab"},
    ],
)
def test_ordinary_bodies_take_the_fast_path(body: dict[str, Any]) -> None:
    assert _plainly_valid_create_input(body) == serializer_answer(body)[1]
