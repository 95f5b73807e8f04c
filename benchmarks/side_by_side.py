"""Epoch time, memory and accuracy of two settings of the same runs, one after the other: 1 and 2 training
processes (``--vary nproc``: ``--nproc``, gloo on the CPU, nccl on GPUs) or mixed precision off and on
(``--vary amp``: ``--enable_amp``, bfloat16 autocast on the CPU).

For each model and setting, one run of ``--epochs`` epochs in a fresh subprocess (run nothing else meanwhile).
Reported, with the ratio of the second setting to the first:

* train s/epoch: the mean of rank 0's "epoch N training [time: ...]" log lines, epoch 0 left out (warm-up);
* valid s: the mean of the "evaluating" lines (with 2 processes each scores half of the users, then they gather);
* wall s: the whole command (with 2 processes the launcher validates the run first, the workers then load the
  data again);
* peak RSS MiB: of the largest process of the run (``getrusage(RUSAGE_CHILDREN)`` of a wrapper: the launcher and
  its workers);
* test recall@20 (with ``--vary nproc`` both should agree: the same global batches, see tests/test_distributed.py).

Every process gets the CPUs available / nproc threads (the pipeline's default), so both rows use the same cores.

    python benchmarks/side_by_side.py --vary nproc --dataset ml-100k \
        --models BPR LightGCN LightGCN+MG VBPR+adv FREEDOM --epochs 5 [--device cuda]
    python benchmarks/side_by_side.py --vary amp --dataset tiktok --preset mg --models MMGCN FREEDOM --epochs 3 \
        --data_path ../shared/datasets
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "MG": ["--mirror_gradient=True"],
    "adv": ["--adv_targets=[item_features]", "--adv_eps=0.5", "--negatives_from=train"],
}
SETTINGS = {"nproc": (["--nproc=1"], ["--nproc=2"]), "amp": (["--enable_amp=False"], ["--enable_amp=True"])}
LABELS = {"nproc": ("1 proc", "2 procs"), "amp": ("fp32", "amp")}
WRAPPER = ("import resource, subprocess, sys\n"
           "code = subprocess.run(sys.argv[1:]).returncode\n"
           "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
           "sys.exit(code)\n")


def run(model, which, args):
    name, _, variant = model.partition("+")
    setting = SETTINGS[args.vary][which]
    workdir = tempfile.mkdtemp(prefix=f"side_by_side-{model}-{args.vary}{which}-")
    command = [sys.executable, os.path.join(REPO, "run_recbole_robust.py"), f"--model={name}",
               f"--dataset={args.dataset}", f"--epochs={args.epochs}", "--show_progress=False",
               "--metrics=['Recall','NDCG']", "--topk=[20]", "--valid_metric=recall@20", "--stopping_step=1000",
               f"--seed={args.seed}", *setting, *VARIANTS.get(variant, [])]
    command += [f"--preset={args.preset}"] if args.preset else []
    command += [f"--data_path={os.path.abspath(args.data_path)}"] if args.data_path else []
    processes = 2 if setting == ["--nproc=2"] else 1
    command.append("--gpu_id=" + (",".join(str(i) for i in range(processes)) if args.device == "cuda" else ""))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, *command], cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{model} with {' '.join(setting)} failed:\n{done.stderr[-3000:]}")
    log = open(glob.glob(os.path.join(workdir, "log", "*", "*.log"))[0], encoding="utf-8").read()
    train = [float(t) for e, t in re.findall(r"epoch (\d+) training \[time: ([\d.]+)s", log) if int(e) > 0]
    valid = [float(t) for t in re.findall(r"evaluating \[time: ([\d.]+)s", log)]
    recall = re.findall(r"test result: OrderedDict\(\[\('recall@20', ([\d.]+)\)", log)
    rss = int(re.findall(r"PEAK_RSS_KB (\d+)", done.stdout)[-1]) / 1024
    return {"model": model, "setting": LABELS[args.vary][which], "train_s_per_epoch": sum(train) / len(train),
            "valid_s": sum(valid) / len(valid), "wall_s": wall, "peak_rss_mib": rss,
            "test_recall@20": float(recall[0]) if recall else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vary", choices=tuple(SETTINGS), default="nproc")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--preset")
    parser.add_argument("--data_path")
    parser.add_argument("--models", nargs="+", default=["BPR", "LightGCN", "LightGCN+MG", "VBPR+adv", "FREEDOM"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    header = (f"{'model':<14} {'setting':>7} {'train s/epoch':>13} {'valid s':>8} {'wall s':>7} {'peak RSS MiB':>12} "
              f"{'recall@20':>9}")
    print(f"{args.dataset}, {args.epochs} epochs, device {args.device}, {os.cpu_count()} CPUs\n{header}")
    for model in args.models:
        pair = [run(model, which, args) for which in (0, 1)]
        rows += pair
        for r in pair:
            print(f"{model:<14} {r['setting']:>7} {r['train_s_per_epoch']:>13.3f} {r['valid_s']:>8.3f} "
                  f"{r['wall_s']:>7.1f} {r['peak_rss_mib']:>12.0f} {r['test_recall@20'] or float('nan'):>9.4f}")
        one, two = pair
        print(f"{'':<14} {'ratio':>7} {two['train_s_per_epoch'] / one['train_s_per_epoch']:>12.2f}x "
              f"{two['valid_s'] / one['valid_s']:>7.2f}x {two['wall_s'] / one['wall_s']:>6.2f}x "
              f"{two['peak_rss_mib'] / one['peak_rss_mib']:>11.2f}x", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
