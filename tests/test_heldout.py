"""Strong generalisation (``--preset=vaegan_strong``): held-out users are never trained on, their fold-in
history is the model's input at evaluation and is masked; other models are refused."""
import numpy as np
import pytest
import torch

from recbole_robust import run_recbole_robust
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import load_data, make_config


def split_of(fast, model="MultiVAE"):
    config = make_config(model, "ml-100k", config_dict=fast, preset="vaegan_strong")
    return config, load_data(config)


def users_of(data):
    return set(data.dataset.inter_feat[data.dataset.uid_field].numpy().tolist())


def test_heldout_users_are_split_folded_in_and_never_trained_on(fast):
    config, (dataset, train_data, valid_data, test_data) = split_of(fast)
    valid_users, test_users = users_of(valid_data), users_of(test_data)
    all_users = users_of(train_data)
    n_users = len(all_users)
    assert not valid_users & test_users
    assert abs(len(valid_users) + len(test_users) - 0.2 * n_users) <= 2
    trained = set()
    for batch in train_data:
        trained |= set(batch[dataset.uid_field].numpy().tolist())
    assert trained == all_users - valid_users - test_users  # every training user, no held-out one
    # a held-out user's interactions: about 80% folded in (training split), the rest its targets
    train_inter, test_inter = train_data.dataset.inter_feat, test_data.dataset.inter_feat
    uid, iid = dataset.uid_field, dataset.iid_field
    for user in list(test_users)[:20]:
        foldin = set(train_inter[iid][train_inter[uid] == user].numpy().tolist())
        targets = set(test_inter[iid][test_inter[uid] == user].numpy().tolist())
        assert foldin and targets and not foldin & targets
        assert len(foldin) == int(np.ceil(0.8 * (len(foldin) + len(targets))))
    # the same seed gives the same split
    _, (_, _, _, again) = split_of(fast)
    assert users_of(again) == test_users


def test_strong_generalisation_runs_and_other_models_are_refused(fast):
    result = run_recbole_robust(model="MultiVAE", dataset="ml-100k", preset="vaegan_strong",
                                config_dict={**fast, "epochs": 3})
    assert result["test_result"]["recall@20"] > 0.05
    config, (_, train_data, _, test_data) = split_of(fast, "VAEGAN")
    assert type(train_data).__name__ == "TrainingUsersDataLoader"
    result = run_recbole_robust(model="VAEGAN", dataset="ml-100k", preset="vaegan_strong",
                                config_dict={**fast, "epochs": 2})
    assert result["test_result"]["recall@20"] > 0
    with pytest.raises(RecBoleRobustError, match="BPR learns a vector per user"):
        run_recbole_robust(model="BPR", dataset="ml-100k", preset="vaegan_strong", config_dict=fast)
