"""Epoch time and peak memory of 1 and 2 training processes (``--nproc``; gloo on the CPU, nccl on GPUs).

For each model and process count, one run of ``--epochs`` epochs in a fresh subprocess, one after the other (run
nothing else meanwhile). Reported, with the 2-process / 1-process ratio:

* train s/epoch: the mean of rank 0's "epoch N training [time: ...]" log lines, epoch 0 left out (warm-up);
* valid s: the mean of the "evaluating" lines (each rank scores half of the users, then the ranks gather);
* wall s: the whole command (the launcher validates the run first, the workers then load the data again);
* peak RSS MiB: of the largest process of the run (``getrusage(RUSAGE_CHILDREN)`` of a wrapper: the launcher and
  its workers);
* test recall@20 of both, which should agree (the same global batches; see tests/test_distributed.py).

Every process gets the CPUs available / nproc threads (the pipeline's default), so both rows use the same cores.

    python benchmarks/ddp_scaling.py --dataset ml-100k --models BPR LightGCN LightGCN+MG VBPR+adv FREEDOM \
        --epochs 5 [--device cuda]
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
WRAPPER = ("import resource, subprocess, sys\n"
           "code = subprocess.run(sys.argv[1:]).returncode\n"
           "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
           "sys.exit(code)\n")


def run(model, nproc, args):
    name, _, variant = model.partition("+")
    workdir = tempfile.mkdtemp(prefix=f"ddp_scaling-{model}-{nproc}-")
    command = [sys.executable, os.path.join(REPO, "run_recbole_robust.py"), f"--model={name}",
               f"--dataset={args.dataset}", f"--epochs={args.epochs}", f"--nproc={nproc}", "--show_progress=False",
               "--metrics=['Recall','NDCG']", "--topk=[20]", "--valid_metric=recall@20", "--stopping_step=1000",
               f"--seed={args.seed}", *VARIANTS.get(variant, [])]
    if args.device == "cuda":
        command.append("--gpu_id=" + ",".join(str(i) for i in range(nproc)))
    else:
        command.append("--gpu_id=")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, *command], cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{model} with nproc {nproc} failed:\n{done.stderr[-3000:]}")
    log = open(glob.glob(os.path.join(workdir, "log", "*", "*.log"))[0], encoding="utf-8").read()
    train = [float(t) for e, t in re.findall(r"epoch (\d+) training \[time: ([\d.]+)s", log) if int(e) > 0]
    valid = [float(t) for t in re.findall(r"evaluating \[time: ([\d.]+)s", log)]
    recall = re.findall(r"test result: OrderedDict\(\[\('recall@20', ([\d.]+)\)", log)
    rss = int(re.findall(r"PEAK_RSS_KB (\d+)", done.stdout)[-1]) / 1024
    return {"model": model, "nproc": nproc, "train_s_per_epoch": sum(train) / len(train),
            "valid_s": sum(valid) / len(valid), "wall_s": wall, "peak_rss_mib": rss,
            "test_recall@20": float(recall[0]) if recall else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", nargs="+", default=["BPR", "LightGCN", "LightGCN+MG", "VBPR+adv", "FREEDOM"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    header = (f"{'model':<14} {'nproc':>5} {'train s/epoch':>13} {'valid s':>8} {'wall s':>7} {'peak RSS MiB':>12} "
              f"{'recall@20':>9}")
    print(f"{args.dataset}, {args.epochs} epochs, device {args.device}, {os.cpu_count()} CPUs\n{header}")
    for model in args.models:
        pair = [run(model, n, args) for n in (1, 2)]
        rows += pair
        for r in pair:
            print(f"{model:<14} {r['nproc']:>5} {r['train_s_per_epoch']:>13.3f} {r['valid_s']:>8.3f} "
                  f"{r['wall_s']:>7.1f} {r['peak_rss_mib']:>12.0f} {r['test_recall@20'] or float('nan'):>9.4f}")
        one, two = pair
        print(f"{'':<14} {'2/1':>5} {two['train_s_per_epoch'] / one['train_s_per_epoch']:>12.2f}x "
              f"{two['valid_s'] / one['valid_s']:>7.2f}x {two['wall_s'] / one['wall_s']:>6.2f}x "
              f"{two['peak_rss_mib'] / one['peak_rss_mib']:>11.2f}x", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
