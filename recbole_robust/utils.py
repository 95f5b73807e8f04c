"""Small helpers shared across the package."""
import os


def atomic_write(path, write):
    """Write a file atomically: ``write(tmp)`` fills a temporary file beside ``path``, then it is renamed.

    A reader never sees a half-written file, and a failed write leaves the previous file in place.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def writable_folder(path):
    """The nearest existing folder of ``path`` (itself or an ancestor), and whether it can be written to."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder, os.access(folder, os.W_OK | os.X_OK)
