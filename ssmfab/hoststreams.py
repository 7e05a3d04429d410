"""The commands a host runs for a streamed transfer: the copy and its SHA-256 in one process where it can.

With python3 on the host (Amazon Linux 2023, Ubuntu, Debian, RHEL 8 and later), a short script copies in
1 MiB blocks and hashes each block as it passes. A download then reaches sshd in large writes, which it sends
in larger packets (~38 KiB against ~21 KiB through coreutils' tee, which moves 8 KiB at a time: 512 MB through
the sandbox in 1.75 s instead of 2.33, client CPU 1.45 s instead of 1.8); the pipe to sshd is widened to 1 MiB,
so sshd never waits while the next block is read and hashed (64 MB through AWS's plugin: 0.56 s against 0.64
with the default 64 KiB pipe, and `cat`'s 0.54; medians of 5); an upload is hashed as it is written instead of
read back afterwards. Where python3 is missing or cannot run the script (older than 3.4), POSIX tools do the
same job: OpenSSL's SHA-256 (or sha256sum, or perl's shasum) beside cat and tee.

Either way a failed write or read yields no checksum, so the transfer cannot verify and nothing is renamed into
place; the reason goes to stderr on a line of its own.
"""

from __future__ import annotations

import re
import shlex

#: python3 -c: ``put PATH [CODEC [SIZE]]`` copies stdin into PATH and prints the SHA-256 of what it wrote on
#: stdout; with SIZE, a stream that ends short of SIZE bytes (the connection was cut: the end of input looks
#: the same) is an error, and the file is removed, as on any failed upload: it only ever has a temporary name;
#: ``get PATH [CODEC]`` copies PATH to stdout and prints the SHA-256 of what it sent on stderr. Runs on any
#: Python 3.4+. CODEC: for put, ``gzip`` means stdin is gzip, written decompressed; for get,
#: ``gzip`` compresses, ``auto:RATE`` compresses when the first MiB shrinks by 15% (and its first 64 KiB, looked
#: at first: see compress.QUICK_LOOK) and this host compresses
#: faster than the link's RATE (bytes/s) moves it, and a one-byte header (``Z``: gzip, ``R``: raw) says which.
#: ``ask`` is auto for a client that has not timed the link yet: when the first MiB shrinks, the host sends
#: ``?SPEED`` and a newline (its compression speed, bytes/s) and waits for one byte on stdin, ``Z`` or ``R``,
#: before the header; data that does not shrink goes raw at once (there is no link to time for it).
#: The SHA-256 is always of the file's own bytes.
HOST_COPY = """\
import hashlib, os, sys, time, zlib
direction, path = sys.argv[1:3]
codec = sys.argv[3] if len(sys.argv) > 3 else "raw"
expected = int(sys.argv[4]) if len(sys.argv) > 4 else -1
written = 0
digest = hashlib.sha256()
def blocks(source):
    while True:
        block = source.read(1 << 20)
        if not block:
            return
        yield block
def chunks(source):
    # One buffer for every block: a fresh MiB per read cost a download's host more than the copy (64 MB: 0.18 s
    # of CPU with python's start, 0.12 with one buffer). Each block is written before the next is read.
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    while True:
        size = source.readinto(buffer)
        if not size:
            return
        yield view[:size]
def write_all(sink, data):
    view = memoryview(data)
    while view:
        view = view[sink.write(view):]
try:
    with open(path, "wb" if direction == "put" else "rb", buffering=0) as f:
        if direction == "put":
            unpack = zlib.decompressobj(31) if codec == "gzip" else None
            for block in blocks(sys.stdin.buffer.raw):
                while block:
                    # Bounded: a MiB of gzip can stand for a GiB of zeros.
                    data = unpack.decompress(block, 1 << 22) if unpack is not None else block
                    block = unpack.unconsumed_tail if unpack is not None else b""
                    digest.update(data)
                    write_all(f, data)
                    written += len(data)
            if unpack is not None:
                tail = unpack.flush()
                digest.update(tail)
                write_all(f, tail)
                written += len(tail)
                if not unpack.eof:
                    raise OSError("the compressed stream ended early")
            if expected >= 0 and written != expected:
                raise OSError("the stream ended after %d of %d bytes" % (written, expected))
        else:
            out = sys.stdout.buffer.raw
            try:  # a 1 MiB pipe to sshd: a block goes in whole while the next is read and hashed (Linux)
                import fcntl
                fcntl.fcntl(1, 1031, 1 << 20)  # F_SETPIPE_SZ
            except Exception:
                pass
            pack = None
            source = chunks(f)
            first = next(source, b"")
            if codec != "raw":
                if codec.startswith(("auto:", "ask")) and first:
                    # A quick look at the first 64 KiB first: what does not shrink there (archives, media,
                    # random bytes) goes raw without compressing the whole MiB (~18 ms before the first byte).
                    squeeze = len(zlib.compress(first[:65536], 1)) <= 0.85 * len(first[:65536])
                    if squeeze:
                        started = time.time()
                        packed = len(zlib.compress(first, 1))
                        speed = len(first) / max(time.time() - started, 1e-6)
                        squeeze = packed <= 0.85 * len(first)
                    if squeeze and codec == "ask":
                        write_all(out, ("?%.0f\\n" % speed).encode())
                        squeeze = sys.stdin.buffer.read(1) == b"Z"
                    elif squeeze:
                        squeeze = float(codec[5:]) < 0.8 * speed
                else:
                    squeeze = codec == "gzip"
                pack = zlib.compressobj(1, zlib.DEFLATED, 31) if squeeze else None
                write_all(out, b"Z" if squeeze else b"R")
            block = first
            while block:
                digest.update(block)
                write_all(out, pack.compress(block) if pack is not None else block)
                block = next(source, b"")
            if pack is not None:
                write_all(out, pack.flush())
except (OSError, zlib.error) as e:
    if direction == "put":
        try:
            os.unlink(path)  # a temporary name: what it holds is incomplete (a cut stream, a full disk)
        except OSError:
            pass
    try:
        sys.stderr.write("%s\\n" % (getattr(e, "strerror", None) or e))
        sys.stderr.flush()
    except OSError:
        pass  # the connection is gone: nobody to tell
    sys.exit(1)
answer = sys.stdout if direction == "put" else sys.stderr
try:
    answer.write(digest.hexdigest() + " *stdin\\n")
    answer.flush()
except OSError:
    if direction == "put":
        os.unlink(path)
    sys.exit(1)
"""

#: The host's fastest SHA-256 of stdin without Python: OpenSSL's (several times faster than coreutils' where
#: it lacks SHA instructions), else sha256sum, else perl's shasum.
_STDIN_HASHER = (
    "if command -v openssl >/dev/null 2>&1; then h='openssl dgst -sha256 -r'; "
    "elif command -v sha256sum >/dev/null 2>&1; then h=sha256sum; else h='shasum -a 256'; fi; "
)
#: Upload without Python: the bytes go to the file (through gzip -d when CODEC is gzip), then the host hashes what landed there (a read-back from
#: its page cache; hashing through tee cost the host as much).
_PUT_WITH_TOOLS = (
    'if [ "${2:-raw}" = gzip ]; then gzip -dc > "$1" || { rm -f "$1"; exit 1; }; else cat > "$1" || { rm -f "$1"; exit 1; }; fi; '
    'if [ -n "$3" ] && [ "$(($(wc -c < "$1")))" != "$3" ]; then echo "the stream ended short of $3 bytes" >&2; rm -f "$1"; exit 1; fi; '
    'exec $h < "$1"'
)
#: Download without Python: the file goes to stdout (fd 3) and through the hasher, whose answer goes to stderr;
#: it is never compressed (a CODEC other than raw gets the ``R`` header).
#: A file that cannot be opened ends the command at once (the shell names the cause, no checksum, non-zero
#: exit); a read that fails part-way hashes a marker instead of the stream, so it cannot verify either.
_GET_WITH_TOOLS = 'exec 3>&1; exec 4< "$1" || exit 1; [ "${2:-raw}" = raw ] || printf R; { tee /dev/fd/3 <&4 || echo read-failed; } | $h >&2'

#: A SHA-256 line as the hashers above print it.
DIGEST_LINE = re.compile(rb"^([0-9a-f]{64})\s", re.MULTILINE)


def stream_command(direction: str, *, python: bool = True) -> str:
    """The ``sh -c`` command (the path follows as its argument, then optionally a CODEC: see HOST_COPY)
    streaming a file ``direction`` ("put" or "get"); ``python=False`` gives the POSIX-tools command every host
    falls back to."""
    tools = _STDIN_HASHER + (_PUT_WITH_TOOLS if direction == "put" else _GET_WITH_TOOLS)
    script = tools
    if python:
        script = _python_first(f'python3 -I -S -c {shlex.quote(HOST_COPY)} {direction} "$@"', tools)
    return "sh -c " + shlex.quote(script) + " sh"


def _python_first(run: str, tools: str) -> str:
    """``run`` (a python3 command) where python3 is installed, falling back to ``tools`` when it could not run
    the program at all: exit 2 (an interpreter too old for -I), 126 or 127. A python3 that fails that way has
    read nothing of stdin, so the tools get the whole stream; the program itself exits 0 or 1. It used to be
    probed first (``python3 -c ""``): a second interpreter start before every stream's first byte, ~40 ms
    on a loaded host (first byte of a download through AWS's plugin: 88 ms with the probe, 49 without)."""
    return f'if command -v python3 >/dev/null 2>&1; then {run}; s=$?; case $s in 2|126|127) ;; *) exit $s;; esac; fi; {tools}'


#: Upload stream: stdin into the (already created, private) file named by the argument; its SHA-256 on stdout.
STREAM_PUT = stream_command("put")
#: Download stream: the file named by the argument to stdout; its SHA-256 on stderr.
STREAM_GET = stream_command("get")

# Small files (sent over SFTP) are hashed after they landed, all of a transfer's in one command.
_SUM_SCRIPT = (
    "if command -v sha256sum >/dev/null 2>&1; then exec xargs -0 sha256sum --; fi; "
    "if command -v shasum >/dev/null 2>&1; then exec xargs -0 shasum -a 256 --; fi; "
    "echo 'neither sha256sum nor shasum is installed' >&2; exit 127"
)
#: The read-back checksum command: SHA-256 of each NUL-terminated path read from stdin. ``sh -c`` so a
#: login shell of another family (fish, csh) runs it the same.
SUM_COMMAND = f"sh -c {shlex.quote(_SUM_SCRIPT)}"

#: python3 -c ``PATH OFFSET [gzip]``: one part of a striped upload. Writes stdin (gunzipped when asked) into the
#: existing file PATH from byte OFFSET on, leaving the rest of the file as it is, and prints ``wrote N``. The
#: whole file's SHA-256 is taken once every part has landed (SUM_COMMAND), so a part needs none of its own.
PART_WRITER = """\
import sys, zlib
path, offset = sys.argv[1], int(sys.argv[2])
unpack = zlib.decompressobj(31) if sys.argv[3:] == ["gzip"] else None
written = 0
try:
    with open(path, "r+b", buffering=0) as f:
        f.seek(offset)
        source = sys.stdin.buffer.raw
        while True:
            block = source.read(1 << 20)
            if not block:
                break
            while block:
                data = unpack.decompress(block, 1 << 22) if unpack is not None else block
                block = unpack.unconsumed_tail if unpack is not None else b""
                view = memoryview(data)
                while view:
                    n = f.write(view)
                    written += n
                    view = view[n:]
        if unpack is not None:
            tail = unpack.flush()
            f.write(tail)
            written += len(tail)
            if not unpack.eof:
                raise OSError("the compressed stream ended early")
except (OSError, zlib.error) as e:
    # The file is every part's: the client, which knows whether the others landed, removes it.
    try:
        sys.stderr.write("%s\\n" % (getattr(e, "strerror", None) or e))
        sys.stderr.flush()
    except OSError:
        pass  # the connection is gone: nobody to tell
    sys.exit(1)
sys.stdout.write("wrote %d\\n" % written)
"""

#: Without python3: dd writes the part in place (parts start on MiB boundaries), through gzip -d when asked.
_PART_WITH_TOOLS = (
    'if [ "${3:-raw}" = gzip ]; then gzip -dc; else cat; fi | '
    'dd of="$1" bs=1048576 seek=$(($2 / 1048576)) conv=notrunc 2>/dev/null'
)
#: Striped upload part: ``sh -c ... sh PATH OFFSET [gzip]`` (see PART_WRITER).
STREAM_PART = "sh -c " + shlex.quote(_python_first(f'python3 -I -S -c {shlex.quote(PART_WRITER)} "$@"', _PART_WITH_TOOLS)) + " sh"

#: The host's side of an upload's temporary-file guard (ssmfab.transfer.guard): reads the shell-quoted paths of
#: the upload's temporary files, each followed by a space (eval must see one command), until its input ends,
#: then removes those still there. A finished upload has renamed or removed them all by then; one cut off (the
#: SSM session dropped, the client killed) cannot, and sshd ends this input when the connection goes. printf
#: is a builtin: no argument-list limit on big trees.
_TEMP_GUARD = 'paths=$(cat); eval "set -- $paths"; [ $# -eq 0 ] || printf \'%s\\0\' "$@" | xargs -0 rm -f --'
TEMP_GUARD = "sh -c " + shlex.quote(_TEMP_GUARD)
