import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

if "PYTEST_XDIST_WORKER" in os.environ:  # the tests run in 2 processes (pytest.ini): one PyTorch thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import recbole_robust  # noqa: E402,F401  (registers the plugin with RecBole)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RECBOLE_ROBUST_SHARED", REPO.parent / "shared" / "datasets")).resolve()
REAL_DATA_TESTS = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def shared():
    """The real datasets (CI always has them). Without them the tests that use this fixture are not
    collected, and the run ends with one line naming the missing folder (``pytest_terminal_summary``)."""
    return SHARED


def pytest_collection_modifyitems(config, items):
    if SHARED.is_dir():
        return
    real = [item for item in items if "shared" in getattr(item, "fixturenames", ())]
    if real:
        config.hook.pytest_deselected(items=real)
        items[:] = [item for item in items if item not in real]
        config.stash[REAL_DATA_TESTS] = len(real)


def pytest_terminal_summary(terminalreporter, config):
    if config.stash.get(REAL_DATA_TESTS, 0):
        terminalreporter.write_line(f"{config.stash[REAL_DATA_TESTS]} tests on the real datasets not run: "
                                    f"{SHARED} not found (set RECBOLE_ROBUST_SHARED)")


def write_small_datasets(root, seed=0, n_users=300, n_items=200, n_clusters=5, dim=32):
    """Small datasets in the real formats, with structure a model can learn (users prefer one cluster of
    items, and items of a cluster have similar features): ``tiktok`` (MMRec layout, x_label split,
    float16 image/audio features), ``filmtrust`` (LibRec ratings), ``ciaodvd`` (LibRec ratings + dates)
    and ``amazon`` (LATTICE json split, no feature files).
    """
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, n_clusters, n_items)
    rows = []
    for u in range(n_users):
        taste = rng.integers(0, n_clusters)
        liked = np.flatnonzero(cluster == taste)
        n = int(rng.integers(8, 16))
        items = np.unique(np.concatenate([rng.choice(liked, min(len(liked), n - 2), replace=False),
                                          rng.choice(n_items, 2, replace=False)]))
        rng.shuffle(items)
        labels = np.zeros(len(items), dtype=int)
        labels[-2], labels[-1] = 1, 2
        rows += [(u, int(i), int(lab), float(rng.integers(1, 9)) / 2) for i, lab in zip(items, labels)]
    tiktok = root / "tiktok"
    tiktok.mkdir(parents=True)
    with open(tiktok / "tiktok.inter", "w", newline="") as f:
        f.write("userID\titemID\tx_label\r\n")
        f.writelines(f"{u}\t{i}\t{lab}\r\n" for u, i, lab, _ in rows)
    centres = rng.normal(size=(n_clusters, dim))
    for name in ("image", "audio"):
        features = centres[cluster] + 0.3 * rng.normal(size=(n_items, dim))
        np.save(tiktok / f"{name}_feat.npy", features.astype(np.float16))
    (root / "filmtrust").mkdir()
    (root / "filmtrust" / "ratings.txt").write_text("".join(f"{u + 1} {i + 1} {r}\n" for u, i, _, r in rows))
    (root / "ciaodvd").mkdir()
    (root / "ciaodvd" / "movie-ratings.txt").write_text("\n".join(
        f"{u + 1},{i + 1},1,{k},{int(min(5, max(1, 2 * r - 3)))},2010-01-{1 + k % 28:02d}"
        for k, (u, i, _, r) in enumerate(rows)))
    lattice = root / "amazon" / "5-core"
    lattice.mkdir(parents=True)
    for label, split in enumerate(("train", "val", "test")):
        split_rows = {}
        for u, i, lab, _ in rows:
            if lab == label:
                split_rows.setdefault(str(u), []).append(i)
        (lattice / f"{split}.json").write_text(json.dumps(split_rows))
    return root


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """A data root with the small datasets of ``write_small_datasets`` (tiktok, filmtrust, ciaodvd)."""
    return write_small_datasets(tmp_path_factory.mktemp("small_data"))


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
def fast(build_dir, small_data, workdir):
    """Config of a short, quiet training run, on the small datasets (ml-100k: RecBole's copy)."""
    return {
        "epochs": 2,
        "show_progress": False,
        "state": "WARNING",
        "build_dir": build_dir,
        "data_path": str(small_data),
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
