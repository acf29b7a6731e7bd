"""A bounded load test: 64 chat requests, 8 at a time, over the base and both adapters, all answered."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

REQUESTS, CONCURRENCY, NEW_TOKENS = 64, 8, 16


def test_64_requests_8_at_a_time_all_succeed(client, base_dir):
    models = [str(base_dir), "alpha", "beta"]

    def one(index: int) -> int:
        messages = [{"role": "user", "content": f"Say something {index}."}]
        response = client.chat.completions.create(
            model=models[index % 3], messages=messages, max_tokens=NEW_TOKENS, temperature=0
        )
        assert response.choices[0].finish_reason in ("stop", "length")
        return response.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        tokens = list(pool.map(one, range(REQUESTS)))
    seconds = time.perf_counter() - start
    assert len(tokens) == REQUESTS and all(1 <= count <= NEW_TOKENS for count in tokens)
    print(
        f"\nserve load test: {REQUESTS} requests, {CONCURRENCY} concurrent, {seconds:.2f} s: "
        f"{REQUESTS / seconds:.1f} requests/s, {sum(tokens) / seconds:.0f} generated tokens/s"
    )
