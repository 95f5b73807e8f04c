"""The equivalence table of ``--nproc``: 1 process against 2 gloo processes with half of every batch each.

For each configuration, the same run (one epoch, one thread per process, the same seed) with ``nproc`` 1 and 2;
prints the largest difference between the weights after the epoch (the ``.last.pth`` states) and both runs'
validation and test metrics. ``tests/test_distributed.py`` asserts the same on the small test data.

    python benchmarks/nproc_equivalence.py --dataset ml-100k [--epochs 1]
"""
import argparse
import glob
import os
import tempfile

import torch
from tabulate import tabulate

from recbole_robust import run_recbole_robust

CONFIGURATIONS = {
    "BPR": ("BPR", {}),
    "VBPR + adversary (item features)": ("VBPR", {"adv_targets": ["item_features"], "adv_eps": 0.5,
                                                  "negatives_from": "train"}),
    "LightGCN + MG": ("LightGCN", {"mirror_gradient": True}),
    "FREEDOM": ("FREEDOM", {}),
    "BPR + SAM, batch 2047": ("BPR", {"sharpness": "sam", "train_batch_size": 2047}),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    rows = []
    for label, (model, settings) in CONFIGURATIONS.items():
        states, results = [], []
        for nproc in (1, 2):
            folder = tempfile.mkdtemp(prefix=f"nproc_equivalence-{model}-{nproc}-")
            config = {"epochs": args.epochs, "nproc": nproc, "threads": 1, "seed": args.seed, "show_progress": False,
                      "state": "WARNING", "checkpoint_dir": folder, **settings}
            results.append(run_recbole_robust(model, args.dataset, config_dict=config))
            last = glob.glob(os.path.join(folder, "*.last.pth"))[0]
            states.append(torch.load(last, weights_only=True)["state_dict"])
        difference = max(float((states[0][k].float() - states[1][k].float()).abs().max()) for k in states[0]
                         if states[0][k].is_floating_point() and states[0][k].layout == torch.strided)
        scale = max(float(states[0][k].float().abs().max()) for k in states[0]
                    if states[0][k].is_floating_point() and states[0][k].layout == torch.strided)
        valid = [r["best_valid_result"]["mrr@10"] for r in results]
        test = [r["test_result"]["recall@10"] for r in results]
        rows.append([label, f"{difference:.1e}", f"{scale:.2f}", f"{valid[0]:.4f} / {valid[1]:.4f}",
                     f"{test[0]:.4f} / {test[1]:.4f}", "same" if results[0]["test_result"] == results[1]["test_result"]
                     else "differ"])
    print(f"{args.dataset}, {args.epochs} epoch(s), seed {args.seed}, one thread per process")
    print(tabulate(rows, headers=["run", "max |w1 - w2|", "max |w|", "valid MRR@10, 1 / 2", "test Recall@10, 1 / 2",
                                  "all test metrics"], tablefmt="github"))


if __name__ == "__main__":
    main()
