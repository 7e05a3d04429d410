"""The ``ssmfab`` console script: an invoke Program over the same task collection as ``inv``."""

from __future__ import annotations

import gc
import os
import sys


def main() -> None:
    # Starting up creates tens of thousands of objects that live until exit (invoke, paramiko, botocore and
    # its models) and no garbage: collecting during it cost ~13% of startup's CPU. The collector comes back
    # once the hosts are known (cli.startup_over), or never for a command that ends before that.
    gc.disable()
    from invoke.program import Program

    from .tasks import ns
    from .version import __version__

    try:
        Program(namespace=ns, version=__version__, name="ssmfab", binary="ssmfab").run()
    except BrokenPipeError:
        # `ssmfab hosts | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
