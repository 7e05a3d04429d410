"""`inv --list` in a checkout: the tasks are ssmfab's own collection (installed, run `ssmfab --list`)."""

from ssmfab.tasks import ns

__all__ = ["ns"]
