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
