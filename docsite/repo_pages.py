"""MkDocs hook: the repository's READMEs the guide links to become pages of the site.

The guide in ``docs/`` links to a few READMEs elsewhere in the repository (the deployment
kit in ``server/``, the example app), so that the links work where the Markdown is read
as files, on a clone or a code host. The site has only ``docs/``: this hook adds each
README in ``INCLUDED`` as the page ``repo/<its path>`` and rewrites every relative link,
on the guide's pages and in those READMEs, from where the file lives in the repository
to where the page lives in the site. A link to any other file outside ``docs/`` is
reported as a warning naming it, which fails the strict build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mkdocs.plugins import get_plugin_logger
from mkdocs.structure.files import File

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

# Repository files (paths from the root) that are pages of the site too; list them in
# mkdocs.yml's nav as well, as repo/<path>.
INCLUDED = ("server/README.md", "examples/app/README.md")

SITE_DIR_OF_INCLUDED = "repo"
DOCS_DIR = "docs"

log = get_plugin_logger(__name__)

# An inline link's target: `[text](target)`, `![alt](target "title")`.
_LINK = re.compile(r"(\]\()([^)\s]+)")
# Code blocks are left alone: `](` there is code, not a link.
_FENCE = re.compile(r"\s*```")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _repo_root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = _repo_root(config)
    for path in INCLUDED:
        source = root / path
        if not source.is_file():
            log.warning(f"{path} is listed in INCLUDED (docsite/repo_pages.py) but does not exist")
            continue
        files.append(
            File.generated(config, f"{SITE_DIR_OF_INCLUDED}/{path}", abs_src_path=str(source))
        )
    return files


def repo_path_of(site_path: str) -> str:
    """Where the page at ``site_path`` (relative to docs_dir) lives in the repository."""
    prefix = SITE_DIR_OF_INCLUDED + "/"
    if site_path.startswith(prefix) and site_path[len(prefix) :] in INCLUDED:
        return site_path[len(prefix) :]
    return f"{DOCS_DIR}/{site_path}"


def site_path_of(repo_path: str) -> str | None:
    """Where the repository file ``repo_path`` is in the site; None if it is not."""
    if repo_path.startswith(DOCS_DIR + "/"):
        return repo_path[len(DOCS_DIR) + 1 :]
    if repo_path in INCLUDED:
        return f"{SITE_DIR_OF_INCLUDED}/{repo_path}"
    return None


def rewrite_links(markdown: str, site_path: str) -> tuple[str, list[str]]:
    """``markdown`` of the page at ``site_path`` with its relative links pointing into the
    site, and the links to repository files the site does not have."""
    here = posixpath.dirname(repo_path_of(site_path))
    site_dir = posixpath.dirname(site_path) or "."
    missing: list[str] = []

    def rewrite(link: re.Match[str]) -> str:
        target = link.group(2)
        if target.startswith(("#", "/")) or _SCHEME.match(target):
            return link.group(0)
        path, hash_, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(here, path))
        in_site = site_path_of(repo_path)
        if in_site is None:
            missing.append(target)
            return link.group(0)
        return link.group(1) + posixpath.relpath(in_site, site_dir) + hash_ + anchor

    lines = markdown.splitlines(keepends=True)
    in_fence = False
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines[number] = _LINK.sub(rewrite, line)
    return "".join(lines), missing


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    rewritten, missing = rewrite_links(markdown, page.file.src_uri)
    for target in missing:
        log.warning(
            f"{repo_path_of(page.file.src_uri)} links to {target}, a file outside docs/ the "
            "site does not include: link to a page in docs/, or add the file to INCLUDED "
            "in docsite/repo_pages.py"
        )
    return rewritten
