"""Dense item content features (image, text, audio, ...) aligned to RecBole's item ids.

A dataset config names one ``.npy`` file per modality (``feature_files: {image: image_feat.npy}``).
Rows are matched to RecBole's remapped item ids **by item token**
(``dataset.field2id_token[item_field]``), never by row order: either row ``i`` holds item token
``str(i)`` (the MMRec convention), or a token file (``feature_tokens``) names the token of each row.
Internal id 0 is RecBole's padding and gets a zero row.

Every file is validated on load: present, numeric, 2-D, one row per item, finite; values are cast to
float32. A bad file raises ``RecBoleRobustError`` naming the file and the problem.
"""
import os

import numpy as np
import torch

from recbole_robust.errors import RecBoleRobustError


def check_npy_header(path):
    """The ``.npy`` header's shape and dtype must account for the file's bytes, so that a header claiming
    terabytes is refused before anything is allocated; a matrix without columns is refused too."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                return  # a newer format: np.load reads and checks it
            shape, _, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, EOFError, OSError, SyntaxError):
        return  # not an .npy file at all: np.load says so
    if dtype.hasobject:
        return  # pickled objects: np.load refuses them (allow_pickle=False)
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = os.path.getsize(path) - offset
    if expected != held:
        raise RecBoleRobustError(f"feature file {path}: its header says shape {shape} of {dtype} ({expected} bytes), "
                                 f"the file holds {held} bytes of data")
    if len(shape) == 2 and shape[1] == 0:
        raise RecBoleRobustError(f"feature file {path} has shape {shape}: no feature columns")


def load_feature_file(path):
    """Load one ``.npy`` feature matrix as float32, validating shape, dtype and values."""
    if not os.path.isfile(path):
        raise RecBoleRobustError(f"feature file {path} not found")
    check_npy_header(path)
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:  # pickled, empty or not an .npy file
        raise RecBoleRobustError(f"feature file {path} is not a numeric .npy array ({e})") from e
    if not isinstance(matrix, np.ndarray) or matrix.dtype.kind not in "biuf":
        raise RecBoleRobustError(
            f"feature file {path} has dtype {getattr(matrix, 'dtype', type(matrix))}, expected a real number type"
        )
    if matrix.ndim != 2:
        raise RecBoleRobustError(f"feature file {path} has shape {matrix.shape}, expected 2-D (items x dimensions)")
    matrix = matrix.astype(np.float32)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise RecBoleRobustError(
            f"feature file {path} has NaN or Inf values in {len(bad)} rows (first: row {bad[0]})"
        )
    return matrix


def read_row_tokens(path, n_rows):
    """Tokens of a feature file's rows, one per line; must match the row count and be unique."""
    if not os.path.isfile(path):
        raise RecBoleRobustError(f"feature token file {path} not found")
    with open(path, encoding="utf-8") as f:
        tokens = [line.strip() for line in f if line.strip()]
    if len(tokens) != n_rows:
        raise RecBoleRobustError(
            f"feature token file {path} names {len(tokens)} items but the feature files have {n_rows} rows"
        )
    if len(set(tokens)) != len(tokens):
        raise RecBoleRobustError(f"feature token file {path} repeats item tokens")
    return tokens


def row_index(item_tokens, n_rows, path, row_tokens=None, expected_rows=None):
    """Feature row of each RecBole item id (``item_tokens[0]`` is padding and is skipped)."""
    items = [str(t) for t in item_tokens[1:]]
    if row_tokens is not None:
        position = {t: r for r, t in enumerate(row_tokens)}
        missing = [t for t in items if t not in position]
        if missing:
            raise RecBoleRobustError(
                f"feature file {path} has no row for {len(missing)} of {len(items)} items (e.g. item '{missing[0]}')"
            )
        return np.array([position[t] for t in items], dtype=np.int64)
    if expected_rows is not None and n_rows != expected_rows:
        raise RecBoleRobustError(
            f"feature file {path} has {n_rows} rows but the dataset has {expected_rows} items (row i = item i)"
        )
    try:
        rows = np.array([int(t) for t in items], dtype=np.int64)
    except ValueError:
        raise RecBoleRobustError(
            f"feature file {path}: item tokens are not row numbers; name a feature_tokens file"
        ) from None
    outside = (rows < 0) | (rows >= n_rows)
    if outside.any():
        raise RecBoleRobustError(
            f"feature file {path} has {n_rows} rows but item '{items[int(np.flatnonzero(outside)[0])]}' needs row "
            f"{rows[outside][0]}"
        )
    return rows


class ItemFeatureStore:
    """Item content features of one dataset, by modality name, as float32 tensors.

    ``store[name]`` is ``[n_items, dim]`` with row ``k`` = RecBole item id ``k`` (row 0 = padding, zero).
    Built once per dataset and shared by its train/valid/test copies.
    """

    def __init__(self, features):
        self._features = dict(features)

    @classmethod
    def from_files(cls, feature_path, feature_files, item_tokens, feature_tokens=None, expected_rows=None):
        features = {}
        row_tokens = None
        for modality, filename in feature_files.items():
            path = os.path.join(feature_path, filename)
            matrix = load_feature_file(path)
            if feature_tokens and row_tokens is None:
                row_tokens = read_row_tokens(os.path.join(feature_path, feature_tokens), matrix.shape[0])
            elif row_tokens is not None and len(row_tokens) != matrix.shape[0]:
                raise RecBoleRobustError(
                    f"feature file {path} has {matrix.shape[0]} rows but {feature_tokens} names {len(row_tokens)} items"
                )
            rows = row_index(item_tokens, matrix.shape[0], path, row_tokens, expected_rows)
            aligned = np.zeros((len(item_tokens), matrix.shape[1]), dtype=np.float32)
            aligned[1:] = matrix[rows]
            features[modality] = torch.from_numpy(aligned)
        return cls(features)

    @property
    def modalities(self):
        return list(self._features)

    def __getitem__(self, modality):
        if modality not in self._features:
            raise RecBoleRobustError(
                f"unknown modality '{modality}'; this dataset has {', '.join(self._features) or 'none'}"
            )
        return self._features[modality]

    def concat(self, modalities=None):
        """The selected modalities (default: all) concatenated along the feature dimension."""
        names = list(modalities) if modalities else self.modalities
        return torch.cat([self[m] for m in names], dim=1)

    def dims(self):
        return {m: int(f.shape[1]) for m, f in self._features.items()}
