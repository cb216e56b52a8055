"""The one place benchmarks write their figures: a marked section of docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def write_section(name: str, heading: str, rendered: str) -> None:
    """Replace the `<!-- name:start -->…<!-- name:end -->` block, or append it under `heading`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{rendered}\n{end}"
    text = DOC.read_text()
    if start in text and end in text:
        text = text.split(start)[0] + section + text.split(end, 1)[1]
    else:
        text += f"\n## {heading}\n\n{section}\n"
    DOC.write_text(text)
