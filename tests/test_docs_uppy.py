"""docs/uppy.md shows the page code the browser tests run: every `<!-- include: FILE -->` is
followed by a code block identical to FILE (tests/e2e/uppy6/entry.js imports those files)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"<!-- include: (?P<path>[^ ]+) -->\n```js\n(?P<code>.*?)```", re.S)


def test_uppy_doc_includes_the_tested_page_code_verbatim() -> None:
    doc = (ROOT / "docs" / "uppy.md").read_text()
    included = {m["path"]: m["code"] for m in INCLUDE.finditer(doc)}
    assert set(included) == {"docs/uppy/same-origin.js", "docs/uppy/token.js"}
    for path, code in included.items():
        assert code == (ROOT / path).read_text(), f"docs/uppy.md differs from {path}"
    entry = (ROOT / "tests" / "e2e" / "uppy6" / "entry.js").read_text()
    for path in included:
        assert f"'../../../{path}'" in entry, f"the browser harness does not load {path}"
