"""``python -m slayq migrate``: bring the database at ``SLAY_Q_DATABASE_URL`` up to date.

Stores also migrate when they open; this is for deploy pipelines that migrate first.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from slayq.errors import SlayqError

EXAMPLE_URL = "postgresql://slayq:secret@db.internal:5432/app"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slayq")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_cmd = commands.add_parser("migrate", help="create or upgrade the slayq schema")
    migrate_cmd.add_argument("--schema", default="slayq")
    args = parser.parse_args(argv)

    url = os.environ.get("SLAY_Q_DATABASE_URL", "").strip()
    if not url:
        sys.exit(
            "python -m slayq migrate: SLAY_Q_DATABASE_URL is not set; set it to your "
            f"database's URL, like SLAY_Q_DATABASE_URL={EXAMPLE_URL}"
        )
    from slayq.store.postgres import migrate  # the one place that picks Postgres

    try:
        applied = anyio.run(lambda: migrate(url, schema=args.schema))
    except SlayqError as exc:
        sys.exit(f"python -m slayq migrate: {exc}")
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'already up to date'}")


if __name__ == "__main__":
    main()
