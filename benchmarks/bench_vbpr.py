"""Epoch time and peak memory of VBPR on tiktok and ml-100k, printed as a table.

    python benchmarks/bench_vbpr.py [--datasets tiktok ml-100k] [--epochs 3] [--data_path ../shared/datasets]

Each dataset runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own;
all rows are measured in the same invocation, on the same machine, one after the other.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(model, dataset, epochs, data_path, build_dir):
    sys.path.insert(0, REPO)
    import torch

    from recbole_robust.quick_start import build_model, load_data, make_config
    from recbole_robust.registry import get_trainer

    config = make_config(model, dataset, config_dict={
        "data_path": data_path, "build_dir": build_dir, "show_progress": False, "state": "WARNING",
        "checkpoint_dir": os.path.join(build_dir, "saved"),
    })
    data, train_data, valid_data, _ = load_data(config)
    model = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_times, eval_times = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch)
        epoch_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        trainer._valid_epoch(valid_data)
        eval_times.append(time.perf_counter() - start)
    return {
        "dataset": dataset, "users": data.user_num - 1, "items": data.item_num - 1,
        "train_inter": train_data._dataset.inter_num, "feature_dim": model.item_features.shape[1],
        "batch": config["train_batch_size"], "epoch_s": epoch_times, "eval_s": eval_times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["tiktok", "ml-100k"])
    parser.add_argument("--model", default="VBPR")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data_path", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--build_dir", default=os.path.join(REPO, "saved", "benchmarks"))
    parser.add_argument("--measure_dataset", help=argparse.SUPPRESS)  # not "--worker": RecBole reads sys.argv
    args = parser.parse_args()
    if args.measure_dataset:
        print(json.dumps(measure(args.model, args.measure_dataset, args.epochs, args.data_path, args.build_dir)))
        return

    from tabulate import tabulate

    rows = []
    for dataset in args.datasets:
        out = subprocess.run(
            [sys.executable, __file__, f"--measure_dataset={dataset}", f"--model={args.model}", f"--epochs={args.epochs}",
             f"--data_path={args.data_path}", f"--build_dir={args.build_dir}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        mean = sum(r["epoch_s"][1:] or r["epoch_s"]) / len(r["epoch_s"][1:] or r["epoch_s"])
        rows.append([r["dataset"], r["users"], r["items"], r["train_inter"], r["feature_dim"], r["batch"],
                     f"{mean:.3f}", f"{min(r['epoch_s']):.3f}", f"{sum(r['eval_s']) / len(r['eval_s']):.3f}",
                     f"{r['peak_rss_mb']:.0f}", r["threads"]])
    print(f"{args.model}: seconds per training epoch (mean of epochs 2..{args.epochs}), full-sort validation, "
          f"peak resident memory of the process")
    print(tabulate(rows, headers=["dataset", "users", "items", "train inter", "feat dim", "batch", "epoch s",
                                  "min epoch s", "valid s", "peak RSS MB", "threads"], tablefmt="github"))


if __name__ == "__main__":
    main()
