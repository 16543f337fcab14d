"""Every ```python block in the user guide runs, so the docs cannot drift from the code.

Each block is self-contained: it is executed as a fresh module, and then every coroutine
function it defines named ``main`` or ``test_*`` (taking no arguments) is run with
``anyio.run``. A block fails the test if it raises, including on a failed ``assert``.
Blocks that are not meant to run (shell commands, output, JS) carry another language tag;
an untagged fence is refused so that nothing is skipped by accident.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import anyio
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = (
    "README.md",
    "getting-started.md",
    "functions.md",
    "steps.md",
    "flow-control.md",
    "testing.md",
    "errors.md",
    "operations.md",
    "dashboard.md",
    "dev.md",
)

_FENCE = re.compile(r"^```(.*)$")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


class Block(NamedTuple):
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    source: str


def blocks_of(page: str) -> list[Block]:
    found: list[Block] = []
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    opening: tuple[int, str] | None = None
    body: list[str] = []
    for number, text in enumerate(lines, start=1):
        fence = _FENCE.match(text)
        if fence is None:
            if opening is not None:
                body.append(text)
            continue
        if opening is None:
            opening, body = (number, fence.group(1).strip()), []
        else:
            found.append(Block(page, opening[0], opening[1], "\n".join(body) + "\n"))
            opening = None
    assert opening is None, f"docs/{page}: the fence opened on line {opening[0]} never closes"
    return found


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks_of(page) if b.language == "python"]


def run_block(block: Block) -> None:
    name = f"docs_{Path(block.page).stem.replace('-', '_')}_line_{block.line}"
    module = types.ModuleType(name)
    # msgspec and dataclasses look classes' modules up in sys.modules.
    sys.modules[name] = module
    try:
        # Padding makes tracebacks show the line numbers of the page itself.
        code = compile("\n" * block.line + block.source, f"docs/{block.page}", "exec")
        exec(code, module.__dict__)
        for attr, value in list(module.__dict__.items()):
            named = attr == "main" or attr.startswith("test_")
            if named and inspect.iscoroutinefunction(value) and _takes_nothing(value):
                anyio.run(value)
    finally:
        del sys.modules[name]


def _takes_nothing(fn: Callable[..., object]) -> bool:
    return not inspect.signature(fn).parameters


@pytest.mark.parametrize(
    "block", python_blocks(), ids=lambda b: f"{b.page}:{b.line}" if isinstance(b, Block) else ""
)
def test_python_block_runs(block: Block) -> None:
    run_block(block)


@pytest.mark.parametrize("page", PAGES)
def test_every_fence_names_its_language(page: str) -> None:
    untagged = [b.line for b in blocks_of(page) if not b.language]
    assert not untagged, f"docs/{page}: fences without a language on lines {untagged}"


def anchors_of(path: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to '-'."""
    anchors: set[str] = set()
    in_fence = False
    for text in path.read_text(encoding="utf-8").splitlines():
        if text.startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else re.match(r"#+ (.*)", text)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("page", PAGES)
def test_links_point_at_pages_and_headings_that_exist(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (DOCS / file).resolve() if file else DOCS / page
        assert path.exists(), f"docs/{page} links to {target}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in anchors_of(path), f"docs/{page} links to {target}: no such heading"


def test_the_guide_has_runnable_examples() -> None:
    assert len(python_blocks()) >= 20
