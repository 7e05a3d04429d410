"""The baseline a Fabric user writes today: ThreadingGroup with the aws CLI ProxyCommand as gateway.

    python bench/fabric_group.py USER KEY_FILE PROXY_COMMAND INSTANCE_ID...
"""

from __future__ import annotations

import sys

from fabric import ThreadingGroup


def main() -> int:
    user, key, proxy, *ids = sys.argv[1:]
    # paramiko's 15 s banner timeout fails every host when dozens of aws processes start at once on a small
    # machine; the baseline gets all the time it needs.
    connect_kwargs = {"key_filename": key, "banner_timeout": 300, "auth_timeout": 300}
    group = ThreadingGroup(*ids, user=user, connect_kwargs=connect_kwargs, gateway=proxy, connect_timeout=300)
    try:
        group.run("true", hide=True)
    finally:
        group.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
