"""Dataset builders on the real shared data: counts and splits equal ../shared/datasets/README.md."""
import json
import os

import numpy as np
import pandas as pd
import pytest
from recbole.config import Config
from recbole.data import create_dataset

from recbole_robust.data.prepare import build_dataset, data_roots, find_source
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.resources import dataset_config


def build(name, roots, build_dir):
    conf = dataset_config(name)["build"]
    source, files = find_source(name, conf, roots)
    return build_dataset(name, conf, source, files, build_dir)


def load(name, shared, build_dir, model="BPR"):
    config = Config(model=model, dataset=name, config_dict={"data_path": str(shared), "build_dir": build_dir})
    return config, create_dataset(config)


def test_tiktok_split_and_features(shared, build_dir):
    folder, info = build("tiktok", [str(shared)], build_dir)
    assert info["counts"] == {"train": 59541, "valid": 3051, "test": 6130}
    assert info["feature_rows"] == 6710 and info["feature_path"] == str(shared / "tiktok")
    config, dataset = load("tiktok", shared, build_dir, model="VBPR")
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (9308, 6710, 68722)
    train, valid, test = dataset.build()
    assert (train.inter_num, valid.inter_num, test.inter_num) == (59541, 3051, 6130)
    # features aligned by token: RecBole item id k holds row int(token_k) of the file
    image = np.load(shared / "tiktok" / "image_feat.npy").astype(np.float32)
    tokens = dataset.field2id_token["item_id"]
    for k in (1, 77, 6710):
        assert np.array_equal(dataset.item_features["image"][k].numpy(), image[int(tokens[k])])
    assert dataset.item_features.dims() == {"image": 128, "audio": 128}


def test_amazon_lattice_layout(shared, build_dir):
    _, info = build("amazon", [str(shared)], build_dir)
    assert info["counts"] == {"train": 119674, "valid": 20559, "test": 20559}
    assert info["feature_rows"] == 7050
    _, dataset = load("amazon", shared, build_dir)
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (19445, 7050, 160792)


def test_amazon_mmrec_layout(tmp_path, build_dir):
    src = tmp_path / "amazon"
    src.mkdir()
    rows = ["userID\titemID\trating\ttimestamp\tx_label"] + [
        f"{u}\t{i}\t5\t{1000 + u}\t{label}" for u, i, label in [(0, 0, 0), (0, 1, 0), (1, 2, 0), (1, 0, 1), (0, 2, 2)]
    ]
    (src / "baby.inter").write_text("\r\n".join(rows) + "\r\n")
    folder, info = build("amazon", [str(tmp_path)], str(tmp_path / "built"))
    assert info["counts"] == {"train": 3, "valid": 1, "test": 1}
    assert info["feature_rows"] == 3
    head = open(os.path.join(folder, "amazon.train.inter")).readline().rstrip("\n").split("\t")
    assert head == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


def test_filmtrust_and_ciaodvd(shared, build_dir):
    # README: 35,497 ratings with 3 repeated pairs; 72,665 ratings with 320 repeated pairs
    _, info = build("filmtrust", [str(shared)], build_dir)
    assert (info["raw_rows"], info["repeats_merged"], info["counts"]) == (35497, 3, {"inter": 35494})
    _, info = build("ciaodvd", [str(shared)], build_dir)
    assert (info["raw_rows"], info["repeats_merged"], info["counts"]) == (72665, 320, {"inter": 72345})

    # binarisation by the dataset configs (ACAE section 4.1.1), checked against pandas on the raw files
    raw = pd.read_csv(shared / "filmtrust" / "ratings.txt", sep=" ", header=None, names=["u", "i", "r"])
    expected = raw.drop_duplicates(["u", "i"], keep="first").query("r > 2")
    _, dataset = load("filmtrust", shared, build_dir)
    assert dataset.inter_num == len(expected)

    raw = pd.read_csv(shared / "ciaodvd" / "movie-ratings.txt", header=None, names=["u", "i", "g", "v", "r", "d"])
    earliest = raw.sort_values("d", kind="stable").drop_duplicates(["u", "i"], keep="first")
    _, dataset = load("ciaodvd", shared, build_dir)
    assert dataset.inter_num == int((earliest["r"] > 3).sum())


def test_repeats_merged_to_earliest_timestamp(tmp_path):
    src = tmp_path / "ciaodvd"
    src.mkdir()
    (src / "movie-ratings.txt").write_text(
        "1,5,1,1,2,2005-01-02\n1,5,1,2,4,2004-06-01\n1,5,1,3,5,2004-06-01\n2,5,1,4,3,2001-01-01"
    )
    folder, info = build("ciaodvd", [str(tmp_path)], str(tmp_path / "b"))
    out = pd.read_csv(os.path.join(folder, "ciaodvd.inter"), sep="\t")
    assert info["repeats_merged"] == 2
    assert out["rating:float"].tolist() == [4.0, 3.0]  # earliest date, first of the tie


def test_ml100k_features(build_dir):
    folder, info = build("ml-100k", [], build_dir)
    assert info["counts"] == {"inter": 100000}
    tokens = open(os.path.join(folder, "item_tokens.txt")).read().split()
    text = np.load(os.path.join(folder, "text_feat.npy"))
    genre = np.load(os.path.join(folder, "genre_feat.npy"))
    assert len(tokens) == 1682 and text.shape == (1682, 64) and genre.shape == (1682, 20)
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    # item 1 is Toy Story: Animation, Children's, Comedy
    row = tokens.index("1")
    assert genre[row, :3].tolist() == [0.0, 0.0, 1.0] and genre[row, 3:5].tolist() == [1.0, 1.0]


def test_ml1m_binarised(tmp_path):
    src = tmp_path / "ml-1m"
    src.mkdir()
    (src / "ratings.dat").write_text("1::10::5::978300760\n1::11::3::978302109\n2::10::4::978301968\n2::12::1::9783\n")
    config = Config(model="BPR", dataset="ml-1m", config_dict={"data_path": str(tmp_path), "build_dir": str(tmp_path / "b")})
    dataset = create_dataset(config)
    assert dataset.inter_num == 2  # ratings > 3 kept


def test_build_is_cached_and_redone_when_the_source_changes(tmp_path):
    src = tmp_path / "filmtrust"
    src.mkdir()
    (src / "ratings.txt").write_text("1 1 2\n1 2 4\n")
    out = str(tmp_path / "built")
    folder, _ = build("filmtrust", [str(tmp_path)], out)
    stamp = os.stat(os.path.join(folder, "build.json")).st_mtime_ns
    build("filmtrust", [str(tmp_path)], out)
    assert os.stat(os.path.join(folder, "build.json")).st_mtime_ns == stamp
    (src / "ratings.txt").write_text("1 1 2\n1 2 4\n2 2 3\n")
    _, info = build("filmtrust", [str(tmp_path)], out)
    assert info["counts"] == {"inter": 3}
    assert sorted(n for n in os.listdir(out) if not n.endswith(".lock")) == ["filmtrust"]  # no temporaries


def test_failed_build_leaves_nothing(tmp_path):
    src = tmp_path / "tiktok"
    src.mkdir()
    (src / "tiktok.inter").write_text("userID\titemID\tx_label\n0\t1\t7\n")
    out = tmp_path / "built"
    with pytest.raises(RecBoleRobustError, match="x_label must be 0/1/2"):
        build("tiktok", [str(tmp_path)], str(out))
    assert not out.exists()  # no partial build, no lock, not even the folder it made
    (out / "other").mkdir(parents=True)
    with pytest.raises(RecBoleRobustError, match="x_label must be 0/1/2"):
        build("tiktok", [str(tmp_path)], str(out))
    assert [p.name for p in out.iterdir()] == ["other"]  # what was there before stays


def test_missing_dataset_lists_searched_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOLE_ROBUST_DATA", str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    roots = data_roots(str(tmp_path / "explicit"))
    assert roots == [str(tmp_path / "explicit"), str(tmp_path / "env"), str(tmp_path / "dataset")]
    with pytest.raises(RecBoleRobustError) as info:
        build("tiktok", roots, str(tmp_path / "b"))
    message = str(info.value)
    assert "dataset 'tiktok' not found" in message and "tiktok.inter" in message
    assert all(os.path.join(r, "tiktok") in message for r in roots)


def test_build_info_is_plain_json(shared, build_dir):
    folder, _ = build("tiktok", [str(shared)], build_dir)
    with open(os.path.join(folder, "build.json")) as f:
        info = json.load(f)
    assert info["fingerprint"]["builder_version"] >= 1
