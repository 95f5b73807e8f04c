"""AMR vs VBPR under the AMR protocol: accuracy over seeds, paired t-test, robustness to FGM attacks.

    python benchmarks/amr_vs_vbpr.py --dataset tiktok --seeds 2020 2021 2022 --adv_eps 1.0 \
        --attack_eps 0.05 0.1 0.2 1 2 --data_path ../shared/datasets

Per seed (each seed gives its own leave-one-out split, shared by both models):
1. VBPR in AMR's eq. 4 form (AMR with lambda = 0) is trained to convergence (early stopping on
   valid NDCG@10);
2. AMR starts from that checkpoint (Algorithm 1, line 1) and trains with the adversary;
3. both best checkpoints are evaluated on the test users: HR/NDCG@5/10/20, a paired t-test over
   users, and FGM / random attacks on the item features for every ``--attack_eps``.
Prints the tables; writes nothing but RecBole's logs and checkpoints (under --checkpoint_dir).
"""
import argparse
import os
import sys
import time

import numpy as np
from tabulate import tabulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def train(model, dataset, config_dict, pretrained=None):
    from recbole_robust.quick_start import prepare_run
    from recbole_robust.trainer import load_weights

    config, _, (train_data, valid_data, test_data), trainer = prepare_run(
        model, dataset, config_dict=config_dict, preset="amr", pretrained=pretrained
    )
    start = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True)
    seconds = time.perf_counter() - start
    load_weights(trainer.model, trainer.saved_model_file, config["device"])
    return trainer, train_data, test_data, seconds, len(trainer.train_loss_dict)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--adv_eps", type=float, default=1.0)
    parser.add_argument("--adv_lambda", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--adv_epochs", type=int, default=100)
    parser.add_argument("--attack_eps", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--eval_step", type=int, default=2)
    parser.add_argument("--stopping_step", type=int, default=5)
    parser.add_argument("--data_path", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--checkpoint_dir", default=os.path.join(REPO, "saved", "amr_vs_vbpr"))
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config would read "--key=value" arguments as its own settings

    from recbole_robust.robustness.attacks import attack_sweep
    from recbole_robust.robustness.compare import evaluate_per_user, paired_t_test

    base = {"data_path": args.data_path, "checkpoint_dir": args.checkpoint_dir, "show_progress": False,
            "state": "WARNING", "eval_step": args.eval_step, "stopping_step": args.stopping_step}
    accuracy, robustness, tests = [], [], []
    for seed in args.seeds:
        common = {**base, "seed": seed}
        vbpr, train_data, test_data, vbpr_s, vbpr_epochs = train(
            "AMR", args.dataset, {**common, "adv_lambda": 0.0, "epochs": args.epochs})
        amr, _, _, amr_s, amr_epochs = train(
            "AMR", args.dataset, {**common, "adv_eps": args.adv_eps, "adv_lambda": args.adv_lambda,
                                  "epochs": args.adv_epochs}, pretrained=vbpr.saved_model_file)
        per_user = {}
        for name, trainer, seconds, epochs in (("VBPR", vbpr, vbpr_s, vbpr_epochs), ("AMR", amr, amr_s, amr_epochs)):
            result, per_user[name] = evaluate_per_user(trainer, test_data)
            accuracy.append([seed, name, result["hit@10"], result["ndcg@10"], epochs, seconds / epochs])
            clean, rows = attack_sweep(trainer, train_data, test_data, args.attack_eps, ("fgm", "random"),
                                       terms=[(["item_features"], ["row"])], seed=seed)
            for r in rows:
                drop = (clean["ndcg@10"] - r["ndcg@10"]) / clean["ndcg@10"]
                robustness.append([seed, name, r["method"], r["eps"], clean["ndcg@10"], r["ndcg@10"], drop])
        for row in paired_t_test("VBPR", per_user["VBPR"], "AMR", per_user["AMR"]):
            if row["metric"] in ("hit@10", "ndcg@10"):
                tests.append([seed, row["metric"], row["VBPR"], row["AMR"], row["gain"], row["t"], row["p"]])

    print(f"\n## {args.dataset}, AMR protocol (leave-one-out, 999 sampled negatives), adv_eps={args.adv_eps}\n")
    print(tabulate(accuracy, headers=["seed", "model", "HR@10", "NDCG@10", "epochs", "s/epoch"],
                   tablefmt="github", floatfmt=".4f"))
    summary = []
    for name in ("VBPR", "AMR"):
        hr = np.array([r[2] for r in accuracy if r[1] == name])
        ndcg = np.array([r[3] for r in accuracy if r[1] == name])
        summary.append([name, f"{hr.mean():.4f} ± {hr.std():.4f}", f"{ndcg.mean():.4f} ± {ndcg.std():.4f}"])
    print("\nmean ± std over seeds\n")
    print(tabulate(summary, headers=["model", "HR@10", "NDCG@10"], tablefmt="github"))
    print("\npaired t-test over test users (AMR vs VBPR)\n")
    print(tabulate(tests, headers=["seed", "metric", "VBPR", "AMR", "gain", "t", "p"], tablefmt="github",
                   floatfmt=".4g"))
    print("\nNDCG@10 under attacks on the item features (relative drop), mean over seeds\n")
    table = []
    for method in ("fgm", "random"):
        for eps in args.attack_eps:
            cells = [method, eps]
            for name in ("VBPR", "AMR"):
                drops = [r[6] for r in robustness if r[1] == name and r[2] == method and r[3] == eps]
                cells.append(f"{100 * np.mean(drops):.2f}%")
            table.append(cells)
    print(tabulate(table, headers=["attack", "eps", "VBPR drop", "AMR drop"], tablefmt="github"))


if __name__ == "__main__":
    main()
