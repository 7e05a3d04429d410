"""The ``ssmfab`` console script: an invoke Program over the same task collection as ``inv``."""

from __future__ import annotations

import os
import sys

from invoke.program import Program

from .version import __version__
from .tasks import ns


def main() -> None:
    try:
        Program(namespace=ns, version=__version__, name="ssmfab", binary="ssmfab").run()
    except BrokenPipeError:
        # `ssmfab hosts | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
