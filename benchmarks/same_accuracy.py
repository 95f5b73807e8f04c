"""Test metrics of the graph models after 2 epochs on TikTok (MG preset, seed 999, one thread), as JSON: run it
with two checkouts first on PYTHONPATH to compare the code before and after a refactoring.

    OMP_NUM_THREADS=1 PYTHONPATH=<old checkout> python benchmarks/same_accuracy.py old.json
    OMP_NUM_THREADS=1 PYTHONPATH=<new checkout> python benchmarks/same_accuracy.py new.json
"""
import json
import os
import sys
import tempfile
import time

out = os.path.abspath(sys.argv[1])
DATA = os.environ.get("RECBOLE_ROBUST_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                             "shared", "datasets"))
os.chdir(tempfile.mkdtemp())
from recbole_robust import run_recbole_robust  # noqa: E402

res = {}
for model in ["FREEDOM", "DRAGON", "DualGNN", "LATTICE", "LayerGCN", "SelfCF", "BM3", "MMGCN", "SLMRec"]:
    t = time.time()
    r = run_recbole_robust(model=model, dataset="tiktok", preset="mg", config_dict={
        "data_path": DATA, "epochs": 2, "show_progress": False, "state": "WARNING",
        "build_dir": os.path.join(tempfile.gettempdir(), "same_accuracy_build"), "checkpoint_dir": "saved"}, saved=False)
    res[model] = {k: float(v) for k, v in r["test_result"].items() if k in ("recall@20", "ndcg@20", "recall@5")}
    print(model, res[model], f"{time.time() - t:.0f}s", flush=True)
json.dump(res, open(out, "w"), indent=1)
