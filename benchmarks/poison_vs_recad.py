"""Poisoning side by side with RecAD (gusye1234/recad) on its own Amazon game split, same budget and target.

Both sides: 50 fake users with 36 filler items each, promoting item 0 (RecAD's default target; 1 training
interaction with a rating >= 4), attacks random, average, bandwagon and segment; the targets' hit ratio@10/@20/@50
over the users who never interacted with it, before and after, the prediction shift, the time to generate the fake
users and the time of the whole run (train clean, attack, retrain, evaluate).

* ours: RecBole's BPR and LightGCN (RecBole's defaults, ``--epochs``, one thread), ``amazon_game_recad`` (ratings
  >= 4, as RecAD's implicit victims read them);
* RecAD: its MF and LightGCN victims through its own ``workflow`` API, ``rec_epoch = --recad_epochs``, run from
  its checkout (``--recad_dir``, holding ``data/game/``) by a Python with its requirements (``--recad_python``).
  RecAD is run, never copied.

    OMP_NUM_THREADS=1 python benchmarks/poison_vs_recad.py --epochs 20 \
        [--recad_python PY --recad_dir RECAD_CHECKOUT --recad_epochs 5] [--attacks random bandwagon]

Prints one table (and ``--out`` JSON). The two sides train different victims (RecAD's MF regresses ratings with
biases; RecBole's BPR ranks): compare each side's before/after, and the generation times.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ATTACKS = ("random", "average", "bandwagon", "segment")
BUILD_DIR = tempfile.mkdtemp(prefix="poison_vs_recad_build-")
"""A fresh build cache: each attack's fake users are generated (and timed) by its first victim, read back by the
second (``generate_s`` 0)."""
RECAD_DRIVER = r'''
import sys, time
from recad import dataset, model, workflow
victim, attack, target, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
wf = workflow.from_config("no defense", **{
    "victim_data": dataset.from_config("implicit", "game", need_graph=victim == "lightgcn",
                                       sample="pairwise" if victim == "lightgcn" else "pointwise"),
    "attack_data": dataset.from_config("explicit", "game"),
    "victim": model.from_config("victim", victim),
    "attacker": model.from_config("attacker", attack, attack_num=50, filler_num=36),
    "rec_epoch": epochs, "target_id_list": [target], "topks": [10, 20, 50]})
generate = wf.attacker.generate_fake
def timed(**kw):
    t = time.perf_counter(); out = generate(**kw)
    print(f"GENERATE_SECONDS {time.perf_counter() - t:.4f}", flush=True); return out
wf.attacker.generate_fake = timed
t = time.perf_counter(); wf.execute(); print(f"TOTAL_SECONDS {time.perf_counter() - t:.1f}")
'''


def ours(model, attack, epochs, data):
    from recbole_robust import run_recbole_robust

    common = {"data_path": data, "epochs": epochs, "eval_step": epochs, "show_progress": False, "state": "WARNING",
              "threads": 1, "build_dir": BUILD_DIR,
              "checkpoint_dir": "saved", "poison_targets": ["0"], "poison_topk": [10, 20, 50], "seed": 2023,
              "analysis": "poisoning"}
    began = time.perf_counter()
    before = run_recbole_robust(model=model, dataset="amazon_game_recad", config_dict=common, saved=False)
    after = run_recbole_robust(model=model, dataset="amazon_game_recad", saved=False, config_dict={
        **common, "poison": attack, "poison_users": 50, "poison_filler": 36})
    total = time.perf_counter() - began
    b, a = before["analyses"]["poisoning"], after["analyses"]["poisoning"]
    row = {"side": "ours", "victim": model, "attack": attack, "generate_s": a.records[0]["seconds"], "total_s": total,
           "pred_shift": float(np.nanmean(a.data["scores"] - b.data["scores"]))}
    for k in (10, 20, 50):
        row[f"HR@{k}"], row[f"HR@{k} after"] = b.records[0][f"hit@{k}"], a.records[0][f"hit@{k}"]
    return row


def recad(python, folder, victim, attack, epochs):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RECAD_DRIVER)
    out = subprocess.run([python, f.name, victim, attack, "0", str(epochs)], capture_output=True, text=True,
                         cwd=folder, env={**os.environ, "RECAD_DIR": folder, "PYTHONPATH": folder})
    text = out.stdout + out.stderr
    row = {"side": "RecAD", "victim": victim, "attack": attack}
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip("│ ").split("│")]
        if line.startswith("GENERATE_SECONDS"):
            row["generate_s"] = float(line.split()[1])
        elif line.startswith("TOTAL_SECONDS"):
            row["total_s"] = float(line.split()[1])
        elif len(parts) == 2 and parts[0] in ("pred_shift", *[f"HR@{k}" for k in (10, 20, 50)],
                                              *[f"HR@{k} after attack" for k in (10, 20, 50)]):
            row[parts[0].replace(" attack", "")] = float(parts[1])
    if "total_s" not in row:
        raise SystemExit(f"RecAD failed ({victim}, {attack}):\n{text[-2000:]}")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--recad_python", help="a Python with RecAD's requirements (omit: our side only)")
    parser.add_argument("--recad_dir", help="RecAD's checkout, with data/game/game_{train,valid,test}.csv")
    parser.add_argument("--recad_epochs", type=int, default=5)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--out", help="write the rows as JSON")
    args = parser.parse_args()
    data = os.environ.get("RECBOLE_ROBUST_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                                 "..", "shared", "datasets"))
    data = os.path.abspath(data)
    os.chdir(tempfile.mkdtemp())
    rows = []
    for attack in args.attacks:
        for model in ("BPR", "LightGCN"):
            rows.append(ours(model, attack, args.epochs, data))
            print(rows[-1], flush=True)
        if args.recad_python:
            for victim in ("mf", "lightgcn"):
                rows.append(recad(args.recad_python, os.path.abspath(args.recad_dir), victim, attack,
                                  args.recad_epochs))
                print(rows[-1], flush=True)
    from tabulate import tabulate

    keys = ["side", "victim", "attack", "HR@10", "HR@10 after", "HR@20", "HR@20 after", "HR@50", "HR@50 after",
            "pred_shift", "generate_s", "total_s"]
    print(tabulate([[r.get(k, "") for k in keys] for r in rows], headers=keys, tablefmt="github", floatfmt=".4f"))
    if args.out:
        json.dump(rows, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
