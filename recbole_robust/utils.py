"""Small helpers shared across the package."""
import csv
import errno
import glob
import os
import re
import shutil

from recbole_robust.errors import OutputFailed

TEMPORARY = re.compile(r"\.tmp([0-9]+)$")
"""The suffix of ``atomic_write``'s temporary files: ``.tmp<pid of the writer>``."""


def _disk_full(error):
    # torch.save reports a full disk as a RuntimeError ("unexpected pos", "file write failed")
    return isinstance(error, OSError) and error.errno == errno.ENOSPC or isinstance(error, RuntimeError) and any(
        s in str(error) for s in ("unexpected pos", "file write failed", "No space left"))


def atomic_write(path, write):
    """Write a file atomically: ``write(tmp)`` fills a temporary file beside ``path``, then it is renamed.

    A reader never sees a half-written file, and a failed write leaves the previous file in place; a
    full disk is an ``OutputFailed`` error saying so.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if not _disk_full(e):
            raise
        free = shutil.disk_usage(folder).free
        raise OutputFailed(f"cannot write {path}: the disk is full ({free} bytes free); "
                           "the previous file, if any, is kept") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_csv(path, records):
    """``records`` (dicts) as a CSV file with a header, written atomically: the package's one CSV writer.

    The columns are every key of the records, in the order they first appear; a missing value is empty.
    """
    columns = list(dict.fromkeys(k for r in records for k in r))

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)

    atomic_write(path, write)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder):
    """Remove ``atomic_write`` temporaries in ``folder`` whose writer is gone (a killed run's)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.tmp[0-9]*")):
        match = TEMPORARY.search(path)
        if match and os.path.isfile(path) and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            os.remove(path)
            removed.append(path)
    return removed


def writable_folder(path):
    """The nearest existing path of ``path`` (itself or an ancestor), and whether a folder can be made
    or written there (``False`` also where that path is a file, not a folder)."""
    folder = os.path.abspath(path)
    while not os.path.lexists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder, os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


CGROUP_QUOTAS = (("/sys/fs/cgroup/cpu.max", None),  # cgroup v2: "<quota> <period>" or "max <period>"
                 ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))  # cgroup v1


def available_cpus(cgroup_v2_file=None):
    """The CPUs this process may use: its affinity mask, bounded by a cgroup CPU quota (a container's or a CI
    job's limit), which ``os.cpu_count()`` and PyTorch's default both ignore, and by ``OMP_NUM_THREADS`` where it
    is set. ``cgroup_v2_file`` replaces the cgroup v2 quota file (tests)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        cpus = min(cpus, int(os.environ["OMP_NUM_THREADS"]))
    quotas = ((cgroup_v2_file, None),) if cgroup_v2_file else CGROUP_QUOTAS
    for quota_file, period_file in quotas:
        try:
            with open(quota_file, encoding="ascii") as f:
                fields = f.read().split()
            if period_file:
                with open(period_file, encoding="ascii") as f:
                    fields.append(f.read().strip())
            quota, period = fields[0], fields[-1]
            if quota not in ("max", "-1"):
                cpus = min(cpus, max(1, int(int(quota) / int(period))))
            break
        except (OSError, ValueError, IndexError):
            continue
    return cpus
