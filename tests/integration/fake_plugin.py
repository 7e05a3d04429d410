"""A session-manager-plugin that does, on its stdout, what AWS's plugin 1.2.677.0 visibly does there.

AWS's plugin cannot run against the sandbox on this branch, so tests reproduce what ssmfab sees of it:

- it prints ``\\nStarting session with SessionId: <id>\\n`` on stdout (the SSH stream) before any data;
- it calls no TerminateSession when its input ends (it just exits);
- it bridges stdin/stdout to the instance's sshd (here: the sandbox host's port, from ``ports.json``).

What it does is chosen by ``FAKE_PLUGIN_MODE`` and driven by files in ``FAKE_PLUGIN_DIR`` (events, not clocks):

``bridge``  print the greeting, then bridge.
``slow``    print the greeting, write ``greeted``, then wait until the test writes ``release`` (a data channel
            slow to come up), then bridge.
``stall``   bridge until the test writes ``stall-<instance id>``; from then on forward nothing either way and close
            nothing (a data channel that died and could not resume), reading and dropping its input until it
            ends, as AWS's plugin does.
``refuse``  print the greeting, the agent's refusal and the plugin's goodbye, then exit 0 (the agent could
            not reach port 22).
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

VERSION = "1.2.677.0"
REFUSAL = "Connection to destination port failed, check SSM Agent logs."


def wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.02)


def write_out(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def bridge(sshd: socket.socket, stall_file: str | None) -> None:
    stalled = False
    while True:
        if stall_file and not stalled and os.path.exists(stall_file):
            stalled = True
        sources = [0] if stalled else [0, sshd]
        ready, _, _ = select.select(sources, [], [], 0.05)
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                return  # input ended: exit without ending the session, as AWS's plugin does
            if not stalled:
                sshd.sendall(data)
        if sshd in ready:
            data = sshd.recv(65536)
            if not data:
                return
            write_out(data)


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--version"]:
        print(VERSION)
        return 0
    first = argv[1]
    session = json.loads(os.environ[first] if first in os.environ else first)
    request = json.loads(argv[5])
    control = os.environ["FAKE_PLUGIN_DIR"]
    mode = os.environ.get("FAKE_PLUGIN_MODE", "bridge")
    session_id = session["SessionId"]
    write_out(f"\nStarting session with SessionId: {session_id}\n".encode())
    if mode == "refuse":
        write_out(f"\n{REFUSAL}\n\n\nExiting session with sessionId: {session_id}.\n\n".encode())
        return 0
    if mode == "slow":
        open(os.path.join(control, "greeted"), "w").close()
        wait_for(os.path.join(control, "release"))
    with open(os.path.join(control, "ports.json")) as handle:
        port = json.load(handle)[request["Target"]]
    with socket.create_connection(("127.0.0.1", port)) as sshd:
        bridge(sshd, os.path.join(control, f"stall-{request['Target']}") if mode == "stall" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
