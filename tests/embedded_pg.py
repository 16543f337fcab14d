"""The embedded PostgreSQL for the test suite: one cluster per test session, in a temporary
folder, for the ``embedded`` store variant (a smoke subset of the contract suite) and for
``--embedded-pg`` (every PostgreSQL test on it instead of SLAY_Q_TEST_DATABASE_URL)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from slayq.embedded import EmbeddedPostgres

_cluster: EmbeddedPostgres | None = None


def admin_url() -> str:
    """The admin URL of this session's embedded cluster, started on first use."""
    global _cluster
    if _cluster is None:
        folder = Path(tempfile.mkdtemp(prefix="slayq-embedded-pg-")) / "postgres"
        cluster = EmbeddedPostgres(folder)
        cluster.start()
        _cluster = cluster
    return _cluster.url("postgres")


def stop() -> None:
    """Stop the cluster if this session started one (pytest_unconfigure)."""
    global _cluster
    if _cluster is not None:
        _cluster.wipe()
        shutil.rmtree(_cluster.folder.parent, ignore_errors=True)
        _cluster = None
