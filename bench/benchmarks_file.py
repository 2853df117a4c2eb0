"""BENCHMARKS.md, shared by the benchmarks: each owns one section between its two markers."""

from pathlib import Path

BENCHMARKS_FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def benchmarks_section_write(section: str, *, start: str, end: str) -> None:
    """Replace the section between `start` and `end` (markers included in `section`), or add it
    at the end of the file when it is not there yet."""
    text = BENCHMARKS_FILE.read_text() if BENCHMARKS_FILE.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _old, after = rest.split(end, 1)
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    BENCHMARKS_FILE.write_text(text)
