"""Is a local process still writing this file? Answered from ``/proc``.

A copy that stalls (a slow NAS, a paused ``rsync --inplace``, an editor exporting) can leave a
file unchanged for longer than the settle time while its writer still holds it open. On Linux
each open descriptor shows up as ``/proc/<pid>/fd/<n>`` (a link to the file) with its open
flags in ``/proc/<pid>/fdinfo/<n>``; a descriptor opened ``O_WRONLY`` or ``O_RDWR`` on the same
device and inode means the file is not finished.

Limits, by design: only processes on this machine are seen (a writer on another SMB/NFS client
is covered by the settle time alone), and only processes whose ``/proc`` entries we may read
(the daemon's own user, or all of them when it runs with ``CAP_SYS_PTRACE``/root).

Only descriptors whose link ends in the file's own name are stat'ed to compare device and
inode: every other descriptor (sockets, pipes, unrelated files, perhaps on a hung NFS mount)
costs one ``readlink`` and nothing more. The name, not the whole path, is compared so that a
writer in a container, which sees the share under another mount point, still counts; a writer
using another hard link to the same file does not. Meant to be called only for files that are
otherwise due: one call costs a few milliseconds on a machine with ~600 open descriptors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PROC = Path("/proc")
# Open flags are printed in octal; only the access mode (the low two bits) matters here.
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


def is_open_for_write(path: Path | str, *, proc: Path = _PROC) -> bool:
    """True if a process we can inspect holds ``path`` open for writing.

    Returns False when ``path`` is gone, on non-Linux systems, and when ``/proc`` is not
    mounted: absence of evidence, since the settle time still guards the file.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    target = (st.st_dev, st.st_ino)
    # A symlinked inbox file is written under its target's name.
    suffix = "/" + os.path.basename(os.path.realpath(path))
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return False
    return any(_pid_writes(proc / pid, target, suffix) for pid in pids)


def _pid_writes(pid_dir: Path, target: tuple[int, int], suffix: str) -> bool:
    fd_dir = pid_dir / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        # Another user's process, or one that exited under us.
        return False
    for fd in fds:
        link = fd_dir / fd
        try:
            dest = os.readlink(link)
        except OSError:
            continue
        if not dest.endswith(suffix):
            continue  # socket:[…], pipe:[…], anon_inode:…, another file
        try:
            st = os.stat(link)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == target and _fd_writes(pid_dir / "fdinfo" / fd):
            return True
    return False


def _fd_writes(fdinfo: Path) -> bool:
    try:
        text = fdinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags:"):
            try:
                flags = int(line.split(":", 1)[1].strip(), 8)
            except ValueError:
                return False
            return (flags & os.O_ACCMODE) in _WRITE_MODES
    return False
