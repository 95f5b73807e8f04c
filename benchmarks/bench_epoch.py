"""Seconds per training epoch and peak memory, measured side by side in one run, printed as a table.

    python benchmarks/bench_epoch.py --suite vbpr   # VBPR on tiktok and ml-100k (epoch time, memory)
    python benchmarks/bench_epoch.py --suite amr    # AMR vs VBPR (eq. 4 form) on tiktok
    python benchmarks/bench_epoch.py --suite mg     # with / without Mirror Gradient, VBPR MMGCN GRCN FREEDOM
    python benchmarks/bench_epoch.py --suite acae   # ACAE stage two vs CAE on FilmTrust
    python benchmarks/bench_epoch.py --suite vaegan # VAEGAN ablations vs MultiVAE on ml-100k (256 users a batch)

Each row runs in a fresh subprocess (its own peak resident memory, ``ru_maxrss``) on the same
machine, one after the other; "ratio" is the row's epoch time over its suite's baseline row. The
first epoch is a warm-up and is not counted.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MG = {"mirror_gradient": True, "mg_alpha1": 1.0, "mg_alpha2": 0.1, "mg_interval": 3}
SUITES = {
    # (label, model, dataset, config overrides, baseline label)
    "vbpr": [("VBPR", "VBPR", "tiktok", {}, None), ("VBPR", "VBPR", "ml-100k", {}, None)],
    "amr": [
        ("VBPR (eq. 4)", "AMR", "tiktok", {"adv_lambda": 0.0}, None),
        ("AMR", "AMR", "tiktok", {"adv_start_epoch": 0}, "VBPR (eq. 4)"),
    ],
    "mg": [row for model in ("VBPR", "MMGCN", "GRCN", "FREEDOM") for row in (
        (model, model, "tiktok", {}, None), (f"{model} + MG", model, "tiktok", MG, model))],
    "acae": [
        ("CAE", "CAE", "filmtrust", {}, None),
        ("ACAE stage 2", "ACAE", "filmtrust", {"adv_start_epoch": 0}, "CAE"),
    ],
    "vaegan": [("MultiVAE", "MultiVAE", "ml-100k", {"train_batch_size": 256}, None)] + [
        (variant, "VAEGAN", "ml-100k", {"variant": variant, "train_batch_size": 256}, "MultiVAE")
        for variant in ("AVB", "AVB+D", "AVB+D+C")],
}


def measure(model, dataset, overrides, epochs, data_path, build_dir):
    sys.path.insert(0, REPO)
    import torch

    from recbole_robust.quick_start import build_model, load_data, make_config
    from recbole_robust.registry import get_trainer

    config = make_config(model, dataset, config_dict={
        "data_path": data_path, "build_dir": build_dir, "show_progress": False, "state": "WARNING",
        "checkpoint_dir": os.path.join(build_dir, "saved"), **overrides,
    })
    data, train_data, _, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, build_model(config, train_data))
    times = []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch)
        times.append(time.perf_counter() - start)
    return {"epoch_s": times[1:], "batches": len(train_data), "train_inter": train_data._dataset.inter_num,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="vbpr")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per row (after one warm-up)")
    parser.add_argument("--data_path", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--build_dir", default=os.path.join(REPO, "saved", "benchmarks"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        model, dataset, overrides = json.loads(args.measure)
        sys.argv = sys.argv[:1]  # RecBole's Config would read our arguments as its settings
        print(json.dumps(measure(model, dataset, overrides, args.epochs, args.data_path, args.build_dir)))
        return

    from tabulate import tabulate

    rows, seconds = [], {}
    for label, model, dataset, overrides, baseline in SUITES[args.suite]:
        out = subprocess.run(
            [sys.executable, __file__, f"--epochs={args.epochs}", f"--data_path={args.data_path}",
             f"--build_dir={args.build_dir}", "--measure", json.dumps([model, dataset, overrides])],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"{label} on {dataset} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mean = sum(r["epoch_s"]) / len(r["epoch_s"])
        seconds[(label, dataset)] = mean
        ratio = f"{mean / seconds[(baseline, dataset)]:.2f}x" if baseline else "1.00x"
        rows.append([label, dataset, r["train_inter"], r["batches"], f"{mean:.3f}", f"{min(r['epoch_s']):.3f}",
                     ratio, f"{r['peak_rss_mb']:.0f}", r["threads"]])
    print(f"suite {args.suite}: seconds per training epoch (mean of {args.epochs} after a warm-up epoch)")
    print(tabulate(rows, headers=["run", "dataset", "train inter", "batches", "s/epoch", "min s/epoch", "ratio",
                                  "peak RSS MB", "threads"], tablefmt="github"))


if __name__ == "__main__":
    main()
