"""Four Python threads calling the parallel kernels at once (a Streamlit server runs one
thread per browser session). Numba's workqueue layer would abort the process here."""
from __future__ import annotations

import threading

import numba

from kernels import standard_attention, streaming_attention
from tests.helpers import assert_matches_oracle, qkv


def test_threading_layer_is_thread_safe():
    q, k, v = qkv(1, 2, 1, 20, 20, 16)
    streaming_attention(q, k, v)
    assert numba.threading_layer() in ("omp", "tbb")


def test_four_threads_at_once():
    inputs = [qkv(1, 4, 2, 300 + 17 * t, 300 + 17 * t, 64, seed=t) for t in range(4)]
    inputs += [qkv(1, 8, 2, 1, 3000, 64, seed=9)]  # a decode call in the mix
    results, errors = {}, []
    start = threading.Barrier(len(inputs))

    def work(t):
        try:
            q, k, v = inputs[t]
            start.wait()
            for _ in range(5):
                results[t] = (streaming_attention(q, k, v, return_lse=True),
                              standard_attention(q, k, v, return_lse=True))
        except Exception as exc:  # reported below, with the thread's index
            errors.append((t, repr(exc)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(len(inputs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for t, (stream, std) in results.items():
        q, k, v = inputs[t]
        assert_matches_oracle(*stream, q, k, v)
        assert_matches_oracle(*std, q, k, v)
