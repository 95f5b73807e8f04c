"""Prepare a scratch copy of MMRec (github:enoche/MMRec) to run side by side with recbole-robust on TikTok, on CPU.

    python benchmarks/mmrec_setup.py <MMRec git dir (from the search tool's fetch)> <scratch dir> [--python PY]
    python benchmarks/vs_reference.py --reference <scratch dir> --models MGCN ItemKNNCBF --mg off

As ``../shared/tools/mg-release-setup.sh`` does for the MG release: nothing of MMRec enters the repository. It
extracts ``src/`` from the git directory, builds ``data/tiktok`` from ``../shared/datasets/tiktok`` (CRLF removed,
float16 -> float32, audio as MMRec's 'text'), and makes the compatibility fixes today's CPU stack needs: the unused
``lmdb`` import, ``np.float``, ``torch_scatter.scatter_add`` (-> ``Tensor.index_add_``), ``.cuda()`` calls in the
models (-> the model's device), scipy's removed ``dok_matrix._update``, PGL's import of ``sparsesvd`` (which
does not build on Python 3.11; only its ``global`` mode uses it), ``use_gpu: False``; each model's grid is cut to its first value, and the dataset
config of ``baby`` is reused for ``tiktok``. DA-MRS reads an item graph (``item_graph_dict_2.npy``) that MMRec does not
generate; it is written from the training split as the plugin builds its behaviour graph
(``graphs.user_cooccurrence_graph`` on the transposed interactions: each item's 10 items with most users in common,
weighted by the count). ``--python`` names the interpreter that has torch, numpy, scipy, pandas,
pyyaml and matplotlib (default: this one); it is written to ``<scratch>/python`` for ``vs_reference.py``.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tiktok"
SCATTER = ("    from torch_scatter import scatter_add\n    row, col = edge_index[0], edge_index[1]\n"
           "    deg = scatter_add(edge_weight, row, dim=0, dim_size=num_nodes)")
INDEX_ADD = ("    row, col = edge_index[0], edge_index[1]\n"
             "    deg = torch.zeros(num_nodes, dtype=edge_weight.dtype, device=edge_weight.device)"
             ".index_add_(0, row, edge_weight)")


def edit(path, change):
    text = Path(path).read_text()
    Path(path).write_text(change(text))


def first_values(text):
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\w+)\s*:\s*\[(.*)\]\s*$", line)  # MMRec writes "dropout_rate : [0, 0.1]" too
        if m and m.group(1) not in ("hyper_parameters", "weight_size", "mlp_hidden_size", "learning_rate_scheduler"):
            line = f"{m.group(1)}: [{m.group(2).split(',')[0].strip()}]"
        out.append(line)
    return "\n".join(out) + "\n"


def write_item_graph(data, k):
    """DA-MRS's ``item_graph_dict_2.npy`` in MMRec's format ({item: (neighbours, weights)}, a pickled dict that only
    MMRec reads) from the training rows (``x_label`` 0) of ``data/tiktok.inter``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from recbole_robust.data.graphs import user_cooccurrence_graph

    rows = np.loadtxt(data / "tiktok.inter", dtype=np.int64, skiprows=1)
    users, items = rows[rows[:, 2] == 0, 0], rows[rows[:, 2] == 0, 1]
    n_users, n_items = int(rows[:, 0].max()) + 1, int(rows[:, 1].max()) + 1
    indptr, neighbours, counts = user_cooccurrence_graph(items, users, n_items, n_users, k)
    graph = {i: (neighbours[indptr[i]:indptr[i + 1]].tolist(), counts[indptr[i]:indptr[i + 1]].tolist())
             for i in range(n_items) if indptr[i + 1] > indptr[i]}
    np.save(data / "item_graph_dict_2.npy", graph, allow_pickle=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir")
    parser.add_argument("out")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", f"--git-dir={args.git_dir}", "archive", "HEAD", "src"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    data = out / "data" / "tiktok"
    data.mkdir(parents=True, exist_ok=True)
    (data / "tiktok.inter").write_bytes((SHARED / "tiktok.inter").read_bytes().replace(b"\r", b""))
    np.save(data / "image_feat.npy", np.load(SHARED / "image_feat.npy").astype(np.float32))
    np.save(data / "text_feat.npy", np.load(SHARED / "audio_feat.npy").astype(np.float32))
    write_item_graph(data, k=10)
    src = out / "src"
    edit(src / "utils" / "dataset.py", lambda s: re.sub(r"from utils\.data_utils import \([^)]*\)\n", "", s)
         .replace("import lmdb\n", ""))
    edit(src / "utils" / "metrics.py", lambda s: re.sub(r"np\.float\b", "float", s))
    edit(src / "utils" / "utils.py", lambda s: s.replace(SCATTER, INDEX_ADD))
    for path in glob.glob(str(src / "models" / "*.py")):  # scipy removed dok_matrix._update
        edit(path, lambda s: s.replace(".cuda()", ".to(self.device)").replace("A._update(data_dict)",
                                                                              "A._dict.update(data_dict)"))
    edit(src / "models" / "pgl.py", lambda s: s.replace(  # only PGL's mode 'global' needs it; it does not build here
        "from sparsesvd import sparsesvd\n", "try:\n    from sparsesvd import sparsesvd\nexcept ImportError:\n"
        "    sparsesvd = None\n"))
    edit(src / "configs" / "overall.yaml", lambda s: s.replace("use_gpu: True", "use_gpu: False"))
    for path in glob.glob(str(src / "configs" / "model" / "*.yaml")):
        edit(path, first_values)
    baby = (src / "configs" / "dataset" / "baby.yaml").read_text()
    (src / "configs" / "dataset" / "tiktok.yaml").write_text(baby.replace("baby.inter", "tiktok.inter"))
    (out / "python").write_text(os.path.abspath(args.python) + "\n")
    print(f"ready: cd {src} && {args.python} main.py -m MGCN -d tiktok")


if __name__ == "__main__":
    main()
