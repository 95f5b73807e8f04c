import os
import sys
from pathlib import Path

import pytest

import recbole_robust  # noqa: F401  (registers the plugin with RecBole)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RECBOLE_ROBUST_SHARED", REPO.parent / "shared" / "datasets")).resolve()


def pytest_configure(config):
    if not SHARED.is_dir():
        raise pytest.UsageError(f"shared datasets not found at {SHARED} (set RECBOLE_ROBUST_SHARED)")


@pytest.fixture(scope="session")
def shared():
    return SHARED


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    """One build cache for the whole session, so each dataset is built once."""
    return str(tmp_path_factory.mktemp("built"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty folder: RecBole writes log/, log_tensorboard/ and saved/ into the cwd."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fast(build_dir, shared, workdir):
    """Config of a short, quiet training run."""
    return {
        "epochs": 2,
        "show_progress": False,
        "state": "WARNING",
        "build_dir": build_dir,
        "data_path": str(shared),
        "checkpoint_dir": str(workdir / "saved"),
        "seed": 2020,
        "reproducibility": True,
    }


def run_cli(args, cwd, env_extra=None):
    """Run ``run_recbole_robust.py`` in a subprocess; returns CompletedProcess."""
    import subprocess

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole_robust.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def killed_run(epoch, **run_args):
    """``run_recbole_robust(**run_args)`` killed right after validating ``epoch``; returns its ``.last.pth``."""
    import glob

    from recbole_robust import run_recbole_robust

    class Killed(Exception):
        pass

    def kill(epoch_idx, valid_score):
        if epoch_idx == epoch:
            raise Killed

    with pytest.raises(Killed):
        run_recbole_robust(**run_args, callback_fn=kill)
    folder = run_args["config_dict"]["checkpoint_dir"]
    return sorted(glob.glob(os.path.join(folder, "*.last.pth")), key=os.path.getmtime)[-1]
