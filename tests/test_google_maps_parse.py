"""The Google Maps payload parser on saved payloads (tests/fixtures/google_maps).

Expected values are what a person reads in the payloads (see the fixtures' README): a Greek-UI
place page (raw2.json), an English-UI place page that once crashed a parser (panic.json) and a
search-results payload with Greek places (output.json).
"""

# ruff: noqa: RUF001  (Greek letters and en dashes in expected values are the data)

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spiders.google_maps import parse as gm
from spiders.google_maps.parse import (
    FIELDS,
    WEEKDAYS,
    NotGoogleMapsPayload,
    olc_encode,
    parse_file,
    parse_payload,
    parse_place,
    parse_place_page,
    parse_search_results,
)
from spiders.items import RAW_FIELDS

FIXTURES = Path(__file__).parent / "fixtures" / "google_maps"
ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def search() -> dict[str, dict[str, Any]]:
    """The search payload's records by name."""
    return {r["name"]: r for r in parse_search_results(load("output.json"))}


# --- record shape --------------------------------------------------------------------------


def test_record_starts_with_raw_fields_and_mirror_matches_items() -> None:
    # parse.py keeps its own copy of RAW_FIELDS so it need not import Scrapy; they must agree.
    assert gm._RAW_FIELDS == RAW_FIELDS
    for name in ("raw2.json", "panic.json", "output.json"):
        for rec in parse_file(FIXTURES / name):
            assert tuple(rec) == FIELDS
            assert tuple(rec)[: len(RAW_FIELDS)] == RAW_FIELDS
            assert rec["source"] == "google_maps"
            assert rec["emails"] == []
            assert rec["parse_error"] is None
            assert rec["source_id"] == rec["place_id"]


def test_parser_does_not_import_scrapy() -> None:
    code = "import sys, spiders.google_maps.parse; sys.exit('scrapy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- place pages ---------------------------------------------------------------------------


def test_greek_place_page_raw2() -> None:
    rec = parse_place_page(load("raw2.json"))
    assert rec["name"] == "Κυπριακόν"
    assert rec["category"] == "Εστιατόριο"
    assert rec["categories"] == ["Εστιατόριο"]
    assert rec["address"] == "Old port, Λεμεσός 3042"
    assert (rec["street"], rec["city"], rec["postal_code"], rec["state"], rec["country"]) == (
        "Old port",
        "Λεμεσός",
        "3042",
        None,
        "CY",
    )
    assert rec["borough"] is None
    assert rec["phone"] == "25 101555"
    assert rec["phone_international"] == "+357 25 101555"
    assert rec["website"] is None
    assert rec["rating"] == 4.1
    assert rec["review_count"] == 516
    assert rec["reviews_per_rating"] == {"1": 59, "2": 25, "3": 34, "4": 75, "5": 323}
    assert sum(rec["reviews_per_rating"].values()) == rec["review_count"]
    assert (rec["latitude"], rec["longitude"]) == (34.670595399999996, 33.042456699999995)
    assert rec["plus_code"] == "M2CR+6X Λεμεσός"
    assert rec["plus_code_global"] == "8G6MM2CR+6X"
    assert rec["cid"] == "16519582940102929223"
    assert rec["place_id"] == "ChIJDdnwdv0y5xQRRytw1ihZQeU"
    assert rec["source_id"] == "ChIJDdnwdv0y5xQRRytw1ihZQeU"
    assert rec["data_id"] == "0x14e732fd76f0d90d:0xe5415928d6702b47"
    assert rec["url"] == "https://maps.google.com/?cid=16519582940102929223"
    assert rec["timezone"] == "Asia/Nicosia"
    assert rec["price_range"] == "€€"
    assert rec["price_range_text"] == "Αρκετά ακριβό"
    # Greek day names (Σάββατο, Κυριακή, Δευτέρα...) become English keys, Monday first;
    # the hours stay as shown, the narrow no-break spaces made plain.
    assert list(rec["open_hours"]) == list(WEEKDAYS)
    assert all(v == ["9:00 π.μ.–11:30 μ.μ."] for v in rec["open_hours"].values())
    assert rec["business_status"] == "OPERATIONAL"
    assert rec["status"] == "Ανοιχτά ⋅ Κλείνει στις 11:30 μ.μ."
    # The payload escapes "=" twice (\\u003d): the URLs come out usable.
    assert rec["thumbnail"] == (
        "https://lh5.googleusercontent.com/p/AF1QipP4Y7A8nYL3KKXznSl69pXSq9p2IXCYUjVvOh0F"
        "=w408-h408-k-no"
    )
    assert rec["reviews_link"] == (
        "https://search.google.com/local/reviews?placeid=ChIJDdnwdv0y5xQRRytw1ihZQeU"
        "&q=Kipriakon&authuser=0&hl=el&gl=CY"
    )
    assert rec["owner"] == {
        "id": "102769814432182832009",
        "name": "Κυπριακόν (Ιδιοκτήτης)",
        "link": "https://www.google.com/maps/contrib/102769814432182832009",
    }
    assert [(o["source"], o["name"]) for o in rec["order_online"]] == [
        ("bolt.eu", "Bolt Food"),
        ("foody.com.cy", "eFood"),
        ("wolt.com", "Wolt"),
    ]
    assert rec["order_online"][0]["link"] == (
        "https://food.bolt.eu/en-US/442/p/4706?utm_source=google_integration"
    )
    assert rec["order_online"][1]["link"] == (
        "https://foody.com.cy/delivery/lemesos/to-kypriakon?utm_source=google"
        "&utm_medium=organic&utm_campaign=google_reserve_place_order_action"
    )
    assert rec["credit_cards"] == ["MasterCard"]
    assert rec["accepts_credit_cards"] is True


def test_panic_place_page_parses_without_raising() -> None:
    rec = parse_place_page(load("panic.json"))
    assert rec["name"] == "Happy Island Restaurant"
    assert rec["categories"] == ["Restaurant"]
    assert rec["category"] == "Restaurant"
    assert rec["address"] == "65 Natalia Court, Poseidonos Ave, Paphos 8042"
    assert rec["street"] == "65 Natalia Court, Poseidonos Ave"
    assert (rec["city"], rec["postal_code"], rec["country"]) == ("Paphos", "8042", "CY")
    assert rec["phone"] == "26 937077"
    assert rec["phone_international"] == "+357 26 937077"
    assert (rec["rating"], rec["review_count"]) == (4.7, 518)
    assert rec["reviews_per_rating"] == {"1": 10, "2": 6, "3": 25, "4": 62, "5": 415}
    assert (rec["latitude"], rec["longitude"]) == (34.754666, 32.4197193)
    assert (rec["plus_code"], rec["plus_code_global"]) == ("QC39+VV Paphos", "8G6JQC39+VV")
    assert rec["data_id"] == "0x14e706c6b6df081d:0x72b72a310a2af1f"
    assert rec["cid"] == "516632626948386591"
    assert rec["place_id"] == "ChIJHQjftsYG5xQRH6-iEKNyKwc"
    assert rec["timezone"] == "Asia/Nicosia"
    assert (rec["price_range"], rec["price_range_text"]) == ("€€", "Moderately expensive")
    assert rec["open_hours"] == {
        "Monday": ["12 am–11 pm"],
        "Tuesday": ["12 am–11 pm"],
        "Wednesday": ["12 am–10:45 pm"],
        "Thursday": ["12 am–11 pm"],
        "Friday": ["12–11 pm"],
        "Saturday": ["12–11 pm"],
        "Sunday": ["12–11 pm"],
    }
    assert rec["status"] == "Open ⋅ Closes 11 pm"
    assert rec["business_status"] == "OPERATIONAL"
    assert rec["thumbnail"] == (
        "https://lh5.googleusercontent.com/p/AF1QipNvgYcdhg91YZpt1zKKAvKzpedUTt2CtkYTUsfY"
        "=w408-h306-k-no"
    )
    assert rec["owner"]["name"] == "Happy Island Restaurant (Owner)"
    assert rec["owner"]["id"] == "104029454436273350927"
    assert rec["order_online"] is None
    # Payments says "Credit cards" but lists no brands.
    assert (rec["credit_cards"], rec["accepts_credit_cards"]) == ([], True)


def test_cid_falls_back_to_the_page_state_when_the_data_id_is_missing() -> None:
    page = load("raw2.json")
    page[6][10] = None
    page[6][227] = None
    rec = parse_place_page(page)
    assert rec["data_id"] is None
    assert rec["cid"] == "16519582940102929223"


# --- search results ------------------------------------------------------------------------


def test_search_results_list_every_place_in_order() -> None:
    recs = parse_search_results(load("output.json"))
    assert len(recs) == 20
    assert [r["name"] for r in recs[:5]] == [
        "Dream Coffee",
        "Cocoza Speciality Coffee",
        "Coffee Maniacs micro roasters",
        "SEVEN STEPS",
        "Coffee Berry Ίλιον",
    ]
    assert recs[-1]["name"] == "West Coffee Saloon"
    assert len({r["place_id"] for r in recs}) == 20
    assert all(r["country"] == "GR" and r["timezone"] == "Europe/Athens" for r in recs)


def test_search_result_dream_coffee(search: dict[str, dict[str, Any]]) -> None:
    rec = search["Dream Coffee"]
    assert rec["categories"] == ["Coffee shop"]
    assert rec["address"] == "Eakou 74, Ilion 131 22, Greece"
    assert (rec["street"], rec["city"], rec["postal_code"], rec["country"]) == (
        "Eakou 74",
        "Ilion",
        "131 22",
        "GR",
    )
    assert rec["phone"] == "+30 21 0261 6578"
    assert rec["website"] == "https://www.vrisko.gr/details/ag2e4fci67301a_44_3i4a4c_f341701"
    assert (rec["rating"], rec["review_count"]) == (4.8, 48)
    assert (rec["latitude"], rec["longitude"]) == (38.0331931, 23.7094475)
    assert rec["place_id"] == "ChIJoRVrMS-joRQRkzrMbbRUnBY"
    assert rec["data_id"] == "0x14a1a32f316b15a1:0x169c54b46dcc3a93"
    assert rec["cid"] == str(0x169C54B46DCC3A93)
    assert rec["open_hours"]["Monday"] == ["7 AM–8:30 PM"]
    assert rec["open_hours"]["Sunday"] == ["Closed"]
    assert list(rec["open_hours"]) == list(WEEKDAYS)
    assert rec["status"] == "Open ⋅ Closes 8:30 PM"
    assert rec["business_status"] == "OPERATIONAL"
    # Search results carry no plus code: the global code is computed from the coordinates.
    assert rec["plus_code"] is None
    assert rec["plus_code_global"] == olc_encode(38.0331931, 23.7094475)
    # Not in search payloads: left None, not guessed.
    assert rec["reviews_per_rating"] is None
    assert rec["thumbnail"] is None
    assert rec["owner"] is None
    assert rec["credit_cards"] == ["MasterCard"]


def test_search_result_greek_places(search: dict[str, dict[str, Any]]) -> None:
    berry = search["Coffee Berry Ίλιον"]
    assert berry["address"] == "Thivon 479, Ilion 131 21, Greece"
    assert berry["phone"] == "+30 21 0261 6833"
    assert (berry["rating"], berry["review_count"]) == (4.7, 111)
    assert (berry["price_range"], berry["price_range_text"]) == ("$", "Inexpensive")
    assert berry["open_hours"]["Saturday"] == ["6 AM–8:30 PM"]

    island = search["Coffee Island Άγιοι Ανάργυροι"]
    assert island["categories"] == ["Coffee shop", "Coffee store"]
    # The address line and the address parts use different transliterations: both as shown.
    assert island["address"] == "Ir. Politechniou 19, Agii Anargiri 135 61, Greece"
    assert (island["city"], island["postal_code"]) == ("Agioi Anargyroi", "135 61")
    assert island["website"] == (
        "https://www.coffeeisland.gr/?utm_campaign=website&utm_medium=organic&utm_source=google"
    )

    pita = search["Prima pita Ilion-Petroupoli handmade pies and coffee"]
    assert pita["street"] == "Ηρακλειτου, Propontidos και"
    assert pita["open_hours"]["Saturday"] == ["6 AM–3:30 PM"]
    assert pita["open_hours"]["Sunday"] == ["Closed"]


def test_search_result_payments_hours_and_categories(search: dict[str, dict[str, Any]]) -> None:
    assert search["Hermosa Coffee Co."]["credit_cards"] == [
        "American Express",
        "China Union Pay",
        "Diners Club",
        "Discover",
        "JCB",
        "MasterCard",
        "VISA",
    ]
    assert search["NooK"]["credit_cards"] == ["MasterCard", "VISA"]
    assert search["NooK"]["categories"] == [
        "Coffee shop",
        "Breakfast restaurant",
        "Coffee store",
        "Diner",
        "Restaurant",
    ]
    assert search["NooK"]["price_range"] == "$$"
    assert search["NooK"]["review_count"] == 1670
    assert search["Cocoza Speciality Coffee"]["credit_cards"] == []
    assert search["Cocoza Speciality Coffee"]["accepts_credit_cards"] is True
    # Race Coffee shows "Open now" but no weekly hours.
    race = search["Race Coffee"]
    assert race["open_hours"] is None
    assert race["status"] == "Open now"
    assert race["website"] == "http://www.racecoffee.gr/"


# --- opening hours in other languages ------------------------------------------------------


def _rows_without_dates(page: list[Any]) -> list[Any]:
    rows = page[6][34][1]
    for row in rows:
        row[4] = None  # no date: the day must come from its (Greek) name
    return rows


def test_weekday_names_map_to_english_when_no_date() -> None:
    page = load("raw2.json")
    _rows_without_dates(page)
    assert parse_place_page(page)["open_hours"] == parse_place_page(load("raw2.json"))["open_hours"]


@pytest.mark.parametrize(
    "names",
    [
        ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
        ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
        ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
        ["lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"],
        ["ΔΕΥΤΕΡΑ", "ΤΡΙΤΗ", "ΤΕΤΑΡΤΗ", "ΠΕΜΠΤΗ", "ΠΑΡΑΣΚΕΥΗ", "ΣΑΒΒΑΤΟ", "ΚΥΡΙΑΚΗ"],
        ["Monday (Labour Day)", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    ],
)
def test_weekday_names_in_other_languages(names: list[str]) -> None:
    darray = copy.deepcopy(load("panic.json")[6])
    darray[34][1] = [[name, [f"hours {i}"]] for i, name in enumerate(names)]
    hours = parse_place(darray)["open_hours"]
    assert hours == {day: [f"hours {i}"] for i, day in enumerate(WEEKDAYS)}


def test_numeric_day_index_is_used() -> None:
    # Search rows ([203][0]): [name, ISO day number, [y, m, d] | null, [[text, ...]], _, status].
    darray = copy.deepcopy(load("panic.json")[6])
    darray[34] = None
    darray[203] = [[["Nomen ignotum", 3, None, [["8–17"]], 0, 1], ["?", 7, None, [["Closed"]]]]]
    assert parse_place(darray)["open_hours"] == {"Wednesday": ["8–17"], "Sunday": ["Closed"]}


def test_unknown_day_name_is_skipped_not_kept() -> None:
    darray = copy.deepcopy(load("panic.json")[6])
    darray[34][1] = [["Xyzday", ["9–5"]], ["Friday", ["10–4"]]]
    assert parse_place(darray)["open_hours"] == {"Friday": ["10–4"]}


# --- business status -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        ("Permanently closed", "CLOSED_PERMANENTLY"),
        ("Μόνιμα κλειστό", "CLOSED_PERMANENTLY"),
        ("Dauerhaft geschlossen", "CLOSED_PERMANENTLY"),
        ("Temporarily closed", "CLOSED_TEMPORARILY"),
        ("Προσωρινά κλειστό", "CLOSED_TEMPORARILY"),
        ("Closed ⋅ Opens 12 pm Tue", "OPERATIONAL"),
    ],
)
def test_business_status_from_the_status_line(shown: str, expected: str) -> None:
    darray = copy.deepcopy(load("panic.json")[6])
    darray[34][4][4] = shown
    rec = parse_place(darray)
    assert (rec["status"], rec["business_status"]) == (shown, expected)


def test_hours_fall_back_to_the_second_hours_block() -> None:
    # [203] repeats the week as [name, ISO day number, [y, m, d], [[text, ...]], ...].
    darray = copy.deepcopy(load("raw2.json")[6])
    darray[34] = None
    rec = parse_place(darray)
    assert rec["open_hours"] == parse_place(load("raw2.json")[6])["open_hours"]
    assert rec["status"] == "Ανοιχτά ⋅ Κλείνει στις 11:30 μ.μ."


def test_no_hours_and_no_status_gives_no_business_status() -> None:
    darray = copy.deepcopy(load("panic.json")[6])
    darray[34] = darray[203] = None
    assert parse_place(darray)["business_status"] is None


# --- robustness ----------------------------------------------------------------------------

_JUNK: tuple[Any, ...] = (
    None, "x", 7, 2.5, True, {}, [], [[]], [None, "y", [3]], 10**400, float("nan"), -1,
)  # fmt: skip


@pytest.mark.parametrize("fixture", ["raw2.json", "panic.json"])
def test_any_top_level_part_oddly_shaped_gives_none_not_an_exception(fixture: str) -> None:
    darray = load(fixture)[6]
    for index in range(len(darray)):
        for junk in _JUNK:
            broken = list(darray)
            broken[index] = junk
            rec = parse_place(broken)
            assert tuple(rec) == FIELDS
    # Truncated arrays (Google sends shorter arrays for sparse places).
    for length in range(12, len(darray), 7):
        parse_place(darray[:length])


def _paths(node: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, list):
        for i, child in enumerate(node):
            out.extend(_paths(child, (*prefix, i)))
    return out


@pytest.mark.parametrize("fixture", ["raw2.json", "panic.json"])
def test_random_deep_damage_never_raises(fixture: str) -> None:
    darray = load(fixture)[6]
    # Keep the identity (data id, name, place id) so the array is still recognised as a place.
    paths = [p for p in _paths(darray) if p not in {(10,), (11,), (78,)}]
    rng = random.Random(3)
    for _ in range(200):
        broken = copy.deepcopy(darray)
        for path in rng.sample(paths, 25):
            parent = broken
            try:
                for i in path[:-1]:
                    parent = parent[i]
                parent[path[-1]] = rng.choice(_JUNK)
            except (TypeError, IndexError, KeyError):
                continue  # an earlier replacement already removed this path
        parse_place(broken)


def test_search_payload_with_odd_results_skips_them() -> None:
    payload = load("output.json")
    payload[0][1][2] = None
    payload[0][1][3] = ["not", "a", "result"]
    payload[0][1][4][14] = "x"
    recs = parse_search_results(payload)
    assert len(recs) == 17
    assert "Cocoza Speciality Coffee" not in {r["name"] for r in recs}


# --- detection and errors ------------------------------------------------------------------


def test_parse_file_detects_each_kind() -> None:
    assert parse_file(FIXTURES / "raw2.json") == [parse_place_page(load("raw2.json"))]
    assert parse_file(FIXTURES / "panic.json") == [parse_place_page(load("panic.json"))]
    assert parse_file(FIXTURES / "output.json") == parse_search_results(load("output.json"))
    # A bare place array is accepted too.
    assert parse_payload(load("raw2.json")[6]) == [parse_place(load("raw2.json")[6])]


def test_xssi_guard_and_wrapped_response_are_unwrapped(tmp_path: Path) -> None:
    text = (FIXTURES / "output.json").read_text(encoding="utf-8")
    guarded = tmp_path / "guarded.json"
    guarded.write_text(")]}'\n" + text, encoding="utf-8")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"c": 0, "d": ")]}'\n" + text}), encoding="utf-8")
    expected = parse_file(FIXTURES / "output.json")
    assert parse_file(guarded) == expected
    assert parse_file(wrapped) == expected


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "Dream Coffee", "rating": 4.8},
        [{"title": "x"}, {"title": "y"}],
        [1, 2, 3],
        "just a string",
        42,
        [],
        [["query", [[1], [2]]]],
    ],
)
def test_non_google_payload_is_rejected_clearly(payload: Any) -> None:
    with pytest.raises(NotGoogleMapsPayload, match="not a Google Maps payload") as err:
        parse_payload(payload)
    message = str(err.value)
    assert "search-results payload" in message
    assert "place-page state" in message
    assert "got a JSON" in message


def test_non_google_file_error_names_the_file(tmp_path: Path) -> None:
    other = tmp_path / "package.json"
    other.write_text(json.dumps({"name": "left-pad", "version": "1.3.0"}), encoding="utf-8")
    with pytest.raises(NotGoogleMapsPayload, match=r"package\.json: not a Google Maps payload"):
        parse_file(other)
    broken = tmp_path / "broken.json"
    broken.write_text("<html>Our systems have detected unusual traffic</html>", encoding="utf-8")
    with pytest.raises(NotGoogleMapsPayload, match=r"broken\.json: not a Google Maps payload"):
        parse_file(broken)


def test_specific_parsers_reject_the_wrong_shape() -> None:
    with pytest.raises(NotGoogleMapsPayload, match="place-page state"):
        parse_place_page(load("output.json"))
    with pytest.raises(NotGoogleMapsPayload, match="search-results payload"):
        parse_search_results(load("raw2.json"))
    with pytest.raises(NotGoogleMapsPayload, match="place array"):
        parse_place(load("raw2.json"))
    # NotGoogleMapsPayload is a ValueError, so generic handlers catch it.
    assert issubclass(NotGoogleMapsPayload, ValueError)


def test_olc_encode_matches_the_plus_codes_google_shows() -> None:
    assert olc_encode(34.670595399999996, 33.042456699999995) == "8G6MM2CR+6X"
    assert olc_encode(34.754666, 32.4197193) == "8G6JQC39+VV"


# --- command line --------------------------------------------------------------------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spiders.google_maps.parse", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=60,
    )


def test_cli_prints_one_json_line_per_place() -> None:
    done = run_cli(FIXTURES / "output.json", FIXTURES / "raw2.json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 21
    recs = [json.loads(line) for line in lines]
    assert recs[0]["name"] == "Dream Coffee"
    assert recs[-1]["name"] == "Κυπριακόν"
    assert recs[-1]["open_hours"]["Monday"] == ["9:00 π.μ.–11:30 μ.μ."]
    assert list(recs[-1])[: len(RAW_FIELDS)] == list(RAW_FIELDS)


def test_cli_rejects_a_non_google_file(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"hello": "world"}', encoding="utf-8")
    done = run_cli(other)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "other.json: not a Google Maps payload" in done.stderr
