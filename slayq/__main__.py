"""``python -m slayq``: the ``slayq`` command line (``python -m slayq migrate``, ...)."""

from slayq.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
