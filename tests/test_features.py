"""Item content features: alignment by token and validation of bad files."""
import numpy as np
import pytest
import torch

from recbole_robust.data.features import ItemFeatureStore, load_feature_file
from recbole_robust.errors import RecBoleRobustError

# RecBole's field2id_token for items: index 0 is padding, then tokens in RecBole's remapped order.
ITEM_TOKENS = np.array(["[PAD]", "30", "10", "20"])


def write(tmp_path, name, array):
    np.save(tmp_path / name, array)
    return name


def test_alignment_by_token_file_with_shuffled_rows(tmp_path):
    tokens = ["20", "40", "10", "30"]  # file rows in an order unrelated to RecBole's ids
    matrix = np.array([[float(t), -float(t)] for t in tokens], dtype=np.float16)
    write(tmp_path, "img.npy", matrix)
    (tmp_path / "tokens.txt").write_text("\n".join(tokens) + "\n")
    store = ItemFeatureStore.from_files(tmp_path, {"image": "img.npy"}, ITEM_TOKENS, feature_tokens="tokens.txt")
    feats = store["image"]
    assert feats.dtype == torch.float32
    assert feats[0].abs().sum() == 0  # padding row
    assert feats[1:, 0].tolist() == [30.0, 10.0, 20.0]  # row k holds RecBole item id k's token
    assert feats[1:, 1].tolist() == [-30.0, -10.0, -20.0]


def test_alignment_row_equals_token_convention(tmp_path):
    matrix = np.arange(40 * 3, dtype=np.float64).reshape(40, 3)
    write(tmp_path, "a.npy", matrix)
    store = ItemFeatureStore.from_files(tmp_path, {"audio": "a.npy"}, ITEM_TOKENS, expected_rows=40)
    assert store["audio"][1].tolist() == matrix[30].tolist()
    assert store["audio"][2].tolist() == matrix[10].tolist()
    assert store.dims() == {"audio": 3}


def test_concat_and_unknown_modality(tmp_path):
    write(tmp_path, "a.npy", np.ones((40, 2)))
    write(tmp_path, "b.npy", np.zeros((40, 5)))
    store = ItemFeatureStore.from_files(tmp_path, {"a": "a.npy", "b": "b.npy"}, ITEM_TOKENS)
    assert store.concat().shape == (4, 7)
    assert store.concat(["b"]).shape == (4, 5)
    with pytest.raises(RecBoleRobustError, match="unknown modality 'c'"):
        store.concat(["c"])


@pytest.mark.parametrize(
    "array, message",
    [
        (np.ones(40), r"shape \(40,\), expected 2-D"),
        (np.ones((40, 2, 2)), "expected 2-D"),
        (np.array([["a", "b"]] * 40), "dtype <U1"),
        (np.array([[np.nan, 1.0]] + [[0.0, 1.0]] * 39), "NaN or Inf values in 1 rows"),
        (np.array([[0.0, 1.0]] * 39 + [[np.inf, 1.0]]), r"first: row 39"),
    ],
)
def test_bad_feature_files_raise_one_line(tmp_path, array, message):
    write(tmp_path, "bad.npy", array)
    with pytest.raises(RecBoleRobustError, match=message) as info:
        load_feature_file(str(tmp_path / "bad.npy"))
    assert "bad.npy" in str(info.value) and "\n" not in str(info.value)


def test_object_array_is_rejected(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[1, "x"]], dtype=object), allow_pickle=True)
    with pytest.raises(RecBoleRobustError, match="not a numeric .npy array"):
        load_feature_file(str(tmp_path / "obj.npy"))


def test_missing_file(tmp_path):
    with pytest.raises(RecBoleRobustError, match="not found"):
        load_feature_file(str(tmp_path / "nope.npy"))


def test_row_count_mismatch(tmp_path):
    write(tmp_path, "a.npy", np.ones((39, 2)))
    with pytest.raises(RecBoleRobustError, match="has 39 rows but the dataset has 40 items"):
        ItemFeatureStore.from_files(tmp_path, {"a": "a.npy"}, ITEM_TOKENS, expected_rows=40)
    with pytest.raises(RecBoleRobustError, match="item '30' needs row 30"):
        write(tmp_path, "b.npy", np.ones((25, 2)))
        ItemFeatureStore.from_files(tmp_path, {"b": "b.npy"}, ITEM_TOKENS)


def test_token_file_mismatch(tmp_path):
    write(tmp_path, "a.npy", np.ones((3, 2)))
    (tmp_path / "tokens.txt").write_text("10\n20\n")
    with pytest.raises(RecBoleRobustError, match="names 2 items but the feature files have 3 rows"):
        ItemFeatureStore.from_files(tmp_path, {"a": "a.npy"}, ITEM_TOKENS, feature_tokens="tokens.txt")
    (tmp_path / "tokens.txt").write_text("10\n20\n99\n")
    with pytest.raises(RecBoleRobustError, match="no row for 1 of 3 items .e.g. item '30'"):
        ItemFeatureStore.from_files(tmp_path, {"a": "a.npy"}, ITEM_TOKENS, feature_tokens="tokens.txt")
