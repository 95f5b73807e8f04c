"""MMRec's model and ours from the same weights, on TikTok: do they compute the same thing?

    python benchmarks/same_weights.py --reference <MMRec scratch dir> --model SMORE
    python benchmarks/same_weights.py --reference <MMRec scratch dir> --model MGCN --epochs 15

``--reference`` is a folder prepared by ``benchmarks/mmrec_setup.py``; run this script with the interpreter written
to its ``python`` file (this project's, by default), which imports MMRec's code from ``src/`` in this process.
Both models are built for seed 999, MMRec's initial weights are copied into ours (its users and items mapped to
RecBole's ids by their tokens), and the script prints:

1. how far each item graph is from MMRec's (the largest difference and the rows where the neighbours differ);
2. the largest difference of the final user and item embeddings, and of the loss of one MMRec training batch;
3. the largest relative difference of each parameter's gradient on that batch;
4. the validation metrics of the same weights, from each side's own evaluator;
5. with ``--same_graphs``, 2-3 again after ours takes MMRec's item graphs;
6. with ``--epochs N``, each side trained from these weights by its own trainer and training loader (its own
   shuffling and negatives) for N epochs: each epoch's validation Recall@20, and the test metrics of the best.

Where a run of ours and one of MMRec part (benchmarks/RESULTS.md), this separates the model and the evaluator
(1-5, deterministic) from the random streams (the initial weights, the batches and negatives: 6).
"""
import argparse
import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SEED = 999


def parameter_pairs(model, ours, ref):
    """``(our parameter, MMRec's, rows)`` of every parameter: ``rows`` is ``"user"`` or ``"item"`` for a table whose
    rows are users or items (ours has RecBole's padding row 0), else ``None``. MMRec's port names the image and text
    modalities; TikTok's are image and audio (MMRec's scratch folder holds the audio features as its text)."""
    names = {"image": ("image", "v"), "audio": ("text", "t")}
    pairs = [(ours.user_embedding.weight, ref.user_embedding.weight, "user"),
             (ours.item_id_embedding.weight, ref.item_id_embedding.weight, "item")]

    def modules(a, b):
        pairs.extend((p, q, None) for p, q in zip(a.parameters(), b.parameters(), strict=True))

    for m, (name, short) in names.items():
        pairs.append((ours.modality_embeddings[m].weight, getattr(ref, f"{name}_embedding").weight, "item"))
        modules(ours.projections[m], getattr(ref, f"{name}_trs"))
        modules(ours.purifiers[m], getattr(ref, f"gate_{short}"))
        modules(ours.preferences[m], getattr(ref, f"gate_{name}_prefer"))
    if model == "MGCN":
        modules(ours.query, ref.query_common)
    else:  # SMORE
        modules(ours.purifiers["fusion"], ref.gate_f)
        modules(ours.preferences["fusion"], ref.gate_fusion_prefer)
        for m, (name, short) in names.items():
            modules(ours.queries[m], getattr(ref, f"query_{short}"))
        for part, name in (*((m, name) for m, (name, _) in names.items()), ("fusion", "fusion")):
            pairs.append((ours.filters[part], getattr(ref, f"{name}_complex_weight"), None))
    return pairs


def reference_graphs(model, ref):
    graphs = {"image": ref.image_original_adj, "audio": ref.text_original_adj}
    if model == "SMORE":
        graphs["fusion"] = ref.fusion_adj
    return graphs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, type=Path, help="MMRec folder made by mmrec_setup.py")
    parser.add_argument("--model", choices=["MGCN", "SMORE"], default="SMORE")
    parser.add_argument("--data_path", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--same_graphs", action="store_true", help="then give ours MMRec's item graphs")
    parser.add_argument("--epochs", type=int, default=0, help="then train both sides this many epochs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from recbole.data.interaction import Interaction

    from recbole_robust.data.graphs import csr_transpose
    from recbole_robust.quick_start import build_model, load_data, make_config
    from recbole_robust.registry import get_trainer

    checkpoints = tempfile.mkdtemp(prefix="same_weights-")  # ours saves its best epoch there (--epochs)
    atexit.register(shutil.rmtree, checkpoints, True)
    config = make_config(args.model, "tiktok", preset="mg", config_dict={
        "data_path": args.data_path, "valid_metric": "recall@20", "seed": SEED, "epochs": max(args.epochs, 1),
        "stopping_step": 1000, "show_progress": False, "checkpoint_dir": checkpoints})
    _, train_data, valid_data, test_data = load_data(config)
    ours = build_model(config, train_data)

    os.chdir(args.reference / "src")  # MMRec reads its configs and '../data/' from there
    sys.path.insert(0, str(args.reference / "src"))
    from utils.configurator import Config
    from utils.dataloader import EvalDataLoader, TrainDataLoader
    from utils.dataset import RecDataset
    from utils.utils import get_model, get_trainer as get_mmrec_trainer, init_seed

    mconfig = Config(args.model, "tiktok", {"gpu_id": 0, "use_gpu": False}, False)
    for key in mconfig["hyper_parameters"]:  # the first value of each grid, as mmrec_setup.py cuts them
        if isinstance(mconfig[key], list):
            mconfig[key] = mconfig[key][0]
    mconfig["seed"], mconfig["epochs"], mconfig["stopping_step"] = SEED, max(args.epochs, 1), 1000
    dataset = RecDataset(mconfig)
    str(dataset)  # MMRec's __str__ sets the counts its loaders read
    splits = dataset.split()
    for split in splits:
        str(split)
    mtrain = TrainDataLoader(mconfig, splits[0], batch_size=mconfig["train_batch_size"], shuffle=True)
    mvalid, mtest = (EvalDataLoader(mconfig, split, additional_dataset=splits[0], batch_size=mconfig["eval_batch_size"])
                     for split in splits[1:])
    init_seed(SEED)
    mtrain.pretrain_setup()
    ref = get_model(args.model)(mconfig, mtrain)

    # RecBole's ids -> MMRec's: the tokens are MMRec's ids
    data = train_data._dataset
    users = torch.tensor([int(t) for t in data.field2id_token[data.uid_field][1:]])
    items = torch.tensor([int(t) for t in data.field2id_token[data.iid_field][1:]])
    assert (len(users), len(items)) == (ref.n_users, ref.n_items), "not the same users and items"
    ours_user = torch.zeros(ref.n_users, dtype=torch.long).index_put_((users,), torch.arange(1, len(users) + 1))
    ours_item = torch.zeros(ref.n_items, dtype=torch.long).index_put_((items,), torch.arange(1, len(items) + 1))
    mmrec_rows = {"user": users, "item": items}

    pairs = parameter_pairs(args.model, ours, ref)
    names = {id(p): name for name, p in ours.named_parameters()}
    assert sum(p.numel() for p, _, _ in pairs) == sum(p.numel() for p in ours.parameters()), "a parameter unpaired"
    with torch.no_grad():
        for a, b, rows in pairs:
            (a[1:] if rows else a).copy_(b[mmrec_rows[rows]] if rows else b)

    print(f"{args.model}: MMRec's initial weights (seed {SEED}) copied into ours")
    for name, graph in reference_graphs(args.model, ref).items():
        mine = getattr(ours, f"item_graph_{name}").to_dense()[ours_item][:, ours_item]
        difference = (mine - graph.to_dense()).abs()
        rows = int((difference.max(1).values > 1e-5).sum())
        print(f"item graph {name}: largest difference {difference.max():.3g}, {rows} of {len(mine)} rows differ "
              "(ties of the k-th neighbour, broken otherwise)")

    def compare(title):
        ours.eval(), ref.eval()
        with torch.no_grad():
            (ou, oi), (ru, ri) = ours.forward(), ref.forward(ref.norm_adj)
        scale = max(ru.abs().max(), ri.abs().max())
        difference = max((ou[1:] - ru[users]).abs().max(), (oi[1:] - ri[items]).abs().max())
        print(f"{title}: final embeddings, largest difference {difference:.3g} (largest value {scale:.3g})")
        ours.train(), ref.train()
        ours.zero_grad(), ref.zero_grad()
        user, pos, neg = batch
        interaction = Interaction({ours.USER_ID: ours_user[user], ours.ITEM_ID: ours_item[pos],
                                   ours.NEG_ITEM_ID: ours_item[neg]})
        loss, ref_loss = ours.calculate_loss(interaction), ref.calculate_loss(batch)
        loss.backward(), ref_loss.backward()
        worst, where = 0.0, None
        for a, b, rows in pairs:
            ga, gb = (a.grad[1:], b.grad[mmrec_rows[rows]]) if rows else (a.grad, b.grad)
            difference = float((ga - gb).norm() / gb.norm().clamp_min(1e-30))
            if difference > worst:
                worst, where = difference, names[id(a)]
        print(f"{title}: one batch's loss {loss.item():.8f} (MMRec {ref_loss.item():.8f}); largest relative "
              f"difference of a parameter's gradient {worst:.3g} ({where})")

    batch = next(iter(mtrain))
    mtrain.pr = 0  # MMRec's loader restarts an epoch only at its end: its first epoch keeps every batch
    compare("own graphs")
    ours_trainer = get_trainer(config["MODEL_TYPE"], args.model)(config, ours)
    mmrec_trainer = get_mmrec_trainer()(mconfig, ref, False)
    ours.zero_grad(), ref.zero_grad()
    mine = ours_trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    theirs = mmrec_trainer.evaluate(mvalid)
    print("validation of the same weights, each side's evaluator: "
          + ", ".join(f"{k} {mine[k]:.4f} / {theirs[k]:.4f}" for k in ("recall@20", "ndcg@20")))
    if args.same_graphs:
        for name, graph in reference_graphs(args.model, ref).items():
            graph = graph.coalesce()
            index = graph.indices()
            mapped = torch.sparse_coo_tensor(torch.stack([ours_item[index[0]], ours_item[index[1]]]), graph.values(),
                                             (ours.n_items, ours.n_items)).coalesce().to_sparse_csr()
            setattr(ours, f"item_graph_{name}", mapped)
            setattr(ours, f"item_graph_t_{name}", csr_transpose(mapped))
        compare("MMRec's graphs")
    if args.epochs:
        ours.zero_grad(), ref.zero_grad()
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        logging.getLogger().setLevel(logging.INFO)
        print(f"\n--- ours, {args.epochs} epochs ---", flush=True)
        _, best = ours_trainer.fit(train_data, valid_data, show_progress=False)
        ours_test = ours_trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        print(f"\n--- MMRec, {args.epochs} epochs ---", flush=True)
        mmrec_trainer = get_mmrec_trainer()(mconfig, ref, False)
        _, mmrec_best, mmrec_test = mmrec_trainer.fit(mtrain, valid_data=mvalid, test_data=mtest, saved=False)
        print(f"\nbest validation Recall@20: ours {best['recall@20']:.4f}, MMRec {mmrec_best['recall@20']:.4f}")
        print("test at the best epoch: " + ", ".join(f"{k} ours {ours_test[k]:.4f} / MMRec {mmrec_test[k]:.4f}"
                                                    for k in ("recall@20", "ndcg@20")))


if __name__ == "__main__":
    main()
