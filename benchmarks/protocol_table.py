"""Accuracy (mean ± std over seeds) of several models under one protocol preset, with robustness tests.

    # ACAE table 3 and table 2 (decoder-noise robustness) on FilmTrust
    python benchmarks/protocol_table.py --dataset filmtrust --preset acae \
        --models Pop BPR CDAE APR CAE ACAE --seeds 2020 2021 2022 \
        --attack_targets decoder.weight --attack_eps 8 --attack_metric hit@5

    # MG tables 2 and 4-5: every model with and without Mirror Gradient on tiktok
    python benchmarks/protocol_table.py --dataset tiktok --preset mg --models VBPR FREEDOM \
        --mirror --analysis noise adjust --seeds 2020 2021 2022

    # VAEGAN table 2 (weak generalisation) on ml-100k: baselines and the three ablations
    python benchmarks/protocol_table.py --dataset ml-100k --preset vaegan \
        --models CDAE MultiVAE MultiDAE AVB=VAEGAN AVB+D=VAEGAN AVB+D+C=VAEGAN \
        --set epochs=300 --set train_batch_size=256 \
        --set AVB.variant=AVB --set AVB+D.variant=AVB+D --set AVB+D+C.variant=AVB+D+C

The MG paper's tables are presets of this script (``--table``; an option given as well replaces the
table's, ``--set`` adds to its settings): ``mg3`` (table 3: multimodal models with and without MG), ``mg4`` (table 4: embedding noise on
BM3 and FREEDOM with and without MG), ``mg7`` (table 7: DRAGON plain, SAM, ASAM, SSAM-F and MG) and ``mg9``
(table 9: LightGCN, LayerGCN and SelfCF with and without MG) and ``mg-fig3`` (figure 3: the loss
landscapes of BM3 and FREEDOM with and without MG in one PNG, one colour scale per model, and a table of how
fast each loss rises around its minimum), each on tiktok under the MG preset with
the paper's top-5 metrics:

    python benchmarks/protocol_table.py --table mg7 --seeds 999 1 2

Every run is the normal pipeline (``run_recbole_robust``). ``--set key=value`` adds a setting to every
run, ``--set Model.key=value`` to one model's runs; ``--models Label=Model`` runs a model under a
label of its own (settings ``--set Label.key=value``), e.g. one row per ablation of a model. Prints
the tables; writes only RecBole's logs, checkpoints and reports under ``--checkpoint_dir``.
"""
import argparse
import ast
import os
import sys

import numpy as np
from tabulate import tabulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MG = {"mirror_gradient": True, "mg_alpha1": 1.0, "mg_alpha2": 0.1, "mg_interval": 3}
TOP5 = ["recall@5", "ndcg@5", "precision@5", "map@5"]
TABLES = {  # the MG paper's tables: {option: value} used where the command line leaves the option out
    "mg3": {"dataset": "tiktok", "preset": "mg", "mirror": True, "metrics": TOP5,
            "models": ["VBPR", "MMGCN", "GRCN", "DualGNN", "SLMRec", "BM3", "FREEDOM", "DRAGON"]},
    "mg4": {"dataset": "tiktok", "preset": "mg", "mirror": True, "metrics": TOP5, "analysis": ["noise"],
            "models": ["BM3", "FREEDOM"]},
    "mg7": {"dataset": "tiktok", "preset": "mg", "metrics": TOP5,
            "models": ["DRAGON", "SAM=DRAGON", "ASAM=DRAGON", "SSAM-F=DRAGON", "MG=DRAGON"],
            "set": ["SAM.sharpness=sam", "ASAM.sharpness=asam", "SSAM-F.sharpness=ssam_f",
                    "MG.mirror_gradient=True"]},
    "mg9": {"dataset": "tiktok", "preset": "mg", "mirror": True, "metrics": TOP5,
            "models": ["LightGCN", "LayerGCN", "SelfCF"]},
    "mg-fig3": {"dataset": "tiktok", "preset": "mg", "mirror": True, "metrics": TOP5, "analysis": ["landscape"],
                "models": ["BM3", "FREEDOM"]},
}


def parse_sets(items):
    common, per_model = {}, {}
    for item in items:
        key, value = item.split("=", 1)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        if "." in key:
            model, key = key.split(".", 1)
            per_model.setdefault(model, {})[key] = value
        else:
            common[key] = value
    return common, per_model


def landscape_panels(results):
    """{label: (alphas, betas, losses)} of each label's first seed."""
    return {label: (np.asarray(l["alphas"]), np.asarray(l["betas"]), np.asarray(l["losses"]))
            for label, runs in results.items() for l in [runs[0]["analysis"]["landscape"]]}


def flatness_rows(panels, radius=0.5):
    """Per label: the loss at the trained point, and its mean rise within ``radius`` of it and over the grid
    (a flatter minimum rises less)."""
    rows = []
    for label, (alphas, betas, losses) in panels.items():
        a, b = np.meshgrid(alphas, betas, indexing="ij")
        centre = losses[np.argmin(np.abs(alphas)), np.argmin(np.abs(betas))]
        near = np.hypot(a, b) <= radius
        rows.append([label, centre, (losses[near] - centre).mean(), (losses - centre).mean()])
    return rows


def plot_landscapes(panels, path):
    """One PNG with the training-loss landscape of each model's first seed (the MG paper's figure 3). A model
    with and without MG share one colour scale (their losses compare); different models, whose losses differ in
    kind (BM3's is a self-supervised loss, FREEDOM's BPR), get one scale each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for label in panels:
        groups.setdefault(label.removesuffix(" + MG"), []).append(label)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, constrained_layout=True)
    k = 0
    for labels in groups.values():
        low = min(panels[l][2].min() for l in labels)
        high = max(panels[l][2].max() for l in labels)
        levels = np.linspace(low, high, 21) if high > low else 21
        group_axes = axes[0][k:k + len(labels)]
        for ax, label in zip(group_axes, labels):
            alphas, betas, losses = panels[label]
            contour = ax.contourf(betas, alphas, losses, levels=levels, cmap="viridis")
            ax.plot(0, 0, marker="*", color="red", markersize=9)
            ax.set_title(label)
            ax.set_xlabel("direction 2")
            ax.set_ylabel("direction 1")
        fig.colorbar(contour, ax=group_axes.tolist(), label="training loss")
        k += len(labels)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", choices=sorted(TABLES), help="one of the MG paper's tables (see above)")
    parser.add_argument("--dataset")
    parser.add_argument("--preset")
    parser.add_argument("--models", nargs="+", metavar="[Label=]Model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--mirror", action="store_true", help="run every model with and without Mirror Gradient")
    parser.add_argument("--attack_targets", nargs="+")
    parser.add_argument("--attack_eps", type=float, nargs="+", default=[])
    parser.add_argument("--attack_metric")
    parser.add_argument("--analysis", nargs="+", choices=["noise", "adjust", "landscape"])
    parser.add_argument("--metrics", nargs="+", help="columns of the accuracy table (default: all)")
    parser.add_argument("--set", action="append", metavar="[Model.]key=value")
    parser.add_argument("--data_path", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--checkpoint_dir", default=os.path.join(REPO, "saved", "protocol_table"))
    args = parser.parse_args()
    for key, value in TABLES.get(args.table, {}).items():
        if key == "set":  # the table's own settings first, then the command line's
            args.set = value + (args.set or [])
        elif getattr(args, key) in (None, False):
            setattr(args, key, value)
    args.set, args.analysis = args.set or [], args.analysis or []
    if not args.dataset or not args.models:
        parser.error("--dataset and --models are required (or --table)")
    sys.argv = sys.argv[:1]  # RecBole's Config would read our arguments as its settings

    from recbole_robust.quick_start import run_recbole_robust

    common, per_model = parse_sets(args.set)
    models = [(m.split("=", 1) if "=" in m else (m, m)) for m in args.models]
    variants = [(label, model, {}) for label, model in models]
    if args.mirror:
        variants = [v for label, model in models for v in ((label, model, {}), (f"{label} + MG", model, MG))]
    results = {}
    for label, model, extra in variants:
        name = label.removesuffix(" + MG")
        for seed in args.seeds:
            config = {"data_path": args.data_path, "checkpoint_dir": args.checkpoint_dir, "show_progress": False,
                      "state": "WARNING", "seed": seed, **common, **per_model.get(model, {}),
                      **(per_model.get(name, {}) if name != model else {}), **extra}
            if args.attack_eps:
                config.update({"attack": "fgm", "attack_eps": args.attack_eps, "attack_targets": args.attack_targets,
                               "attack_metric": args.attack_metric})
            if args.analysis:
                config["analysis"] = args.analysis
            results.setdefault(label, []).append(
                run_recbole_robust(model=model, dataset=args.dataset, preset=args.preset, config_dict=config))
            print(f"done: {label} seed {seed}: {dict(results[label][-1]['test_result'])}", flush=True)

    metrics = args.metrics or list(next(iter(results.values()))[0]["test_result"])
    table = []
    for label, runs in results.items():
        cells = [label]
        for m in metrics:
            values = np.array([r["test_result"][m] for r in runs])
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}")
        table.append(cells)
    print(f"\n## {args.dataset}, preset {args.preset}, seeds {args.seeds}: test metrics, mean ± std\n")
    print(tabulate(table, headers=["model"] + metrics, tablefmt="github"))

    if args.attack_eps:
        metric = (args.attack_metric or metrics[0]).lower()
        rows = []
        for label, runs in results.items():
            for method in ("fgm", "random"):
                for eps in args.attack_eps:
                    drops, clean, attacked = [], [], []
                    for r in runs:
                        c = r["attack"]["clean"][metric]
                        a = next(x[metric] for x in r["attack"]["rows"] if x["method"] == method and x["eps"] == eps)
                        clean.append(c), attacked.append(a), drops.append((c - a) / c if c else 0.0)
                    rows.append([label, method, eps, np.mean(clean), np.mean(attacked),
                                 f"{100 * np.mean(drops):.2f}% ± {100 * np.std(drops):.2f}"])
        print(f"\n{metric} under attacks on {args.attack_targets}, mean over seeds\n")
        print(tabulate(rows, headers=["model", "attack", "eps", "clean", "attacked", "relative drop"],
                       tablefmt="github", floatfmt=".4f"))

    if "landscape" in args.analysis:
        panels = landscape_panels(results)
        path = plot_landscapes(panels, os.path.join(args.checkpoint_dir, f"landscapes-{args.dataset}.png"))
        print(f"\nloss landscapes (first seed of each model): {path}\n")
        print(tabulate(flatness_rows(panels), headers=["model", "loss at the minimum", "mean rise within 0.5",
                                                       "mean rise over the grid"], tablefmt="github", floatfmt=".4f"))
    for name in (a for a in args.analysis if a != "landscape"):
        rows = []
        for label, runs in results.items():
            for m in metrics:
                clean = np.array([r["analysis"]["clean"][m] for r in runs])
                if name == "noise":
                    after = np.array([np.mean(r["analysis"]["noise"]["runs"][0][m]) for r in runs])
                else:
                    after = np.array([np.mean(r["analysis"]["adjust"]["results"][0][m]) for r in runs])
                drop = (clean - after) / np.where(clean > 0, clean, 1)
                rows.append([label, m, clean.mean(), after.mean(), f"{100 * drop.mean():.2f}% ± {100 * drop.std():.2f}"])
        print(f"\n{name}: clean vs perturbed, mean over seeds\n")
        print(tabulate(rows, headers=["model", "metric", "clean", name, "relative drop"], tablefmt="github",
                       floatfmt=".4f"))


if __name__ == "__main__":
    main()
