"""The GET response cache (issue 17: a few thousand long unique URLs grew a worker by 1.2 GiB): it
keeps no error answers (a 404 echoes its URL), it is bounded by bytes whatever the URLs, and a
hit stays what the read ratio needs: the very bytes object of the first answer, one dict lookup.

Memory is measured with tracemalloc (what the process still holds after the requests), so the
figures do not depend on the allocator handing pages back.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from schema_registry.api import CACHE_BUDGET, Api, WriteContext
from schema_registry.registry import Registry
from schema_registry.storage import MemoryStorage

MIB = 1024 * 1024
PAD = "x" * 4000
SCHEMA = json.dumps({"type": "record", "name": "Cached", "namespace": "t", "fields": []})


@pytest.fixture
def make_api() -> Iterator[Callable[..., Api]]:
    storages: list[MemoryStorage] = []

    def make(*, cache_budget: int = CACHE_BUDGET) -> Api:
        storages.append(MemoryStorage())
        return Api(Registry(storages[-1]), cache_budget=cache_budget)

    yield make
    for storage in storages:
        storage.close()


def get(api: Api, url: str) -> bytes:
    return api.handle("GET", url.encode(), b"", b"")


def status(response: bytes) -> int:
    return int(response[9:12])


def held_after(work: Callable[[], None]) -> int:
    """Bytes still allocated once ``work`` is done (and garbage collected)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def register(api: Api, subject: str) -> int:
    body = json.dumps({"schema": SCHEMA}).encode()
    answer = api.handle("POST", f"/subjects/{subject}/versions".encode(), b"", body, WriteContext())
    assert status(answer) == 200, answer
    schema_id: int = json.loads(answer.partition(b"\r\n\r\n")[2])["id"]
    return schema_id


def test_unique_404_urls_leave_nothing_behind(make_api: Callable[..., Api]) -> None:
    api = make_api()

    def flood() -> None:
        for n in range(2000):
            assert status(get(api, f"/subjects/{n}-{PAD}/versions")) == 404

    # Before: ~16 MiB held (2,000 URLs of 4 KiB, each with a 404 that echoed it).
    assert held_after(flood) < 256 * 1024
    assert api.cache_bytes == 0


def test_unique_200_urls_stay_within_the_budget(make_api: Callable[..., Api]) -> None:
    api = make_api(cache_budget=MIB)
    schema_id = register(api, "cached-value")

    def flood() -> None:
        # A query the route ignores still makes a distinct URL, and each answers 200.
        for n in range(1000):
            assert status(get(api, f"/schemas/ids/{schema_id}?pad={n}{PAD}")) == 200
            assert api.cache_bytes <= MIB

    assert held_after(flood) < 2 * MIB  # 1,000 entries of ~4.5 KiB without the bound


def test_a_hit_is_the_first_answer_itself(make_api: Callable[..., Api]) -> None:
    api = make_api()
    schema_id = register(api, "hot-value")
    url = f"/schemas/ids/{schema_id}"
    first = get(api, url)
    assert status(first) == 200
    assert get(api, url) is first
    assert api.cache_bytes > len(first)


def test_the_hot_entry_is_cached_again_after_the_cache_filled(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(cache_budget=256 * 1024)
    schema_id = register(api, "hot-value")
    url = f"/schemas/ids/{schema_id}"
    for n in range(200):  # well over the budget: the cache was cleared at least once
        get(api, f"{url}?pad={n}{PAD}")
    first = get(api, url)
    assert get(api, url) is first


def test_an_answer_bigger_than_a_16th_of_the_budget_is_answered_not_kept(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(cache_budget=16 * 1024)
    for n in range(20):
        register(api, f"listed-{n}-{PAD[:100]}-value")
    listing = get(api, "/schemas")
    assert status(listing) == 200
    assert len(listing) > 1024
    assert api.cache_bytes == 0
    assert get(api, "/schemas") == listing


def test_a_miss_becomes_a_hit_after_the_write_that_fills_it(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    assert status(get(api, "/subjects/later-value/versions")) == 404
    register(api, "later-value")
    assert json.loads(get(api, "/subjects/later-value/versions").partition(b"\r\n\r\n")[2]) == [1]
