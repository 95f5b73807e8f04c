"""The papers' tables as one command each (``recbole-robust table --table mg3 --seeds 999 1 2``).

A table is a preset of a report over models trained here (``pipelines.train_and_report``): its dataset,
evaluation preset, models (``Label=Model`` for a model under a label of its own), settings (``Label.key=value``
for one label's), whether every model also runs with Mirror Gradient (``X + MG``), its analyses, and the metrics
of its accuracy table. Options given on the command line replace the table's (``--set`` adds to its settings).
The MG paper's tables (all on TikTok under the ``mg`` preset, with the paper's top-5 metrics):

* ``mg3``: table 3, the multimodal models with and without MG, and after them MMRec's newer models, which the
  paper predates (MGCN, LGMRec, PGL, SMORE, DAMRS, MVGAE, MMGCF, and ItemKNNCBF, which learns nothing, so MG leaves it as it is);
* ``mg4``: table 4, Gaussian noise on the embeddings of BM3 and FREEDOM with and without MG;
* ``mg7``: table 7, DRAGON plain, with SAM, ASAM, SSAM-F and MG;
* ``mg9``: table 9, LightGCN, LayerGCN and SelfCF with and without MG;
* ``mg-fig3``: figure 3, the loss landscapes of BM3 and FREEDOM with and without MG (one colour scale per model)
  and how fast each loss rises around its minimum.
"""
import numpy as np
from tabulate import tabulate

from recbole_robust.config import evaluated_metrics
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.pipelines import parse_variants, train_and_report
from recbole_robust.quick_start import make_config

MG = {"mirror_gradient": True, "mg_alpha1": 1.0, "mg_alpha2": 0.1, "mg_interval": 3}
"""Mirror Gradient as the MG paper's tables run it (its section 5.1)."""
TOP5 = ["recall@5", "ndcg@5", "precision@5", "map@5"]
TABLES = {
    "mg3": {"dataset": "tiktok", "preset": "mg", "mirror": True, "columns": TOP5,
            "models": ["VBPR", "MMGCN", "GRCN", "DualGNN", "SLMRec", "BM3", "FREEDOM", "DRAGON",
                       "MGCN", "LGMRec", "PGL", "SMORE", "DAMRS", "MVGAE", "MMGCF", "ItemKNNCBF"]},
    "mg4": {"dataset": "tiktok", "preset": "mg", "mirror": True, "columns": TOP5, "set": ["analysis=noise"],
            "models": ["BM3", "FREEDOM"]},
    "mg7": {"dataset": "tiktok", "preset": "mg", "columns": TOP5,
            "models": ["DRAGON", "SAM=DRAGON", "ASAM=DRAGON", "SSAM-F=DRAGON", "MG=DRAGON"],
            "set": ["SAM.sharpness=sam", "ASAM.sharpness=asam", "SSAM-F.sharpness=ssam_f", "MG.mirror_gradient=True"]},
    "mg9": {"dataset": "tiktok", "preset": "mg", "mirror": True, "columns": TOP5,
            "models": ["LightGCN", "LayerGCN", "SelfCF"]},
    "mg-fig3": {"dataset": "tiktok", "preset": "mg", "mirror": True, "columns": TOP5, "set": ["analysis=landscape"],
                "models": ["BM3", "FREEDOM"]},
}


def table_plan(name=None, dataset=None, preset=None, models=None, sets=(), mirror=None):
    """``(dataset, preset, variants, columns)`` of table ``name`` with the command line's options in place of the
    table's (``sets`` after the table's own)."""
    if name is not None and name not in TABLES:
        raise RecBoleRobustError(f"unknown table '{name}': tables are {', '.join(TABLES)}")
    table = TABLES.get(name, {})
    dataset, preset = dataset or table.get("dataset"), preset or table.get("preset")
    models = models or table.get("models")
    if not dataset or not models:
        raise RecBoleRobustError("a table needs --dataset and --models (or --table)")
    mirror = table.get("mirror", False) if mirror is None else mirror
    if mirror:  # each model also with Mirror Gradient, as "<label> + MG"
        expanded, mirrored = [], []
        for item in models:
            label, sep, model = item.partition("=")
            expanded += [item, f"{label} + MG={model if sep else label}"]
            mirrored += [f"{label} + MG.{key}={value}" for key, value in MG.items()]
        models, sets = expanded, [*mirrored, *sets]
    variants = parse_variants(models, [*table.get("set", []), *sets])
    return dataset, preset, variants, table.get("columns")


def accuracy_table(trained, columns=None):
    """Each label's test metrics, mean ± std over its seeds (one row per label)."""
    first = next(iter(trained.values()))[0]["test_result"]
    columns = columns or list(first)
    rows = []
    for label, runs in trained.items():
        cells = [label]
        for m in columns:
            values = np.array([r["test_result"][m] for r in runs], dtype=float)
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}")
        rows.append(cells + [len(runs)])
    return tabulate(rows, headers=["model", *columns, "n"], tablefmt="github")


def paper_table(name, seeds, dataset=None, preset=None, models=None, sets=(), mirror=None, config_file_list=None,
                config_dict=None, out_dir=None, command=None):
    """Train and report table ``name`` (or the table the options describe); returns ``(report paths, accuracy
    table text)``."""
    dataset, preset, variants, columns = table_plan(name, dataset, preset, models, sets, mirror)
    label, model, extra = variants[0]
    evaluated = evaluated_metrics(make_config(model, dataset, config_file_list, {**(config_dict or {}), **extra}, preset))
    missing = [c for c in columns or [] if c not in evaluated]
    if missing:
        raise RecBoleRobustError(f"the table's metrics {', '.join(missing)} are not evaluated "
                                 f"({', '.join(evaluated)}; set metrics and topk)")
    _, paths, trained = train_and_report(variants, dataset, seeds, config_file_list, config_dict, preset, out_dir,
                                         command)
    return paths, accuracy_table(trained, columns)
