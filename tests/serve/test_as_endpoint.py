"""`lightning-ft serve` as the local endpoint of `lightning-ft eval`'s judge (and of `lightning-ft data generate`,
which talks through the same client): an adapter served by name gives the verdict that adapter gives as a local
judge."""

from __future__ import annotations

from lightning_ft.eval.judge_backends import EndpointJudge, LocalJudge
from tests.serve.conftest import API_KEY

CONVERSATION = [
    {"role": "system", "content": "You grade answers from 1 to 10."},
    {"role": "user", "content": "Question: what is 2 + 2? Answer: 4. Grade it."},
]


def test_a_served_adapter_judges_as_the_local_adapter(server_url, adapter_dirs, monkeypatch):
    monkeypatch.setenv("SERVED_JUDGE_KEY", API_KEY)
    served = EndpointJudge(server_url, "beta", api_key_env="SERVED_JUDGE_KEY", max_tokens=10, temperature=0.0)
    local = LocalJudge.from_path(adapter_dirs["beta"], max_new_tokens=10, temperature=0.0)
    assert served.complete(CONVERSATION, seed=0) == local.complete(CONVERSATION, seed=0)
