"""The Google Maps grid: how a crowded cell is split (pure; no crawl)."""

from __future__ import annotations

from spiders.spiders.google_maps import MAX_RESULTS, Cell

ROOT = Cell(30.0, -98.0, 30.4, -97.6)


def area(cell: Cell) -> float:
    return (cell.north - cell.south) * (cell.east - cell.west)


def test_split_goes_as_deep_as_the_total_needs_and_covers_the_cell() -> None:
    assert len(ROOT.split(MAX_RESULTS + 1, max_depth=8)) == 4
    assert len(ROOT.split(4 * MAX_RESULTS, max_depth=8)) == 4
    sixteen = ROOT.split(4 * MAX_RESULTS + 1, max_depth=8)
    assert len(sixteen) == 16 and {c.depth for c in sixteen} == {2}
    assert abs(sum(area(c) for c in sixteen) - area(ROOT)) < 1e-12
    assert len({c.vp for c in sixteen}) == 16  # no overlap, no repeat


def test_split_never_passes_the_depth_limit() -> None:
    deep = Cell(30.0, -98.0, 30.4, -97.6, depth=7)
    assert {c.depth for c in deep.split(100_000, max_depth=8)} == {8}
    assert len(ROOT.split(100_000, max_depth=2)) == 16


def test_leaf_feeds_wait_for_a_browser_tab_biggest_list_first() -> None:
    from scrapy.http import Response

    from spiders.spiders.google_maps import GoogleMapsSpider

    spider = GoogleMapsSpider()
    spider.browser_tabs = 2
    for cell, size in zip(ROOT.quadrants(), (30, 120, 5, 80), strict=True):
        spider.frontier.append(("feed", cell, size))

    first = spider._pump()
    assert [r.meta["promise"] for r in first] == [120, 80]  # two tabs: the two longest lists
    assert spider.promised == 235  # queued feeds still count against a limit

    spider._settle(Response(first[0].url, request=first[0]))
    assert [r.meta["promise"] for r in spider._pump()] == [30]
    assert spider._pump() == []  # both tabs busy again
    assert [-size for size, _, _ in spider.ready_feeds] == [5]
