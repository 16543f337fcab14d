"""The documentation site (mkdocs.yml) builds with no warnings, and a warning fails it.

The build is the one ``bash scripts/docs`` runs: ``mkdocs build --strict``, which turns
every warning into a failure: a broken link or anchor, an unresolved API reference, a
page missing from the nav, a link out of docs/ to a file the site does not include.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What the build reads: the config, the pages, the hook, the READMEs it includes, and the
# package whose docstrings make the API reference.
SOURCES = (
    "mkdocs.yml",
    "docs",
    "docsite",
    "slayq",
    "server/README.md",
    "examples/app/README.md",
)


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    # Material prints a notice about MkDocs 2.0 on every run; it is not about this site.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def warnings_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    output = result.stdout + result.stderr
    return [line for line in output.splitlines() if not line.startswith("INFO")]


def test_the_site_builds_with_no_warnings(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = build(ROOT, site)
    problems = "\n".join(warnings_of(result))
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{problems}"
    assert not problems, f"mkdocs build printed more than INFO lines:\n{problems}"

    # The guide's index is the home page, the API reference is generated from docstrings.
    assert "slayq documentation" in (site / "index.html").read_text(encoding="utf-8")
    client = (site / "api" / "client" / "index.html").read_text(encoding="utf-8")
    assert 'id="slayq.Client.send_event"' in client
    assert "so a bad event raises to its sender" in client  # from Client's docstring
    # A README outside docs/ is a page, its links to the guide point at the guide's pages.
    kit = (site / "repo" / "server" / "index.html").read_text(encoding="utf-8")
    assert 'href="../../server/#deploying"' in kit
    # Searchable, and nothing fetched from elsewhere when a page opens.
    assert (site / "search" / "search_index.json").is_file()
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html, f"{page} loads Google Fonts"


def copy_of_the_sources(into: Path) -> Path:
    for source in SOURCES:
        origin = ROOT / source
        target = into / source
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    return into


def test_a_broken_link_anchor_or_reference_fails_the_build(tmp_path: Path) -> None:
    root = copy_of_the_sources(tmp_path / "repo")
    with (root / "docs" / "steps.md").open("a", encoding="utf-8") as page:
        page.write(
            "\n[a](no-such-page.md) [b](functions.md#no-such-heading) "
            "[c][slayq.NoSuchThing] [d](../pyproject.toml)\n"
        )
    (root / "docs" / "unlisted.md").write_text("# Not in the nav\n", encoding="utf-8")

    result = build(root, tmp_path / "site")

    assert result.returncode != 0
    problems = "\n".join(warnings_of(result))
    for named in (
        "no-such-page.md",
        "no-such-heading",
        "slayq.NoSuchThing",
        "../pyproject.toml, a file outside docs/",
        "unlisted.md",
    ):
        assert named in problems, f"no warning names {named!r}:\n{problems}"
