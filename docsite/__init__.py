"""The documentation site's build helpers (MkDocs hooks); not part of the slayq package."""
