"""RecBole's built-in models run through the plugin's pipeline unchanged."""
import pytest

from recbole_robust import run_recbole_robust


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "CDAE", "MultiVAE", "RecVAE"])
def test_builtin_model_runs_on_plugin_dataset(fast, model):
    result = run_recbole_robust(model=model, dataset="ml-100k", config_dict={**fast, "epochs": 1})
    assert set(result["test_result"]) >= {"recall@10", "ndcg@10"}
    assert result["saved_model_file"].endswith(".pth")


def test_builtin_model_on_benchmark_split(fast):
    result = run_recbole_robust(model="BPR", dataset="tiktok", config_dict={**fast, "epochs": 1})
    assert result["test_result"]["recall@10"] >= 0


def test_model_without_validation_still_has_a_checkpoint(fast):
    # Pop trains one epoch; with eval_step 2 RecBole never validates and never saves
    result = run_recbole_robust(model="Pop", dataset="ml-100k", config_dict={**fast, "eval_step": 2})
    assert result["saved_model_file"] and result["test_result"]["hit@10"] > 0
