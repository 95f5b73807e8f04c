"""Builders: turn public dataset formats into RecBole atomic files.

Each builder reads a source folder (never modifies it) and writes RecBole atomic files into an output
folder. It returns the build metadata that the data layer needs later:

* ``feature_path``: the folder the dataset config's ``feature_files`` are read from (``None``: the
  build folder itself);
* ``feature_rows``: how many feature rows a row-per-item feature file must have (``None`` if unknown);
* ``feature_tokens``: a file in ``feature_path`` naming the item token of each feature row, or ``None``
  when row ``i`` holds item token ``str(i)`` (the MMRec convention);
* ``counts``: interactions written per atomic file, for the log and the tests.

A builder is chosen by the ``build.builder`` key of ``dataset_configs/<name>.yaml``; ``LAYOUTS`` says
which files identify a source folder, so the data layer can search for one and say what it expected.
"""
import json
import os
import shutil

import numpy as np
import pandas as pd

from recbole_robust.errors import RecBoleRobustError

BUILDER_VERSION = 2
"""Bumped whenever a builder's output changes, so cached builds are redone."""

UID, IID = "user_id:token", "item_id:token"


def _write_atomic(frame, path):
    frame.to_csv(path, sep="\t", index=False, lineterminator="\n")
    return len(frame)


def _read_mmrec_inter(path):
    """MMRec ``.inter``: tab-separated, header ``userID itemID [rating timestamp] x_label``."""
    if os.path.getsize(path) == 0:
        raise RecBoleRobustError(f"{path} is empty")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.strip() for c in frame.columns]
    frame = frame.apply(lambda col: col.str.strip())
    if frame.empty:
        raise RecBoleRobustError(f"{path}: MMRec interaction file holds no interactions")
    for column in ("userID", "itemID", "x_label"):
        if column not in frame.columns:
            raise RecBoleRobustError(f"{path}: MMRec interaction file has no '{column}' column")
    bad = ~frame["x_label"].isin(["0", "1", "2"])
    if bad.any():
        raise RecBoleRobustError(
            f"{path}: x_label must be 0/1/2 (train/valid/test), found {frame['x_label'][bad].iloc[0]!r}"
        )
    return frame


def _split_files(name, out_dir, parts):
    """Write ``<name>.train/valid/test.inter`` (RecBole's ``benchmark_filename``) and ``<name>.inter``.

    The fixed split is the default; the combined file lets a protocol re-split the data (e.g.
    leave-one-out with ``benchmark_filename: ~``).
    """
    counts = {}
    for suffix, frame in zip(("train", "valid", "test"), parts):
        counts[suffix] = _write_atomic(frame, os.path.join(out_dir, f"{name}.{suffix}.inter"))
    _write_atomic(pd.concat(parts), os.path.join(out_dir, f"{name}.inter"))
    return counts


def build_mmrec(source_dir, out_dir, name, inter_file):
    """MMRec layout: one ``.inter`` whose ``x_label`` (0/1/2) fixes the train/valid/test split.

    Ids are contiguous from 0 and feature row ``i`` holds item ``i``.
    """
    frame = _read_mmrec_inter(os.path.join(source_dir, inter_file))
    columns = {"userID": UID, "itemID": IID}
    if "rating" in frame.columns:
        columns["rating"] = "rating:float"
    if "timestamp" in frame.columns:
        columns["timestamp"] = "timestamp:float"
    out = frame[list(columns)].rename(columns=columns)
    parts = [out[frame["x_label"] == label] for label in ("0", "1", "2")]
    for part, label, split in zip(parts, "012", ("train", "valid", "test")):
        if part.empty:
            raise RecBoleRobustError(f"{os.path.join(source_dir, inter_file)}: no rows with x_label {label} ({split})")
    items = frame["itemID"].astype(int)
    return {
        "feature_path": source_dir,
        "feature_rows": int(items.max()) + 1,
        "feature_tokens": None,
        "counts": _split_files(name, out_dir, parts),
    }


def build_lattice(source_dir, out_dir, name):
    """LATTICE layout: ``5-core/{train,val,test}.json``, each ``{"<user>": [item, ...]}``.

    Item ids are MMRec's (``item2id.json``), so MMRec feature files, if present, align by row.
    """
    parts = []
    for split in ("train", "val", "test"):
        path = os.path.join(source_dir, "5-core", f"{split}.json")
        with open(path, encoding="utf-8") as f:
            user_items = json.load(f)
        if not isinstance(user_items, dict) or not all(isinstance(items, list) for items in user_items.values()):
            raise RecBoleRobustError(f"{path} must map each user to a list of items "
                                     f'({{"<user>": [item, ...]}}), not a {type(user_items).__name__} of other values')
        rows = [(str(u), str(i)) for u, items in user_items.items() for i in items]
        parts.append(pd.DataFrame(rows, columns=[UID, IID]))
    item2id = os.path.join(source_dir, "item2id.json")
    if os.path.isfile(item2id):
        with open(item2id, encoding="utf-8") as f:
            n_items = len(json.load(f))
    else:
        n_items = 1 + max(int(i) for part in parts for i in part[IID])
    return {
        "feature_path": source_dir,
        "feature_rows": n_items,
        "feature_tokens": None,
        "counts": _split_files(name, out_dir, parts),
    }


def build_amazon(source_dir, out_dir, name, inter_file):
    """Amazon (MMRec release ``baby.inter`` + features, else the LATTICE json split)."""
    if os.path.isfile(os.path.join(source_dir, inter_file)):
        return build_mmrec(source_dir, out_dir, name, inter_file)
    return build_lattice(source_dir, out_dir, name)


def _recbole_ml100k_dir():
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")


ML100K_GENRES = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western", "unknown",
]


def ml100k_item_features(item_frame, text_dim=64):
    """Content features of ml-100k items computed from the ``.item`` file alone.

    * ``text``: TF-IDF over the words of the title and the genre names, reduced to ``text_dim``
      dimensions by truncated SVD (LSA), each row L2-normalised;
    * ``genre``: the 19 genre indicators plus the release year scaled to [0, 1] (missing year: 0.5).

    Returns ``(tokens, {"text": array, "genre": array})``, rows in the order of ``tokens``.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    titles = item_frame["movie_title:token_seq"].fillna("").astype(str)
    genres = item_frame["class:token_seq"].fillna("").astype(str)
    documents = (titles + " " + genres).str.lower()
    tfidf = TfidfVectorizer(token_pattern=r"[a-z0-9'-]+", sublinear_tf=True).fit_transform(documents)
    text = TruncatedSVD(n_components=text_dim, algorithm="arpack", random_state=0).fit_transform(tfidf)
    text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)

    genre = np.zeros((len(item_frame), len(ML100K_GENRES) + 1), dtype=np.float32)
    index = {g: k for k, g in enumerate(ML100K_GENRES)}
    for row, value in enumerate(genres):
        for g in value.split():
            if g in index:
                genre[row, index[g]] = 1.0
    years = pd.to_numeric(item_frame["release_year:token"], errors="coerce")
    scaled = (years - years.min()) / max(years.max() - years.min(), 1.0)
    genre[:, -1] = scaled.fillna(0.5).to_numpy(dtype=np.float32)
    tokens = item_frame["item_id:token"].astype(str).tolist()
    return tokens, {"text": text.astype(np.float32), "genre": genre}


def build_ml100k(source_dir, out_dir, name):
    """ml-100k from the recbole wheel, plus item content features derived from its ``.item`` file."""
    for suffix in ("inter", "item", "user"):
        shutil.copyfile(os.path.join(source_dir, f"ml-100k.{suffix}"), os.path.join(out_dir, f"{name}.{suffix}"))
    item_frame = pd.read_csv(os.path.join(source_dir, "ml-100k.item"), sep="\t", dtype=str)
    tokens, features = ml100k_item_features(item_frame)
    for modality, matrix in features.items():
        np.save(os.path.join(out_dir, f"{modality}_feat.npy"), matrix)
    with open(os.path.join(out_dir, "item_tokens.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    n_inter = sum(1 for _ in open(os.path.join(out_dir, f"{name}.inter"), encoding="utf-8")) - 1
    return {
        "feature_path": None,
        "feature_rows": len(tokens),
        "feature_tokens": "item_tokens.txt",
        "counts": {"inter": n_inter},
    }


def _ratings(frame, name, out_dir, path):
    """Write ``<name>.inter`` with one row per (user, item): repeats merged to the earliest timestamp.

    Ties (and files without timestamps) keep the first row in file order. This is done here with a
    stable sort rather than by RecBole's ``rm_dup_inter``, whose unstable sort breaks ties arbitrarily.
    A file without ratings, or with a line that lacks a column, is refused.
    """
    if frame.empty:
        raise RecBoleRobustError(f"{path} holds no ratings")
    incomplete = frame.isna().any(axis=1).to_numpy()
    if incomplete.any():
        expected = " ".join(c.split(":")[0] for c in frame.columns)
        raise RecBoleRobustError(f"{path}: line {int(incomplete.argmax()) + 1} lacks a column (expected: {expected})")
    if "timestamp:float" in frame.columns:
        frame = frame.sort_values("timestamp:float", kind="stable")
    merged = frame.drop_duplicates([UID, IID], keep="first").sort_index()
    count = _write_atomic(merged, os.path.join(out_dir, f"{name}.inter"))
    return {
        "feature_path": None, "feature_rows": None, "feature_tokens": None,
        "counts": {"inter": count}, "raw_rows": len(frame), "repeats_merged": len(frame) - count,
    }


def _read_ratings(path, **options):
    """``pandas.read_csv`` of a ratings file; an empty file is refused with one line."""
    if os.path.getsize(path) == 0:
        raise RecBoleRobustError(f"{path} is empty")
    return pd.read_csv(path, header=None, **options)


def build_filmtrust(source_dir, out_dir, name):
    """LibRec FilmTrust ``ratings.txt``: space-separated ``user item rating``, no header."""
    path = os.path.join(source_dir, "ratings.txt")
    frame = _read_ratings(path, sep=r"\s+", names=[UID, IID, "rating:float"], dtype={0: str, 1: str, 2: float})
    return _ratings(frame, name, out_dir, path)


def build_ciaodvd(source_dir, out_dir, name):
    """LibRec CiaoDVD ``movie-ratings.txt``: ``userID,movieID,genreID,reviewID,movieRating,date``."""
    path = os.path.join(source_dir, "movie-ratings.txt")
    frame = _read_ratings(path, sep=",", names=["user", "movie", "genre", "review", "rating", "date"], dtype=str)
    if frame.empty or frame.isna().any(axis=None):
        return _ratings(frame.rename(columns={"user": UID, "movie": IID}), name, out_dir, path)
    seconds = pd.to_datetime(frame["date"], format="%Y-%m-%d").astype("int64") // 10**9
    out = pd.DataFrame({
        UID: frame["user"], IID: frame["movie"],
        "rating:float": frame["rating"].astype(float), "timestamp:float": seconds.astype(float),
    })
    return _ratings(out, name, out_dir, path)


def build_ml1m(source_dir, out_dir, name):
    """MovieLens-1M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``."""
    path = os.path.join(source_dir, "ratings.dat")
    frame = _read_ratings(path, sep="::", engine="python", names=[UID, IID, "rating:float", "timestamp:float"],
                          dtype={0: str, 1: str, 2: float, 3: float})
    return _ratings(frame, name, out_dir, path)


def build_recad(source_dir, out_dir, name, prefix):
    """RecAD's split (gusye1234/recad ``data/<prefix>.zip``): ``<prefix>_{train,valid,test}.csv``, header
    ``user_id,item_id,rating,timestamp``; the split is kept as it is (``<name>.train/valid/test.inter``)."""
    parts = []
    for split in ("train", "valid", "test"):
        path = os.path.join(source_dir, f"{prefix}_{split}.csv")
        if os.path.getsize(path) == 0:
            raise RecBoleRobustError(f"{path} is empty")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in frame.columns]
        if missing:
            raise RecBoleRobustError(f"{path}: no '{missing[0]}' column (header user_id,item_id,rating,timestamp)")
        if frame.empty:
            raise RecBoleRobustError(f"{path} holds no interactions")
        parts.append(pd.DataFrame({UID: frame["user_id"], IID: frame["item_id"],
                                   "rating:float": pd.to_numeric(frame["rating"], errors="raise"),
                                   "timestamp:float": pd.to_numeric(frame["timestamp"], errors="raise")}))
    return {"feature_path": None, "feature_rows": None, "feature_tokens": None,
            "counts": _split_files(name, out_dir, parts)}


BUILDERS = {
    "mmrec": build_mmrec,
    "lattice": build_lattice,
    "amazon": build_amazon,
    "ml100k": build_ml100k,
    "filmtrust": build_filmtrust,
    "ciaodvd": build_ciaodvd,
    "ml1m": build_ml1m,
    "recad": build_recad,
}


def layouts(builder, options):
    """The alternative sets of files that identify a source folder for ``builder``."""
    lattice = ["5-core/train.json", "5-core/val.json", "5-core/test.json"]
    return {
        "mmrec": [[options.get("inter_file")]],
        "lattice": [lattice],
        "amazon": [[options.get("inter_file")], lattice],
        "ml100k": [["ml-100k.inter", "ml-100k.item", "ml-100k.user"]],
        "filmtrust": [["ratings.txt"]],
        "ciaodvd": [["movie-ratings.txt"]],
        "ml1m": [["ratings.dat"]],
        "recad": [[f"{options.get('prefix')}_{split}.csv" for split in ("train", "valid", "test")]],
    }[builder]
