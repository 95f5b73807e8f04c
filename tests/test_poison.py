"""Training data under attack (data/poison.py): fake users, noisy and thinned feedback, detectors, the poisoning and
slices analyses, and the report's poisoning grid."""
import glob
import hashlib
import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recbole_robust.data import poison
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import load_data, make_config, run_recbole_robust, validate_run


def tree_digest(folder):
    """sha256 of every file under ``folder`` (paths and bytes)."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(path.encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def poisoned(fast, model="BPR", dataset="tiktok", **settings):
    config = make_config(model, dataset, config_dict={**fast, **settings})
    _, train, _, test = load_data(config)
    return config, train.dataset, test.dataset


@pytest.mark.parametrize("attack", poison.ATTACKS)
def test_each_attack_writes_the_requested_fake_users(fast, small_data, attack):
    before = tree_digest(small_data)
    config, train, test = poisoned(fast, poison=attack, poison_users=12, poison_filler=7, poison_targets=3,
                                   poison_steps=3)
    info = train.poisoning
    assert len(info.fake_users) == 12 and info.filler == 7 and len(info.targets) == 3
    users = train.inter_feat[train.uid_field].numpy()
    items = train.inter_feat[train.iid_field].numpy()
    for fake in info.fake_users:  # exactly the targets plus 7 other items, no repeats
        profile = items[users == fake]
        assert len(profile) == 10 == len(set(profile.tolist()))
        assert set(info.targets.tolist()) <= set(profile.tolist())
    assert not np.isin(test.inter_feat[test.uid_field].numpy(), info.fake_users).any()  # test: real users only
    tokens = train.field2id_token[train.uid_field][info.fake_users]
    assert all(t.startswith(poison.FAKE_PREFIX) for t in tokens)
    # the atomic-file build of the fake users, and the source data untouched
    frame = pd.read_csv(os.path.join(info.folder, "tiktok.fake.inter"), sep="\t", dtype=str)
    assert list(frame.columns[:2]) == ["user_id:token", "item_id:token"] and frame["user_id:token"].nunique() == 12
    assert len(frame) == 12 * 10
    assert tree_digest(small_data) == before
    assert not os.path.commonpath([info.folder, str(small_data)]) == str(small_data)


def test_fake_users_are_cached_and_reproducible(fast):
    _, first, _ = poisoned(fast, poison="segment", poison_users=0.05, poison_targets=2)
    folder = first.poisoning.folder
    stamp = os.stat(os.path.join(folder, "tiktok.fake.inter")).st_mtime_ns
    _, second, _ = poisoned(fast, poison="segment", poison_users=0.05, poison_targets=2)
    assert second.poisoning.folder == folder and second.poisoning.seconds == 0.0  # read back, not regenerated
    assert os.stat(os.path.join(folder, "tiktok.fake.inter")).st_mtime_ns == stamp
    for name in (first.uid_field, first.iid_field):
        assert np.array_equal(first.inter_feat[name].numpy(), second.inter_feat[name].numpy())
    _, other, _ = poisoned(fast, poison="segment", poison_users=0.05, poison_targets=2, poison_seed=7)
    assert other.poisoning.folder != folder  # another seed: other targets and profiles, another build


def test_bandwagon_and_selected_items(fast):
    _, train, _ = poisoned(fast, poison="bandwagon", poison_users=5, poison_filler=10, poison_selected=4)
    info = train.poisoning
    real = sp.csr_matrix(train.inter_matrix(form="csr"))[:info.real_users]
    popular = np.argsort(-np.asarray(real.sum(0)).ravel(), kind="stable")
    popular = popular[~np.isin(popular, info.targets)][:4]
    users, items = (train.inter_feat[f].numpy() for f in (train.uid_field, train.iid_field))
    for fake in info.fake_users:
        assert set(popular.tolist()) <= set(items[users == fake].tolist())


def test_targets_are_the_same_with_and_without_an_attack(fast):
    _, clean, _ = poisoned(fast, analysis="poisoning", poison_targets=4)
    _, attacked, _ = poisoned(fast, poison="random", poison_targets=4)
    assert np.array_equal(clean.poisoning.targets, attacked.poisoning.targets)
    assert len(clean.poisoning.fake_users) == 0
    popularity = np.asarray(clean.inter_matrix(form="csr").sum(0)).ravel()
    trained = popularity[1:][popularity[1:] > 0]
    assert (popularity[clean.poisoning.targets] <= np.median(trained)).all()  # unpopular pool


def test_targets_by_token_and_file(fast, tmp_path):
    _, train, _ = poisoned(fast, poison="random", poison_targets=["5", "17"])
    assert sorted(train.poisoning.target_tokens) == ["17", "5"]
    path = tmp_path / "targets.txt"
    path.write_text("5\n17\n")
    _, from_file, _ = poisoned(fast, poison="random", poison_targets=str(path))
    assert np.array_equal(from_file.poisoning.targets, train.poisoning.targets)


def test_noise_and_drop_change_the_training_split_only(fast):
    _, clean, clean_test = poisoned(fast, analysis="poisoning")
    _, flipped, test = poisoned(fast, feedback_noise=0.2)
    n = len(clean.inter_feat)
    assert flipped.poisoning.changes["flipped"] == round(0.2 * n) and len(flipped.inter_feat) == n
    pairs = set(zip(*(clean.inter_feat[f].numpy() for f in (clean.uid_field, clean.iid_field))))
    new = set(zip(*(flipped.inter_feat[f].numpy() for f in (flipped.uid_field, flipped.iid_field))))
    assert len(new - pairs) == round(0.2 * n)  # each flipped interaction is an item the user never had
    assert np.array_equal(test.inter_feat[test.iid_field].numpy(), clean_test.inter_feat[clean_test.iid_field].numpy())
    _, added, _ = poisoned(fast, feedback_noise=0.1, feedback_noise_mode="add")
    assert len(added.inter_feat) == n + round(0.1 * n)
    _, thinned, _ = poisoned(fast, feedback_drop=0.5)
    before = np.bincount(clean.inter_feat[clean.uid_field].numpy())
    after = np.bincount(thinned.inter_feat[thinned.uid_field].numpy(), minlength=len(before))
    has = before > 0
    assert (after[has] >= 1).all() and np.array_equal(after[has], before[has] - np.minimum(
        np.floor(0.5 * before[has]).astype(int), before[has] - 1))


def synthetic_attack(n_real=300, n_items=200, n_fake=15, seed=0):
    """Real users with profiles of 5 to 40 items drawn by a Zipf-like popularity; fake users who all rate the same 3
    targets plus random filler of an average profile's size (a random attack)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items) ** 0.8
    weights /= weights.sum()
    rows, cols = [], []
    for u in range(1, n_real + 1):
        liked = 1 + rng.choice(n_items - 1, int(rng.integers(5, 41)), replace=False, p=weights)
        rows += [u] * len(liked)
        cols += liked.tolist()
    targets = np.array([150, 170, 190])
    filler = int(round(len(rows) / n_real)) - 3
    for f in range(n_fake):
        items = np.concatenate([targets, rng.choice(np.setdiff1d(np.arange(1, n_items), targets), filler, replace=False)])
        rows += [n_real + 1 + f] * len(items)
        cols += items.tolist()
    csr = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_real + 1 + n_fake, n_items))
    return csr, np.arange(n_real + 1, n_real + 1 + n_fake)


@pytest.mark.parametrize("detector", poison.DETECTORS)
def test_detectors_find_the_injected_users(detector):
    """15 fake users among 315: chance would find 5% of them; each detector finds over half (three draws)."""
    precision = []
    for seed in range(3):
        csr, fakes = synthetic_attack(seed=seed)
        found = poison.detect(detector, csr, len(fakes))
        assert len(found) == len(fakes) and len(set(found.tolist())) == len(fakes)
        precision.append(np.isin(found, fakes).mean())
    assert np.mean(precision) >= 0.5


def test_detector_defence_removes_users_and_scores_itself(fast):
    _, train, _ = poisoned(fast, poison="random", poison_users=15, poison_detector="pca")
    info = train.poisoning
    precision, recall = info.detection()
    assert len(info.removed) == 15 and 0 <= precision <= 1 and recall == precision
    assert not np.isin(train.inter_feat[train.uid_field].numpy(), info.removed).any()


def test_pga_raises_its_surrogate_utility():
    import torch

    csr, _ = synthetic_attack(n_fake=0)
    targets = np.array([150, 170, 190])
    profiles = poison.pga_profiles(csr, targets, 8, 6, 20, np.random.default_rng(0))
    assert all(len(p) == 9 and set(targets) <= set(p.tolist()) for p in profiles)
    start = poison.heuristic_profiles("random", csr, targets, 8, 6, 0, np.random.default_rng(0))
    surrogate = poison.Surrogate(csr, targets, 0)
    with torch.no_grad():
        gained = surrogate.utility(poison.profile_matrix(profiles, csr.shape[1]))
        before = surrogate.utility(poison.profile_matrix(start, csr.shape[1]))
    assert gained > before  # the ascent, projected on the budget, beats its random start


@pytest.mark.parametrize("attack, gain", [("average", 0.08), ("bandwagon", 0.05)])
def test_an_attack_raises_the_targets_hit_ratio(fast, attack, gain):
    """On 300 users and 200 items, hit ratio@50 (a quarter of the items) of 3 unpopular targets; 10% fake users."""
    common = {**fast, "epochs": 25, "eval_step": 25, "learning_rate": 0.01, "poison_targets": 3, "poison_topk": [50],
              "analysis": "poisoning", "valid_metric": "recall@10", "topk": [10], "metrics": ["recall", "ndcg"]}
    clean = run_recbole_robust("BPR", "tiktok", config_dict=common, saved=False)["analyses"]["poisoning"]
    attacked = run_recbole_robust("BPR", "tiktok", config_dict={**common, "poison": attack, "poison_users": 0.1},
                                  saved=False)["analyses"]["poisoning"]
    assert clean.data["targets"] == attacked.data["targets"]
    assert attacked.records[0]["fake_users"] == 30
    assert attacked.records[0]["hit@50"] > clean.records[0]["hit@50"] + gain
    assert attacked.records[0]["mean_rank"] < clean.records[0]["mean_rank"]


@pytest.mark.parametrize("settings, message", [
    ({"poison": "shilling"}, "poison must be one of random"),
    ({"poison": "random", "poison_users": 0}, "poison_users must be a count"),
    ({"poison": "random", "poison_users": 1.5}, "poison_users must be a count"),
    ({"poison": "random", "poison_filler": -2}, "poison_filler must be"),
    ({"poison": "random", "poison_targets": "no/such/file.txt"}, "poison_targets no/such/file.txt: no such file"),
    ({"poison": "random", "poison_targets": ["not-an-item"]}, "'not-an-item' is not an item"),
    ({"poison": "random", "poison_targets": 10_000}, "more than the"),
    ({"poison": "random", "poison_detector": "svm"}, "poison_detector must be one of"),
    ({"poison_detector": "pca"}, "poison_detector without poison needs poison_detect_users"),
    ({"feedback_noise": 1.0}, "feedback_noise must be"),
    ({"feedback_drop": -0.1}, "feedback_drop must be"),
    ({"feedback_noise_mode": "swap", "feedback_noise": 0.1}, "feedback_noise_mode must be flip or add"),
])
def test_bad_poisoning_options_are_one_line_errors_with_nothing_written(fast, settings, message, tmp_path):
    build = tmp_path / "fresh_build"
    with pytest.raises(RecBoleRobustError, match=message) as error:
        validate_run("BPR", "tiktok", config_dict={**fast, "build_dir": str(build), **settings})
    assert "\n" not in str(error.value)
    assert not build.exists()  # neither the dataset build nor fake users stay behind


def test_poisoning_with_heldout_users_is_refused(fast):
    with pytest.raises(RecBoleRobustError, match="heldout_users"):
        validate_run("MultiVAE", "tiktok", config_dict={**fast, "poison": "random", "heldout_users": 0.2})


def test_slices_partition_the_test_users(fast):
    result = run_recbole_robust("BPR", "tiktok", config_dict={**fast, "analysis": "slices", "slice_groups": 3},
                                saved=False)["analyses"]["slices"]
    users = [r for r in result.records if r["slice"] == "users by activity"]
    items = [r for r in result.records if r["slice"] == "items by popularity"]
    assert len(users) == 3 and len(items) >= 3
    assert sum(r["count"] for r in users) == 300  # every test user in one group
    assert all(0 <= r[f"recall@{result.data['k']}"] <= 1 for r in result.records if r["count"])


def test_poison_grid_labels_and_settings():
    from recbole_robust.pipelines import parse_variants, poison_grid

    grid = poison_grid(parse_variants(["BPR", "LightGCN"]), ["bandwagon"], [0.01, 5], ["none", "pca", "mg"])
    labels = [label for label, _, _ in grid]
    assert labels[:4] == ["BPR", "BPR@bandwagon-1%", "BPR@bandwagon-5users", "BPR+pca@bandwagon-1%"]
    assert "BPR+pca" not in labels and "LightGCN+MG@bandwagon-5users" in labels
    settings = dict((label, s) for label, _, s in grid)
    assert settings["BPR+pca@bandwagon-1%"]["poison_detector"] == "pca"
    assert settings["BPR"]["analysis"] == ["poisoning"] and "poison" not in settings["BPR"]
    apr = poison_grid(parse_variants(["BPR"]), ["random"], [0.01], ["adv"])
    assert [(label, model) for label, model, _ in apr] == [("APR", "APR"), ("APR@random-1%", "APR")]
    with pytest.raises(RecBoleRobustError, match="no adversarially trained counterpart"):
        poison_grid(parse_variants(["LightGCN"]), ["random"], [0.01], ["adv"])
    with pytest.raises(RecBoleRobustError, match="unknown attack"):
        poison_grid(parse_variants(["BPR"]), ["shilling"], [0.01], ["none"])


def test_report_of_a_poisoning_grid(fast, tmp_path):
    from recbole_robust.pipelines import parse_variants, poison_grid, train_and_report

    variants = poison_grid(parse_variants(["BPR"]), ["bandwagon"], [0.1], ["none", "stats"])
    results, paths, _ = train_and_report(variants, "tiktok", seeds=[1, 2], config_dict={**fast, "poison_targets": 3},
                                         out_dir=str(tmp_path / "report"))
    assert list(results) == ["BPR", "BPR@bandwagon-10%", "BPR+stats@bandwagon-10%"]
    table = pd.read_csv(tmp_path / "report" / "poisoning.csv")
    assert list(table["model"]) == list(results) and (table["n"] == 2).all()
    assert np.isnan(table["shift_mean"][0]) and not np.isnan(table["shift_mean"][1])
    assert 0 <= table["precision"][2] <= 1
    page = open(paths["md"]).read()
    assert "Poisoning: fake users promoting target items" in page and "poisoning.png" in page
    settings = pd.read_csv(tmp_path / "report" / "settings.csv").set_index("setting")["value"]
    assert "3 targets drawn per seed from the unpopular pool" in settings["poisoning"]


@pytest.mark.parametrize("args, message", [
    (["--poisons", "shilling"], "unknown attack 'shilling'"),
    (["--poisons", "random", "--budgets", "1.5"], "--budgets: 1.5 is not a count"),
    (["--poisons", "random", "--defences", "adv"], "LightGCN has no adversarially trained counterpart"),
    (["--defences", "pca"], "a detector has nothing to find"),
    (["--poisons", "random", "--budgets", "lots"], "'lots' is not a count or a share"),
    (["--poisons", "random", "--set", "poison_targets=0"], "poison_targets must be"),
])
def test_bad_grid_options_from_the_command_line(tmp_path, monkeypatch, capsys, args, message):
    import recbole_robust_cli as cli

    monkeypatch.chdir(tmp_path)
    code = cli.main(["report", "--dataset=ml-100k", "--models", "LightGCN", "--seeds", "1", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert os.listdir(tmp_path) == []  # nothing written
