"""One option check: it names the option, the value given and every valid value, from a Literal or a collection."""

from __future__ import annotations

from typing import Literal

import pytest

from lightning_ft.algorithms import PPO, SFT
from lightning_ft.model.spec import ModelSpec
from lightning_ft.options import check_keys, check_option


def test_a_literal_or_a_collection_lists_the_valid_values_in_order():
    check_option("critic", "shared", Literal["shared", "separate"])
    with pytest.raises(ValueError, match=r"^Unknown critic 'critc'; valid: shared, separate$"):
        check_option("critic", "critc", Literal["shared", "separate"])
    with pytest.raises(ValueError, match=r"^Unknown kl_estimator 'k2'; valid: k1, k3$"):
        check_option("kl_estimator", "k2", {"k1": None, "k3": None})


def test_unknown_keys_are_named():
    check_keys("field keys", {"prompt": "question"}, ["prompt", "system"])
    with pytest.raises(ValueError, match=r"^Unknown field keys \['answer'\]; valid: prompt, system$"):
        check_keys("field keys", {"answer": "a", "prompt": "q"}, ["system", "prompt"])


def test_the_modules_use_it(tiny_model_dir):
    spec = ModelSpec(path=str(tiny_model_dir))
    with pytest.raises(ValueError, match=r"^Unknown critic 'both'; valid: shared, separate$"):
        PPO(spec, ["lightning_ft.rewards.length_penalty"], critic="both")
    with pytest.raises(ValueError, match=r"^Unknown on_non_finite 'retry'; valid: stop, skip$"):
        SFT(spec, on_non_finite="retry")
