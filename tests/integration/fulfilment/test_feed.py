"""The pull feed: a hub that polls with its cursor sees every entry once, in order, however writes interleave."""

import asyncio

from tests.integration.fulfilment.conftest import deliver, headers, referral_received

SERVICE = "fulfilment"


async def read_page(client, settings, hub, cursor, limit):
    response = await client.get(
        f"/v1/hubs/{hub}/feed", params={"cursor": cursor, "limit": limit}, headers=headers(settings, "hub", hub)
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_paging_with_the_cursor_returns_each_entry_once_in_order(client, settings):
    for _ in range(5):
        await deliver(client.app, referral_received(types=("food",)))

    seen, cursor = [], 0
    while True:
        page = await read_page(client, settings, "thanet", cursor, 2)
        if not page["items"]:
            break
        seen += [item["seq"] for item in page["items"]]
        cursor = page["next_cursor"]

    assert seen == [1, 2, 3, 4, 5]
    assert (await read_page(client, settings, "thanet", cursor, 2)) == {"hub": "thanet", "items": [], "next_cursor": 5}


async def test_a_reader_polling_during_concurrent_writes_never_skips_or_repeats_an_entry(client, settings):
    # Many transactions append to one hub's feed at once while a hub polls. On
    # PostgreSQL they really overlap; a sequence handed out before commit (a plain
    # serial) would let the reader pass an entry that commits late.
    writers = 40
    done = asyncio.Event()
    seen: list[int] = []

    async def poll():
        cursor = 0
        while True:
            finished = done.is_set()
            page = await read_page(client, settings, "thanet", cursor, 7)
            seen.extend(item["seq"] for item in page["items"])
            cursor = page["next_cursor"]
            if finished and not page["items"]:
                return

    reader = asyncio.create_task(poll())
    await asyncio.gather(*[deliver(client.app, referral_received(types=("food",))) for _ in range(writers)])
    done.set()
    await reader

    assert seen == list(range(1, writers + 1))


async def test_a_hub_only_reads_its_own_feed_and_a_bad_cursor_is_refused(client, settings):
    other = await client.get("/v1/hubs/thanet/feed", headers=headers(settings, "hub", "dover"))
    negative = await client.get(
        "/v1/hubs/thanet/feed", params={"cursor": -1}, headers=headers(settings, "hub", "thanet")
    )
    admin = await client.get("/v1/hubs/thanet/feed", headers=headers(settings, "admin"))

    assert other.status_code == 403
    assert negative.status_code == 422
    assert admin.status_code == 200
