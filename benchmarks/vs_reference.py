"""Side by side with the MG authors' release, or with MMRec, on TikTok: train and validation seconds, peak RSS, accuracy.

    python benchmarks/vs_reference.py --reference /scratch/mg-release --models VBPR FREEDOM MMGCN
    python benchmarks/vs_reference.py --reference /scratch/mg-release --models VBPR --accuracy --seeds 999 1 2
    python benchmarks/vs_reference.py --models VBPR FREEDOM          # our side only

``--reference`` is a folder prepared by ``../shared/tools/mg-release-setup.sh`` (its ``src/`` and
``venv/``), or an MMRec folder prepared by ``benchmarks/mmrec_setup.py`` (its ``src/`` and the ``python`` file
naming its interpreter; MMRec has no Mirror Gradient, so it runs with ``--mg off``: ours with MG off); it is never
vendored and no test needs it. Each model is run alternately by the release
(``main.py -m <Model> -d tiktok``, MG on unless ``--mg off``) and by the plugin (``--preset=mg``), as
subprocesses with the same thread count, on the same data. Both log RecBole-style lines
``epoch N training [time: Xs ...]`` and ``epoch N evaluating [time: Ys ...]``, which are parsed; the
first epoch is left out of the means (start-up). Peak RSS is the child's ``ru_maxrss``.
Timing runs use ``--epochs`` epochs; ``--accuracy`` trains to early stopping (the release's cap of
1000 epochs, patience 20) for each seed and reports test Recall/NDCG@5/20 as mean +- std; with ``--curves`` it
also prints, for each seed, both sides' training loss and validation score epoch by epoch and their best epochs
(where two runs part, the curves show when).

The release reads its settings from ``src/configs/overall.yaml``; the script sets ``epochs`` and
``seed`` there for each run and restores the file afterwards. Ours selects its best epoch on the reference's
``valid_metric`` (read from that file: the release's Recall@5, MMRec's Recall@20), or on ``--valid_metric``; without
a reference, on the preset's (Recall@5). Selecting on another metric than the reference moves the test metrics:
with a capped number of epochs, Recall@5 up and Recall@20 down.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
EPOCH = re.compile(r"epoch (\d+) (training|evaluating) \[time: ([0-9.]+)s")
METRIC = re.compile(r"'?(recall@\d+|ndcg@\d+)'?(?::|,) ([0-9.]+)")
METRICS = ("recall@5", "recall@20", "ndcg@5", "ndcg@20")
TRAIN_LOSS = re.compile(r"epoch (\d+) training \[time: [0-9.]+s, (.*)\]")
VALID_SCORE = re.compile(r"epoch (\d+) evaluating \[time: [0-9.]+s, valid_score: ([0-9.]+)\]")
RELEASE_NAMES = {"SelfCF": "SELFCFED_LGN"}  # the release's name of a model, where it differs from ours


def run(command, cwd, threads, timeout):
    """Run ``command``; returns (output, seconds, peak RSS in MiB)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    with tempfile.TemporaryFile(mode="w+") as out:
        start = time.time()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.time() - start
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({proc.returncode}):\n{text[-3000:]}")
    return text, seconds, usage.ru_maxrss / 1024


def epoch_times(text):
    """Mean training and validation seconds per epoch (the first epoch left out when there are more)."""
    times = {"training": {}, "evaluating": {}}
    for epoch, kind, seconds in EPOCH.findall(text):
        times[kind][int(epoch)] = float(seconds)

    def mean(values):
        values = [v for e, v in sorted(values.items()) if e > 0] or list(values.values())
        return statistics.mean(values) if values else float("nan")

    return mean(times["training"]), mean(times["evaluating"]), len(times["training"])


def curve(text):
    """``{epoch: [training loss (the sum of the logged losses), validation score]}``."""
    points = {}
    for epoch, losses in TRAIN_LOSS.findall(text):
        points.setdefault(int(epoch), [None, None])[0] = sum(float(v) for v in re.findall(r": ([-0-9.]+)", losses))
    for epoch, score in VALID_SCORE.findall(text):
        points.setdefault(int(epoch), [None, None])[1] = float(score)
    return points


def print_curves(model, seed, sides):
    """Both sides' training loss and validation score per epoch, and each side's best validation epoch."""
    curves = {side: curve(text) for side, text in sides.items()}
    epochs = sorted(set().union(*curves.values()))
    rows = [[e] + [v if v is not None else "" for side in curves for v in curves[side].get(e, [None, None])]
            for e in epochs]
    headers = ["epoch"] + [f"{side} {what}" for side in curves for what in ("train loss", "valid score")]
    print(f"\n{model}, seed {seed}: training loss and validation score per epoch")
    print(tabulate(rows, headers=headers, tablefmt="github", floatfmt=".4f"))
    for side, points in curves.items():
        scored = [(v[1], -e) for e, v in points.items() if v[1] is not None]
        if scored:
            best, epoch = max(scored)
            print(f"{side}: best validation score {best:.4f} at epoch {-epoch}, last epoch {max(points)}")


def test_metrics(text, marker):
    """The metrics on the last line that contains ``marker`` (the final test result)."""
    line = [l for l in text.splitlines() if marker in l][-1]
    return {k: float(v) for k, v in METRIC.findall(line)}


class Release:
    def __init__(self, folder):
        self.folder = Path(folder).resolve()
        self.src, self.python = self.folder / "src", self.folder / "venv" / "bin" / "python"
        # benchmarks/mmrec_setup.py names the interpreter in a file (MMRec's latest has the MG release's configs/mg.yaml
        # too, so that file does not tell them apart)
        self.kind = "mmrec" if (self.folder / "python").is_file() else "release"
        if self.kind == "mmrec":
            self.python = Path((self.folder / "python").read_text().strip())
        self.overall = self.src / "configs" / "overall.yaml"
        if not self.python.is_file() or not self.overall.is_file():
            raise SystemExit(f"{folder} is not a folder prepared by mg-release-setup.sh (src/, venv/) or "
                             "benchmarks/mmrec_setup.py (src/, python)")
        found = re.search(r"(?m)^valid_metric: *([A-Za-z]+@\d+)", self.overall.read_text())
        self.valid_metric = found.group(1).lower() if found else None

    def __call__(self, model, epochs, seed, mg, threads, timeout):
        if self.kind == "mmrec" and mg:
            raise SystemExit("MMRec has no Mirror Gradient: run it with --mg off")
        original = self.overall.read_text()
        settings = re.sub(r"(?m)^epochs: .*$", f"epochs: {epochs}", original)
        settings = re.sub(r"(?m)^seed: .*$", f"seed: [{seed}]", settings)
        self.overall.write_text(settings)
        try:
            command = [str(self.python), "main.py", "-m", RELEASE_NAMES.get(model, model), "-d", "tiktok"] + (
                [] if mg or self.kind == "mmrec" else ["--not_mg"])
            text, seconds, rss = run(command, self.src, threads, timeout)
        finally:
            self.overall.write_text(original)
        return text, seconds, rss, lambda: test_metrics(text, "Test: ")


def ours(model, epochs, seed, mg, threads, timeout, data_path, workdir, valid_metric=None):
    command = [sys.executable, str(REPO / "run_recbole_robust.py"), f"--model={model}", "--dataset=tiktok",
               "--preset=mg", f"--data_path={data_path}", f"--epochs={epochs}", f"--seed={seed}",
               f"--mirror_gradient={mg}", "--show_progress=False", f"--checkpoint_dir={workdir}/saved",
               f"--build_dir={workdir}/datasets"] + ([f"--valid_metric={valid_metric}"] if valid_metric else [])
    text, seconds, rss = run(command, workdir, threads, timeout)
    return text, seconds, rss, lambda: test_metrics(text, "test result")


def ratio(release, plugin):
    return f"{release / plugin:.2f}x" if plugin and release == release and plugin == plugin else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="release folder prepared by ../shared/tools/mg-release-setup.sh, or MMRec "
                                            "folder prepared by benchmarks/mmrec_setup.py")
    parser.add_argument("--models", nargs="+", default=["VBPR", "FREEDOM", "MMGCN"])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of a timing run (the first is left out)")
    parser.add_argument("--mg", choices=["on", "off", "both"], default="both")
    parser.add_argument("--accuracy", action="store_true", help="also train to early stopping per seed")
    parser.add_argument("--accuracy_epochs", type=int, default=1000,
                        help="epoch cap of an accuracy run (default: the release's 1000; early stopping ends it)")
    parser.add_argument("--no_timing", action="store_true", help="skip the timing runs (with --accuracy)")
    parser.add_argument("--curves", action="store_true",
                        help="with --accuracy: print both sides' training loss and validation score per epoch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[999, 1, 2])
    parser.add_argument("--valid_metric", help="our model selection metric, e.g. recall@20 (default: the "
                                               "reference's valid_metric; without one, the MG preset's recall@5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data_path", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--timeout", type=int, default=7200)
    args = parser.parse_args()
    release = Release(args.reference) if args.reference else None
    workdir = tempfile.mkdtemp(prefix="vs_reference-")
    reference = ("MMRec" if release.kind == "mmrec" else "release") if release else None
    sides = [(reference, release)] if release else []
    valid_metric = args.valid_metric or (release.valid_metric if release else None)
    sides.append(("ours", lambda *a: ours(*a, data_path=os.path.abspath(args.data_path), workdir=workdir,
                                          valid_metric=valid_metric)))
    mg_settings = {"on": [True], "off": [False], "both": [True, False]}[args.mg]

    speed = []
    for model in args.models if not args.no_timing else []:
        for mg in mg_settings:
            row = {"model": model, "MG": "on" if mg else "off"}
            for side, runner in sides:  # alternately, in one session
                text, _, rss, _ = runner(model, args.epochs, args.seeds[0], mg, args.threads, args.timeout)
                train, valid, n = epoch_times(text)
                row.update({f"{side} train s/epoch": train, f"{side} s/validation": valid, f"{side} peak RSS MiB": rss})
                print(f"{model} MG {row['MG']} {side}: {n} epochs, train {train:.3f} s, validation {valid:.3f} s, "
                      f"{rss:.0f} MiB", flush=True)
            if release:
                row["train ratio"] = ratio(row[f"{reference} train s/epoch"], row["ours train s/epoch"])
                row["validation ratio"] = ratio(row[f"{reference} s/validation"], row["ours s/validation"])
            speed.append(row)
    if speed:
        print(f"\nSeconds per epoch on tiktok, {args.threads} threads, {args.epochs} epochs a run "
              f"(ratio = {reference or 'reference'} / ours: > 1 means we are faster)")
        print(tabulate([list(r.values()) for r in speed], headers=list(speed[0]), tablefmt="github", floatfmt=".3f"))

    if args.accuracy:
        rows, logs = [], {}
        for model in args.models:
            for side, runner in sides:
                results = []
                for seed in args.seeds:
                    text, _, _, metrics = runner(model, args.accuracy_epochs, seed, mg_settings[0], args.threads,
                                                 args.timeout)
                    logs.setdefault((model, seed), {})[side] = text
                    results.append(metrics())
                    print(f"{model} {side} seed {seed}: " + ", ".join(f"{m} {results[-1][m]:.4f}" for m in METRICS),
                          flush=True)
                rows.append([model, side] + [
                    f"{statistics.mean(r[m] for r in results):.4f} ± "
                    f"{statistics.stdev(r[m] for r in results) if len(results) > 1 else 0:.4f}" for m in METRICS])
        print(f"\nTest metrics on tiktok, MG {'on' if mg_settings[0] else 'off'}, trained to early stopping (at most "
              f"{args.accuracy_epochs} epochs), seeds {args.seeds}, best epoch selected on "
              f"{valid_metric or 'the MG preset valid_metric'}")
        print(tabulate(rows, headers=["model", "side", *METRICS], tablefmt="github"))
        if args.curves:
            for (model, seed), texts in logs.items():
                print_curves(model, seed, texts)


if __name__ == "__main__":
    main()
