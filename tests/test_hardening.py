"""Hardening: checkpoints never choose paths, finished runs stay finished, plain RecBole is untouched,
values are never evaluated, builds are locked, RecBole internals are checked."""
import glob
import hashlib
import os
import shutil
import threading
import time

import pytest
import torch

import recbole_robust

from conftest import killed_run
from recbole_robust import run_recbole_robust
from recbole_robust.errors import RecBoleRobustError


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def bpr_run(fast, **extra):
    return {"model": "BPR", "dataset": "ml-100k", "config_dict": {**fast, "epochs": 3, **extra}}


def test_resume_never_uses_a_path_stored_in_the_checkpoint(fast, tmp_path):
    last = killed_run(0, **bpr_run(fast))
    victim = tmp_path / "elsewhere" / "victim.pth"
    state = torch.load(last, weights_only=True)
    state["best_model_file"] = str(victim)  # what an old or crafted checkpoint may carry
    state["saved_model_file"] = str(victim)
    torch.save(state, last)
    result = run_recbole_robust(**bpr_run(fast), resume=last)
    assert not victim.exists() and not victim.parent.exists()
    assert result["saved_model_file"] == last.replace(".last.pth", ".pth")


def test_resuming_a_copy_leaves_the_original_run_alone(fast, tmp_path):
    last = killed_run(0, **bpr_run(fast))
    best = last.replace(".last.pth", ".pth")
    originals = {p: digest(p) for p in (last, best)}
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in (last, best):
        shutil.copy(p, copy)
    result = run_recbole_robust(**bpr_run(fast), resume=str(copy / os.path.basename(last)))
    assert {p: digest(p) for p in originals} == originals
    assert result["saved_model_file"] == str(copy / os.path.basename(best))


def test_resuming_a_finished_run_keeps_its_best_model_and_metrics(fast):
    run = bpr_run(fast, epochs=3)
    first = run_recbole_robust(**run)
    best = first["saved_model_file"]
    before = digest(best)
    again = run_recbole_robust(**run, resume=best.replace(".pth", ".last.pth"))
    assert digest(best) == before
    assert again["test_result"] == first["test_result"]


def test_resume_needs_the_best_checkpoint_beside_it(fast, tmp_path):
    last = killed_run(0, **bpr_run(fast))
    lonely = tmp_path / os.path.basename(last)
    shutil.copy(last, lonely)
    with pytest.raises(RecBoleRobustError, match="best checkpoint .* is not beside it"):
        run_recbole_robust(**bpr_run(fast), resume=str(lonely))


@pytest.mark.parametrize("option, change, message", [
    (option, change, message)
    for change, message in [
        ({"dataset": "filmtrust"}, "trained with dataset=ml-100k, this run has dataset=filmtrust"),
        ({"embedding_size": 16}, "trained with embedding_size=64, this run has embedding_size=16"),
        ({"learner": "sgd"}, "trained with learner=adam, this run has learner=sgd"),
    ]
    for option in ("resume", "checkpoint")
    if not (option == "checkpoint" and "learner" in change)  # evaluating does not depend on the optimiser
])
def test_checkpoint_of_another_setting_is_refused(fast, option, change, message):
    last = killed_run(0, **bpr_run(fast))
    change = dict(change)
    dataset = change.pop("dataset", "ml-100k")
    files_before = sorted(glob.glob(os.path.join(fast["checkpoint_dir"], "*")))
    with pytest.raises(RecBoleRobustError, match=message):
        run_recbole_robust(model="BPR", dataset=dataset, config_dict={**fast, **change}, **{option: last})
    assert sorted(glob.glob(os.path.join(fast["checkpoint_dir"], "*"))) == files_before


def test_values_are_parsed_never_evaluated(tmp_path):
    from recbole_robust.config import parse_overrides, parse_value

    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    assert parse_value(code) == code and not marker.exists()
    assert parse_overrides(["--epochs=5", "--adv_targets=[item_features]", "--eval_args={'mode': 'uni100'}",
                            "--x=true", "--lr=1e-3", "--name=BPR"]) == {
        "epochs": 5, "adv_targets": ["item_features"], "eval_args": {"mode": "uni100"}, "x": True, "lr": 1e-3,
        "name": "BPR"}
    with pytest.raises(RecBoleRobustError, match="unrecognised argument 'x'"):
        parse_overrides(["x"])


def test_a_string_from_a_search_space_reaches_the_model_as_a_string(fast, tmp_path):
    """A trial's parameters go through PluginConfig: a string is data, even where RecBole would eval it."""
    from recbole_robust.quick_start import make_config

    marker = tmp_path / "pwned"
    config = make_config("BPR", "ml-100k", config_dict={**fast, "loss_type": f"__import__('os').system('touch {marker}')"})
    assert config["loss_type"].startswith("__import__") and not marker.exists()


def test_plain_recbole_reads_its_own_atomic_files(tmp_path, small_data):
    """ml-1m (a plugin dataset too) with RecBole's atomic file present and no ratings.dat: RecBole's data,
    RecBole's settings, nothing built."""
    from recbole.config import Config

    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ml-1m.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t1\t1\n")
    config = Config(model="BPR", dataset="ml-1m", config_dict={"data_path": str(tmp_path)})
    assert config["data_path"] == str(folder)
    assert config["val_interval"] is None and config["plugin_build"] is None  # the plugin's ml-1m.yaml is not read
    assert config["adv_targets"] is None  # nor the plugin's defaults
    assert "build_dir" not in config.final_config_dict


def test_a_config_never_builds_data(tmp_path, small_data):
    from recbole.config import Config
    from recbole.data import create_dataset

    build_dir = tmp_path / "built"
    config = Config(model="BPR", dataset="filmtrust", config_dict={"data_path": str(small_data),
                                                                     "build_dir": str(build_dir)})
    assert config["data_path"] == str(build_dir / "filmtrust") and not build_dir.exists()
    dataset = create_dataset(config)  # RecBole loads the data: now it is built
    assert (build_dir / "filmtrust" / "filmtrust.inter").is_file() and dataset.inter_num > 0


def test_plain_run_recbole_on_a_builtin_model_end_to_end(workdir):
    """RecBole's own pipeline and trainer, plugin imported, torch >= 2.6: trains, saves, reloads, tests."""
    from recbole.quick_start import run_recbole

    result = run_recbole(model="BPR", dataset="ml-100k", config_dict={
        "epochs": 1, "show_progress": False, "state": "WARNING", "checkpoint_dir": str(workdir / "saved")})
    assert result["test_result"]["recall@10"] > 0
    checkpoint = torch.load(glob.glob(str(workdir / "saved" / "BPR-*.pth"))[0], weights_only=True)
    assert checkpoint["config"]["model"] == "BPR" and isinstance(checkpoint["config"], dict)


def test_concurrent_builds_build_once_and_keep_the_finished_folder(tmp_path, small_data, monkeypatch):
    from recbole_robust.data import builders, prepare
    from recbole_robust.resources import dataset_config

    calls = []
    real = builders.BUILDERS["filmtrust"]

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setitem(prepare.BUILDERS, "filmtrust", slow)
    build = dataset_config("filmtrust")["build"]
    source = prepare.find_source("filmtrust", build, [str(small_data)])
    out = tmp_path / "built"
    out.mkdir()
    stale = out / ".filmtrust-build-killed"  # a build killed earlier left this
    stale.mkdir()
    results = []
    threads = [threading.Thread(target=lambda: results.append(prepare.build_dataset(
        "filmtrust", build, *source, str(out)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2
    assert results[0][0] == results[1][0] and os.path.isfile(os.path.join(results[0][0], "filmtrust.inter"))
    assert not stale.exists()


def test_recbole_internals_are_checked(monkeypatch):
    from recbole.config import Config

    from recbole_robust import recbole_internals

    recbole_internals.check()
    with pytest.raises(RecBoleRobustError, match="hooks into RecBole 1.2.1, but RecBole 1.3.0 is installed"):
        recbole_internals.check(version="1.3.0")

    def changed(self, model, dataset):
        pass

    names = [(Config, "_changed", ("self", "model", "model_class", "dataset"), "")]
    monkeypatch.setattr(Config, "_changed", changed, raising=False)
    with pytest.raises(RecBoleRobustError, match=r"Config._changed takes \(self, model, dataset\)"):
        recbole_internals.check(names=names)
    from recbole.trainer import Trainer
    with pytest.raises(RecBoleRobustError, match="Trainer no longer sets best_valid_scor"):
        recbole_internals.check(attributes=[(Trainer, ("best_valid_scor",))])


def test_every_private_recbole_name_the_plugin_uses_is_listed():
    """The package's source: each ``._name`` it uses that RecBole defines (a method, or an attribute it
    assigns) is in ``recbole_internals`` (checked at import), unless the plugin defines it itself."""
    import re
    from pathlib import Path

    import recbole

    from recbole_robust import recbole_internals

    package = Path(recbole_robust.__file__).parent
    ours = "\n".join(p.read_text(encoding="utf-8") for p in package.rglob("*.py"))
    theirs = "\n".join(p.read_text(encoding="utf-8") for p in Path(recbole.__file__).parent.rglob("*.py"))
    listed = {name for _, name, _, _ in recbole_internals.PRIVATE_NAMES} | {
        a for _, attrs in recbole_internals.PRIVATE_ATTRIBUTES for a in attrs}
    own = set(re.findall(r"def (_\w+)", ours)) | set(re.findall(r"self\.(_\w+)\s*=", ours)) \
        - {name for _, name, _, _ in recbole_internals.PRIVATE_NAMES}  # an override is RecBole's name
    used = {m for m in re.findall(r"\.(_[a-zA-Z]\w*)", ours) if not m.startswith("__")}
    recboles = {n for n in used if re.search(rf"def {n}\b|self\.{n}\s*=", theirs)}
    assert sorted(recboles - own - listed) == []
    assert {"_change_feat_format", "_init_batch_size_and_step", "_dataset"} <= listed


def test_model_contract_lists_every_hook():
    from recbole_robust.model.contract import HOOKS, RobustModel, hook
    from recbole_robust.registry import plugin_models

    with pytest.raises(KeyError, match="not a hook of the model contract"):
        hook(object(), "some_new_hook")
    declared = set(RobustModel.__annotations__) | {n for n in vars(RobustModel) if not n.startswith("_")}
    assert set(HOOKS) <= declared
    models = plugin_models()
    assert hook(models["VAEGAN"], "user_dataloader") and hook(models["VBPR"], "needs_item_features")
    assert hook(object(), "perturbation_targets") == {}


def test_ray_trials_use_the_gpus_ray_assigned():
    from recbole.config import Config

    from recbole_robust.config import PluginConfig
    from recbole_robust.tune import trial_devices

    assert trial_devices([3]) == {"gpu_id": "3"} and trial_devices([0, 2]) == {"gpu_id": "0,2"}
    config = PluginConfig(model="BPR", dataset="ml-100k", config_dict=trial_devices([]))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and config["device"] == torch.device("cpu")
    assert issubclass(PluginConfig, Config)


def test_rng_state_is_restored_from_cpu_tensors():
    from recbole_robust.trainer.checkpoint import rng_state, set_rng_state

    state = rng_state()
    expected = torch.rand(3)
    assert "cuda" in state
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected)
