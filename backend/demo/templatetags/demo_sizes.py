"""`{{ value|human_size }}`: byte counts in the unit system of the widget and the API messages."""

from __future__ import annotations

from django import template

from backend.core.sizes import human_size as _human_size

register = template.Library()


@register.filter
def human_size(value: object) -> str:
    if value is None or value == "":
        return "—"
    try:
        return _human_size(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "—"
