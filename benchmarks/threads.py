"""How many PyTorch threads a run should use: evaluation and training time with 1, 2, ... threads, side by side
in one process, on a quiet machine and with one busy core (another job beside the run, as on a shared machine).

    python benchmarks/threads.py --model AMR --dataset tiktok --preset amr --data_path ../shared/datasets

The model is trained for ``--epochs`` (default 1) first, then for each thread count the script times one
evaluation of the test split and one training epoch, ``--repeats`` times (the median is printed). Prints the
CPUs this process may use (``utils.available_cpus``: affinity and cgroup quota), the default the plugin picks
from them, and a table of seconds and ratios against one thread.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def timed(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="AMR")
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--preset", default="amr")
    parser.add_argument("--data_path", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--threads", type=int, nargs="+", help="thread counts to time (default: 1 .. the CPUs)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint_dir", default=os.path.join(REPO, "saved", "benchmarks"))
    args = parser.parse_args()

    import torch
    from tabulate import tabulate

    from recbole_robust.quick_start import prepare_run
    from recbole_robust.utils import available_cpus

    cpus, torch_default = available_cpus(), torch.get_num_threads()
    counts = args.threads or list(range(1, max(2, cpus) + 1))
    config, _, (train_data, valid_data, test_data), trainer = prepare_run(
        args.model, args.dataset, preset=args.preset, config_dict={
            "data_path": args.data_path, "checkpoint_dir": args.checkpoint_dir, "epochs": args.epochs,
            "show_progress": False, "state": "WARNING", "adv_start_epoch": 0})
    trainer.fit(train_data, valid_data, saved=False)
    print(f"CPUs available to this process: {cpus} (os.cpu_count(): {os.cpu_count()}); PyTorch's own default: "
          f"{torch_default} threads; the plugin's default: {cpus}")

    rows = []
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for n in counts:
                torch.set_num_threads(n)
                evaluation = timed(lambda: trainer.evaluate(test_data, load_best_model=False), args.repeats)
                epoch = timed(lambda: trainer._train_epoch(train_data, trainer.epochs), args.repeats)
                rows.append({"machine": "one core busy" if busy else "quiet", "threads": n, "evaluation": evaluation,
                             "epoch": epoch})
        finally:
            if hog:
                hog.kill()
    for row in rows:
        one = next(r for r in rows if r["machine"] == row["machine"] and r["threads"] == counts[0])
        row["evaluation vs 1 thread"] = row["evaluation"] / one["evaluation"]
        row["epoch vs 1 thread"] = row["epoch"] / one["epoch"]
    print(f"\n{args.model} on {args.dataset} (preset {args.preset}): seconds, median of {args.repeats}\n")
    print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]), tablefmt="github", floatfmt=".3f"))


if __name__ == "__main__":
    main()
