"""BENCHMARKS.md sections: each benchmark owns the text between its two markers.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "BENCHMARKS.md"
>>> write_section(path, "a", "one")
>>> write_section(path, "a", "two")
>>> print(path.read_text())
# Benchmarks
<BLANKLINE>
<!-- a:start -->
two
<!-- a:end -->
<BLANKLINE>
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_section"]


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the ``<!-- name:start -->`` ... ``<!-- name:end -->`` section of ``path`` with
    ``body`` (appended when the file has no such section yet); the rest of the file is kept."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip(chr(10))}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
