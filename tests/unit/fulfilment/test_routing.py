"""Routing a request from the resident's postcode: a hub, out of area, or triage."""

import pytest

from services.fulfilment.hubs import (
    KENT_HUBS,
    Hub,
    RoutingOutcome,
    hub_reference_data_problems,
    route,
)
from services.fulfilment.postcodes import Council

MEDWAY = Council("E06000035", "Medway")


def route_postcode(directory, postcode, hubs=KENT_HUBS):
    return route(directory.lookup(postcode), hubs)


def test_thanet_postcode_routes_to_thanet_hub(directory):
    decision = route_postcode(directory, "ct9 1xz")  # Thanet District Council, Margate

    assert decision.outcome is RoutingOutcome.HUB
    assert decision.hub.slug == "thanet"
    assert decision.postcode == "CT9 1XZ"
    assert decision.district == Council("E07000114", "Thanet")


@pytest.mark.parametrize(
    ("postcode", "slug"),
    [
        # Each district council's own offices.
        ("TN23 1PL", "ashford"),
        ("CT1 1YW", "canterbury"),
        ("DA1 1DR", "dartford"),
        ("CT16 3PJ", "dover"),
        ("DA12 1AU", "gravesham"),
        ("ME15 6JQ", "maidstone"),
        ("TN13 1HG", "sevenoaks"),
        ("CT20 2QY", "folkestone-hythe"),
        ("ME10 3HT", "swale"),
        ("CT9 1XZ", "thanet"),
        ("ME19 4LZ", "tonbridge-malling"),
        ("TN1 1RS", "tunbridge-wells"),
    ],
)
def test_every_kent_district_has_postcodes_routed_to_its_hub(directory, postcode, slug):
    decision = route_postcode(directory, postcode)

    assert decision.outcome is RoutingOutcome.HUB
    assert decision.hub.slug == slug


def test_sevenoaks_villages_in_the_bromley_postcode_area_route_to_sevenoaks(directory):
    decision = route_postcode(directory, "BR8 8HL")  # Swanley

    assert decision.hub.slug == "sevenoaks"


def test_medway_postcode_goes_out_of_area_naming_medway(directory):
    decision = route_postcode(directory, "ME4 4TR")  # Gun Wharf, Chatham

    assert decision.outcome is RoutingOutcome.OUT_OF_AREA
    assert decision.council == MEDWAY
    assert decision.hub is None
    assert "Medway" in decision.reason


@pytest.mark.parametrize(
    ("postcode", "borough"),
    [
        ("SE1 7PB", Council("E09000022", "Lambeth")),
        ("DA6 7AT", Council("E09000004", "Bexley")),  # a DA postcode that is not Kent's
        ("BR1 3UH", Council("E09000006", "Bromley")),
    ],
)
def test_london_postcode_names_its_borough(directory, postcode, borough):
    decision = route_postcode(directory, postcode)

    assert decision.outcome is RoutingOutcome.OUT_OF_AREA
    assert decision.council == borough


def test_east_sussex_postcode_names_the_county_and_keeps_the_district(directory):
    decision = route_postcode(directory, "TN22 1AA")  # Uckfield

    assert decision.outcome is RoutingOutcome.OUT_OF_AREA
    assert decision.council == Council("E10000011", "East Sussex")
    assert decision.district == Council("E07000065", "Wealden")


def test_unknown_postcode_goes_to_triage_with_reason(directory):
    decision = route_postcode(directory, "CT9 9XX")

    assert decision.outcome is RoutingOutcome.TRIAGE
    assert decision.postcode == "CT9 9XX"
    assert "not in the ONS postcode directory" in decision.reason


def test_invalid_postcode_goes_to_triage_with_reason(directory):
    decision = route_postcode(directory, "Margate")

    assert decision.outcome is RoutingOutcome.TRIAGE
    assert decision.postcode is None
    assert "not a valid UK postcode" in decision.reason


def test_postcode_without_a_council_goes_to_triage_with_reason(directory):
    decision = route_postcode(directory, "BR98 3XA")

    assert decision.outcome is RoutingOutcome.TRIAGE
    assert "without a local authority" in decision.reason


def test_triage_reasons_do_not_repeat_the_postcode(directory):
    # Reasons may travel in status events, which carry no addresses.
    for postcode in ["CT9 9XX", "BR98 3XA"]:
        assert postcode not in route_postcode(directory, postcode).reason


def test_kent_district_without_a_hub_goes_to_triage_not_out_of_area(directory):
    hubs_without_thanet = [hub for hub in KENT_HUBS if hub.slug != "thanet"]

    decision = route_postcode(directory, "CT9 1XZ", hubs=hubs_without_thanet)

    assert decision.outcome is RoutingOutcome.TRIAGE
    assert decision.district == Council("E07000114", "Thanet")
    assert "has no hub" in decision.reason


def test_hubs_are_the_twelve_public_slugs():
    assert [hub.slug for hub in KENT_HUBS] == [
        "ashford",
        "canterbury",
        "dartford",
        "dover",
        "gravesham",
        "maidstone",
        "sevenoaks",
        "folkestone-hythe",
        "swale",
        "thanet",
        "tonbridge-malling",
        "tunbridge-wells",
    ]
    assert {hub.district_code for hub in KENT_HUBS} == {f"E07000{n}" for n in range(105, 117)}


def test_hub_districts_match_the_ons_reference_data(directory):
    assert hub_reference_data_problems(KENT_HUBS, directory) == []


def test_folkestone_and_hythe_kept_shepways_district_code(directory):
    assert directory.district("E07000112") == Council("E07000112", "Folkestone and Hythe")


def test_changed_district_code_is_reported_before_it_misroutes(directory):
    stale = [Hub("thanet", "Thanet", "E07000999"), Hub("dover", "Dover Town", "E07000108")]

    problems = hub_reference_data_problems(stale, directory)

    assert problems == [
        "thanet: district code E07000999 is not in the authorities data",
        "dover: E07000108 is named 'Dover', not 'Dover Town'",
    ]
