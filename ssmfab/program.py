"""The ``ssmfab`` console script: an invoke Program over the same task collection as ``inv``."""

from __future__ import annotations

from invoke.program import Program

from . import __version__
from .tasks import ns


def main() -> None:
    Program(namespace=ns, version=__version__, name="ssmfab", binary="ssmfab").run()


if __name__ == "__main__":
    main()
