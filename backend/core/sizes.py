"""Byte counts for people: one unit system everywhere (messages, the admin, the demo page).

Binary multiples with the familiar short names, exactly as the upload widget's `formatBytes`
(frontend/static/upload-widget/upload-widget.js) writes them: 26214400 -> "25 MB",
1536 -> "1.5 KB", 100 -> "100 B". Machine-readable details (`max_upload_size` ...) stay in bytes.
"""

from __future__ import annotations

UNITS = ("B", "KB", "MB", "GB", "TB")


def human_size(size: int | float) -> str:
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{int(value)} B"
    text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
    return f"{text} {UNITS[unit]}"
