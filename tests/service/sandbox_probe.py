"""Run the daemon's heavy lifting under the seccomp side of carmic-watchd.service's sandbox.

systemd-run needs a running systemd, which CI does not have; but three of the unit's settings
are plain seccomp filters that an unprivileged process can load on itself, exactly as systemd
builds them (src/shared/seccomp-util.c):

* ``SystemCallFilter=`` + ``SystemCallErrorNumber=EPERM``: an allow-list; anything else fails
  with EPERM.
* ``MemoryDenyWriteExecute=yes``: ``mmap`` with PROT_WRITE|PROT_EXEC, ``mprotect`` and
  ``pkey_mprotect`` with PROT_EXEC, ``shmat`` with SHM_EXEC fail with EPERM.
* ``RestrictAddressFamilies=``: ``socket()`` of any other family fails with EAFNOSUPPORT.

Usage: ``python sandbox_probe.py SPEC_JSON WORKDIR``; SPEC is ``{"allow": [syscall names],
"families": [numbers]}``. It loads the filters, checks that they bite (control probes), then
runs the workload and prints one ``ok <what>`` line per step. Exit 3 means seccomp itself is
unavailable here (the test skips); any other failure is a real incompatibility.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_GE = 5
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
AF_MAX = 46  # include/linux/socket.h (Linux 6.x)


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class Seccomp:
    def __init__(self) -> None:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(ArgCmp),
        ]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def filter(self, default: int) -> int:
        ctx = self.lib.seccomp_init(default)
        if not ctx:
            raise OSError("seccomp_init failed")
        return int(ctx)

    def nr(self, name: str) -> int:
        return int(self.lib.seccomp_syscall_resolve_name(name.encode()))

    def rule(self, ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        nr = self.nr(name)
        if nr < 0:  # not a syscall on this architecture (e.g. mmap2 on x86-64)
            return
        arr = (ArgCmp * max(1, len(cmps)))(*(ArgCmp(*c) for c in cmps))
        rc = self.lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")

    def load(self, ctx: int) -> None:
        rc = self.lib.seccomp_load(ctx)
        self.lib.seccomp_release(ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def load_sandbox(spec: dict[str, Any]) -> None:
    sc = Seccomp()
    eperm = scmp_act_errno(errno.EPERM)

    # Stacked filters: the kernel applies the strictest verdict of all of them.
    mdwe = sc.filter(SCMP_ACT_ALLOW)
    wx = PROT_WRITE | PROT_EXEC
    for name in ("mmap", "mmap2"):
        sc.rule(mdwe, eperm, name, (2, SCMP_CMP_MASKED_EQ, wx, wx))
    for name in ("mprotect", "pkey_mprotect"):
        sc.rule(mdwe, eperm, name, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    sc.rule(mdwe, eperm, "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    sc.load(mdwe)

    families = sc.filter(SCMP_ACT_ALLOW)
    eafnosupport = scmp_act_errno(errno.EAFNOSUPPORT)
    allowed = {int(f) for f in spec["families"]}
    for family in range(AF_MAX):
        if family not in allowed:
            sc.rule(families, eafnosupport, "socket", (0, SCMP_CMP_EQ, family, 0))
    sc.rule(families, eafnosupport, "socket", (0, SCMP_CMP_GE, AF_MAX, 0))
    sc.load(families)

    # The allow-list goes last: it may not allow seccomp() itself.
    allow = sc.filter(eperm)
    for name in spec["allow"]:
        sc.rule(allow, SCMP_ACT_ALLOW, str(name))
    sc.load(allow)


def expect_errno(what: str, code: int, fn: Callable[[], object]) -> None:
    try:
        fn()
    except OSError as exc:
        if exc.errno != code:
            raise AssertionError(f"{what}: errno {exc.errno}, expected {code}") from exc
        print(f"ok control: {what} refused ({errno.errorcode[code]})")
        return
    raise AssertionError(f"{what} was allowed: the sandbox is not in force")


def controls() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]

    def wx_mapping() -> None:
        addr = libc.mmap(None, 4096, 0x1 | PROT_WRITE | PROT_EXEC, 0x22, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    expect_errno("W+X mmap (MemoryDenyWriteExecute)", errno.EPERM, wx_mapping)
    expect_errno(
        "AF_NETLINK socket (RestrictAddressFamilies)",
        errno.EAFNOSUPPORT,
        lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close(),
    )
    expect_errno(
        "sched_setaffinity (~@resources)", errno.EPERM, lambda: os.sched_setaffinity(0, {0})
    )
    expect_errno("acct (~@privileged)", errno.EPERM, lambda: _acct(libc))


def _acct(libc: ctypes.CDLL) -> None:
    if libc.acct(None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def workload(workdir: Path) -> None:
    import io

    import av

    # Encode a short H.264 clip and a JPEG in memory, then decode the clip (probe, clip cutting
    # and thumbnails do the same with files).
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame(64, 64, "rgb24")
            frame.planes[0].update(bytes([i * 20 % 256]) * (64 * 64 * 3))
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, "r") as inp:
        frames = list(inp.decode(video=0))
    assert len(frames) == 10, len(frames)
    jpeg = io.BytesIO()
    with av.open(jpeg, "w", format="image2pipe") as out:
        s = out.add_stream("mjpeg", rate=1)
        s.width, s.height, s.pix_fmt = 64, 64, "yuvj420p"
        for packet in s.encode(frames[0].reformat(format="yuvj420p")):
            out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    assert jpeg.getvalue()[:2] == b"\xff\xd8"
    print(f"ok av {av.__version__}: libx264 encode, decode, mjpeg")

    import sqlite3

    db = sqlite3.connect(workdir / "ledger.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE jobs (id TEXT)")
    with db:
        db.execute("INSERT INTO jobs VALUES ('j-1')")
    db.close()
    print("ok sqlite WAL")

    import threading

    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    seen = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if str(event.src_path).endswith("ep12.mp4"):
                seen.set()

    inbox = workdir / "inbox"
    inbox.mkdir()
    observer = InotifyObserver()
    observer.schedule(Handler(), str(inbox), recursive=True)
    observer.start()
    try:
        (inbox / "ep12.mp4").write_bytes(b"x")
        assert seen.wait(10), "no inotify event"
    finally:
        observer.stop()
        observer.join()
    print("ok inotify observer")

    import asyncio

    async def tcp() -> None:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.read(5))
            await w.drain()
            w.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        assert await reader.read(5) == b"hello"
        writer.close()
        server.close()
        await server.wait_closed()
        await asyncio.get_running_loop().getaddrinfo("localhost", 443)

    asyncio.run(tcp())
    print("ok asyncio TCP over AF_INET, getaddrinfo")

    import httpx

    with httpx.Client() as client:  # loads the CA bundle, builds the TLS context
        assert client is not None
    print("ok httpx client")

    from watchd.service.notify import Notifier

    sock_path = workdir / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(sock_path))
    receiver.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": str(sock_path)}).ready()
        assert receiver.recv(100) == b"READY=1"
    finally:
        receiver.close()
    print("ok sd_notify over AF_UNIX")

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(lambda x: x * x, range(10))) == 285
    print("ok threads")


def main() -> int:
    spec = json.loads(sys.argv[1])
    workdir = Path(sys.argv[2])
    try:
        load_sandbox(spec)
    except OSError as exc:
        print(f"seccomp unavailable: {exc}", file=sys.stderr)
        return 3
    print("ok filters loaded")
    controls()
    workload(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
