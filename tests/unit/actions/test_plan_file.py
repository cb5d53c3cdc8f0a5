"""Reading the KRF recovery-cell action plans: the seed file as it really is, and broken rows."""

from collections import Counter
from pathlib import Path

import pytest

from services.actions.plan_file import CrossReference, ParsedAction, ParsedPlan, parse_plan

SEED = Path(__file__).parents[3] / "services" / "actions" / "data" / "krf-recovery-cell-action-plans.txt"

HEADINGS = "\t".join(
    [
        "Action No.",
        "Action to be taken",
        "Action to mitigate or action for opportunity? (Mitigate or Opportunity)",
        "Lead organisation or partnership",
        "Named Lead (if appropriate)",
        "Timescale Short: 0-6 months, Medium: 6-12months Longer: 12months+",
        "Resources / capacity required",
        "Priority Essential, Important or Desirable",
    ]
)


def action_row(
    number: str = "1",
    *,
    action: str = "Launch a campaign",
    kind: str = "Mitigate",
    lead: str = "KCC",
    named_lead: str = "Jo James",
    timescale: str = "Short Term",
    resources: str = "Staff time",
    priority: str = "Important",
) -> str:
    return "\t".join([number, action, kind, lead, named_lead, timescale, resources, priority])


def plan_text(*rows: str, cell: str = "Economy") -> str:
    """A one-cell plan: heading on line 1, blank line 2, column headings line 3, rows from line 4."""
    return "\n".join([f"{cell} - Recovery Action Plan", "", HEADINGS, *rows])


@pytest.fixture(scope="module")
def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def plan(seed_text: str) -> ParsedPlan:
    return parse_plan(seed_text)


def action(plan: ParsedPlan, cell: str, number: int) -> ParsedAction:
    return next(a for a in plan.actions if a.cell_slug == cell and a.number == number)


# --- the seed file ------------------------------------------------------------------------


def test_seed_file_yields_every_action_of_every_cell(plan):
    assert plan.errors == []
    assert len(plan.actions) == 155
    per_cell = Counter(a.cell for a in plan.actions)
    assert per_cell == {
        "Economy": 16,
        "Infrastructure": 58,
        "Children and Young People": 11,
        "Health and Social Care": 19,
        "District and Communities": 11,
        "Voluntary Sector": 23,
        "Finance": 17,
    }
    for cell, count in per_cell.items():
        numbers = [a.number for a in plan.actions if a.cell == cell]
        assert numbers == list(range(1, count + 1)), cell


def test_cells_have_stable_slugs(plan):
    slugs = {a.cell: a.cell_slug for a in plan.actions}
    assert slugs == {
        "Economy": "economy",
        "Infrastructure": "infrastructure",
        "Children and Young People": "children-and-young-people",
        "Health and Social Care": "health-and-social-care",
        "District and Communities": "district-and-communities",
        "Voluntary Sector": "voluntary-sector",
        "Finance": "finance",
    }


def test_the_last_action_is_read_although_the_file_has_no_final_newline(seed_text, plan):
    assert not seed_text.endswith("\n")
    last = plan.actions[-1]
    assert (last.cell_slug, last.number, last.priority) == ("finance", 17, "Important")
    assert last.row == 222


def test_each_action_knows_the_line_it_starts_on(plan):
    assert action(plan, "economy", 1).row == 21
    assert action(plan, "infrastructure", 56).row == 109
    assert action(plan, "health-and-social-care", 1).row == 133


def test_infrastructure_actions_keep_their_theme(plan):
    infrastructure = [a for a in plan.actions if a.cell_slug == "infrastructure"]
    per_theme = Counter(a.theme for a in infrastructure)
    assert per_theme == {
        "Whole cell": 4,
        "Housing and Commercial Delivery": 19,
        "Digital and ICT Infrastructure": 13,
        "Transport": 8,
        "Environment and Green Infrastructure": 11,
        "Waste": 3,
    }
    assert action(plan, "infrastructure", 4).theme == "Whole cell"
    assert action(plan, "infrastructure", 5).theme == "Housing and Commercial Delivery"
    assert action(plan, "infrastructure", 36).theme == "Digital and ICT Infrastructure"
    assert action(plan, "infrastructure", 37).theme == "Transport"
    assert action(plan, "infrastructure", 55).theme == "Environment and Green Infrastructure"
    assert action(plan, "infrastructure", 58).theme == "Waste"


def test_other_cells_have_no_theme_and_themes_do_not_leak_into_the_next_cell(plan):
    assert {a.theme for a in plan.actions if a.cell_slug != "infrastructure"} == {None}
    assert action(plan, "children-and-young-people", 1).theme is None


def test_mitigate_opportunity_spellings_are_normalised(plan):
    assert Counter(a.kind for a in plan.actions) == {"opportunity": 83, "mitigate": 57, "both": 15}
    both = Counter(a.kind_text for a in plan.actions if a.kind == "both")
    assert both == {
        "Mitigate / Opportunity": 4,
        "Mitigate & Opportunity": 3,
        "Opportunity / Mitigate": 2,
        "Mitigate and Opportunity": 1,
        "Mitigate and opportunity": 1,
        "Opportunity/ Mitigate": 1,
        "Opportunity and Mitigate": 1,
        "Mitigate/ Opportunity": 1,
        "Mitigate Opportunity": 1,
    }
    future_risks = action(plan, "voluntary-sector", 20)
    assert (future_risks.kind, future_risks.kind_text) == ("mitigate", "Mitigate future risks")


def test_timescale_bands_are_normalised_and_the_plans_wording_kept(plan):
    assert Counter(a.timescale for a in plan.actions) == {"short": 74, "medium": 49, "longer": 32}
    assert Counter(a.timescale_text for a in plan.actions) == {
        "Short Term": 74,
        "Medium Term": 49,
        "Longer Term": 32,
    }


def test_priorities_are_kept_as_the_plan_states_them(plan):
    assert Counter(a.priority for a in plan.actions) == {"Important": 69, "Essential": 65, "Desirable": 21}


def test_ongoing_prefix_is_a_flag_not_text(plan):
    ongoing = [a for a in plan.actions if a.ongoing]
    assert [(a.cell_slug, a.number) for a in ongoing] == [("economy", 10)]
    assert ongoing[0].description == (
        "Consider how existing strategies and plans (e.g. Energy and Low Emissions Strategy) "
        "can contribute to economic recovery and resilience"
    )
    assert not any("[Ongoing]" in a.description or "[Ongoing]" in a.title for a in plan.actions)


@pytest.mark.parametrize("prefix", ["[Ongoing] ", "[ongoing]", "(On-going) ", "[On going] "])
def test_ongoing_prefix_variants_are_recognised(prefix):
    parsed = parse_plan(plan_text(action_row(action=f"{prefix}Keep the helpline open")))
    assert parsed.actions[0].ongoing
    assert parsed.actions[0].description == "Keep the helpline open"


def test_html_bullets_become_clean_text(plan):
    assert action(plan, "health-and-social-care", 2).description == (
        "Implement in partnership, mental health recovery actions focussed on\n"
        "- Children, young people and families most impacted by COVID-19\n"
        "- new mothers and fathers\n"
        "- children and adults who have been treated for COVID-19 in high risk units and for those bereaved\n"
        "- those at risk of suicide\n"
        "- the health and social care workforce"
    )
    # the Word checkbox after the last bullet is dropped
    assert action(plan, "health-and-social-care", 15).description.endswith(
        "- bed capacity modelling and bed management,\n- roll out of Frailty Home Treatment Service"
    )


def test_html_paragraphs_become_lines(plan):
    assert action(plan, "children-and-young-people", 2).description.startswith(
        "Return to School Plan\nSupport schools and early years settings"
    )
    assert action(plan, "finance", 15).description == (
        "Climate Change and Biodiversity\n"
        "Identify any Kent-wide projects that may be brought forward to support individual authorities' "
        "climate change targets."
    )
    assert action(plan, "voluntary-sector", 16).description.endswith(
        "(This will follow the lessons learnt and workforce training in the short term actions)."
    )


def test_no_markup_is_left_but_less_than_and_greater_than_in_prose_survive(plan):
    for a in plan.actions:
        for text in (a.description, a.resources, a.lead_organisation_text, a.named_lead_text):
            assert "<p>" not in text and "<ul" not in text and "<i>" not in text and "•" not in text
            assert "☐" not in text
            assert text == text.strip() and "  " not in text
    assert "schemes <75 homes' and ii) S106 Affordable Housing Grant Available if over-perform by >30%." in (
        action(plan, "infrastructure", 9).description
    )


def test_dash_lists_in_plain_text_become_bullets(plan):
    assert action(plan, "infrastructure", 40).description == (
        "To lobby government as follows:\n"
        "- To continue to provide COVID-19 Bus Services Support Grant (CBSSG) until social distancing "
        "on public transport and in wider society removed.\n"
        "- To provide ring fenced funding to local authorities for the provision of additional public "
        "transport to enable return of schools in September.\n"
        "- To provide additional funding for dedicated school transport for September.\n"
        "- To provide greater clarity on social distancing on public transport."
    )
    # a dash inside a sentence is not a bullet
    assert action(plan, "infrastructure", 37).description == (
        "Delivery of COVID-19 Emergency Active Travel Fund projects - 1st Tranche"
    )


def test_titles_use_the_plans_own_headings(plan):
    assert action(plan, "children-and-young-people", 2).title == "Return to School Plan"
    assert action(plan, "voluntary-sector", 1).title == "Funding"
    assert action(plan, "district-and-communities", 1).title == "Opening of Town Centres"
    assert action(plan, "finance", 7).title == "Cost the KRF Recovery Action Plans and identify funding"
    assert action(plan, "finance", 2).title == "Lobbying point 1"


def test_titles_without_a_heading_are_the_first_sentence(plan):
    assert action(plan, "infrastructure", 18).title == "Retrofitting of public sector estates to get to net zero"
    assert action(plan, "economy", 10).title == (
        "Consider how existing strategies and plans (e.g. Energy and Low Emissions Strategy) "
        "can contribute to economic recovery and resilience"
    )
    assert action(plan, "health-and-social-care", 8).title == (
        "Ensure rapid catch up of health assessments for: "
        "Looked After Children including Unaccompanied Asylum Seeking Children"
    )
    assert action(plan, "health-and-social-care", 10).title == "Work with Housing authorities to …"
    assert all(a.title and "\n" not in a.title for a in plan.actions)


def test_cross_references_become_links(plan):
    linked = {(a.cell_slug, a.number): a.cross_references for a in plan.actions if a.cross_references}
    assert linked == {
        ("economy", 1): (CrossReference("infrastructure", 27),),  # "Also links to Infrastructure Action 27."
        ("economy", 9): (CrossReference("infrastructure", 3),),  # "(linked with Infrastructure Cell Action 3)"
        # named lead: "David Smith, with actions sequential to Actions 7 and 8 above"
        ("economy", 15): (CrossReference("economy", 7), CrossReference("economy", 8)),
    }
    assert "Also links to Infrastructure Action 27." in action(plan, "economy", 1).description


@pytest.mark.parametrize(
    ("text", "links"),
    [
        ("See Finance Action 3", [("finance", 3)]),
        (
            "links to District & Communities Action 2 and Voluntary Sector Actions 4 and 5",
            [("district-and-communities", 2), ("voluntary-sector", 4), ("voluntary-sector", 5)],
        ),
        ("with the Health and Social Care Recovery Cell action 11", [("health-and-social-care", 11)]),
        ("Actions in Finance Action Plan for Kent Finance Officers' Group", []),
    ],
)
def test_cross_reference_wordings(text, links):
    parsed = parse_plan(plan_text(action_row(action=f"Do it. {text}")))
    assert [tuple(link) for link in parsed.actions[0].cross_references] == links


def test_named_leads_are_people_without_their_roles(plan):
    def leads(cell, number):
        return action(plan, cell, number).named_leads

    assert leads("infrastructure", 9) == ("Jo Ellis", "Mark Pullin", "Nick Fenton", "Brian Horton")
    assert leads("infrastructure", 39) == ("Andrew Loosemore", "Kirstie Williams", "Mandy Francis")
    assert leads("infrastructure", 46) == ("Nick Johannsen",)
    assert leads("economy", 9) == ("David Smith", "Lee Burchill", "Sarah Nurden")  # "Medway: tbc" dropped
    assert leads("children-and-young-people", 2) == ("David Adams", "Rebecca Smith")  # not "Headteachers"
    assert leads("health-and-social-care", 5) == (
        "Jess Mookherjee",
        "Vicky Tovey",
        "Rachel Kennard",
        "Jo Friend",
        "James Harman",
    )
    assert leads("district-and-communities", 3) == ("Amanda Beer", "William Benson")  # no separator in the plan
    assert leads("district-and-communities", 5) == ("Sam Sheppard",)  # "DCRC Sam Sheppard"
    assert leads("voluntary-sector", 1) == ("Josephine McCartney", "Lydia Jackson")
    assert leads("voluntary-sector", 5) == ("Lydia Jackson", "Debra Exall", "Tim Woolmer")
    assert leads("voluntary-sector", 14) == ("Beth Peal", "Lydia Jackson")


def test_leads_that_name_no_person_keep_the_plans_words(plan):
    for cell, number, text in [
        ("economy", 6, "n/a"),
        ("economy", 11, "tbc"),
        ("voluntary-sector", 7, ""),
        ("district-and-communities", 1, "Chairs of these groups"),
        ("finance", 1, "Kent & Medway Chief Finance Officers collectively"),
    ]:
        a = action(plan, cell, number)
        assert (a.named_leads, a.named_lead_text) == ((), text)
    assert action(plan, "infrastructure", 3).named_lead_text.startswith(
        "David Smith - Director of Economic Development / Sarah Nurden- Strategic Programme Manager"
    )


def test_lead_organisations_are_split_into_partners(plan):
    def organisations(cell, number):
        return action(plan, cell, number).lead_organisations

    assert organisations("economy", 2) == (
        "KCC",
        "Medway Council",
        "Kent Districts",
        "Kent Invicta Chamber of Commerce",
    )
    assert organisations("infrastructure", 5) == ("Kent County Council", "Medway Council", "All District / Boroughs")
    assert organisations("infrastructure", 13) == ("Kent County Council",)  # "Kent County Council /"
    assert organisations("children-and-young-people", 7) == ("KCC", "Medway Council", "NHS", "Schools")
    assert organisations("finance", 4) == ("Kent Finance Officers' Group", "Individual councils", "partners")
    # commas inside brackets do not split; the plan gives no separator before "Households"
    assert organisations("district-and-communities", 8) == (
        "DCRC KHG and relevant subgroups (KHOG, HHSCG and Kent Private Sector Housing Group [KPSHG]) "
        "Households in Financial Crisis Task & Finish Group",
    )
    assert organisations("health-and-social-care", 13) == ("KRF Communications Cell",)
    assert action(plan, "health-and-social-care", 13).lead_organisation_text == (
        "Cross reference to KRF Communications Cell"
    )


def test_resources_column_is_kept_as_clean_text(plan):
    assert action(plan, "economy", 1).resources == (
        "Staff capacity within Visit Kent. Additional resources (£50k) committed by KCC"
    )
    assert action(plan, "children-and-young-people", 4).resources == "Yes - Resources Required"


def test_windows_line_endings_and_a_byte_order_mark_read_the_same(seed_text, plan):
    assert parse_plan("\ufeff" + seed_text.replace("\n", "\r\n")) == plan


# --- rows that cannot be read -------------------------------------------------------------


def test_malformed_row_is_reported_with_its_row_number(seed_text):
    lines = seed_text.split("\n")
    assert lines[24].startswith("5\tRedeploy Kent and Medway Business Fund")
    lines[24] = lines[24].replace("\tOpportunity\t", "\tPerhaps\t")

    parsed = parse_plan("\n".join(lines))

    assert len(parsed.errors) == 1
    error = parsed.errors[0]
    assert (error.row, error.cell) == (25, "Economy")
    assert "'Perhaps' is neither Mitigate nor Opportunity" in error.reason
    assert len(parsed.actions) == 154
    assert [a.number for a in parsed.actions if a.cell_slug == "economy"][3:5] == [4, 6]


def test_every_broken_row_is_reported_and_the_good_rows_still_read():
    parsed = parse_plan(
        plan_text(
            action_row("1"),  # line 4
            action_row("One"),  # line 5
            "\t".join(["2", "Launch a campaign", "Mitigate", "KCC"]),  # line 6
            action_row("3", timescale="Soon"),  # line 7
            action_row("4", priority="Urgent"),  # line 8
            action_row("1"),  # line 9
            action_row("5", action=""),  # line 10
            action_row("6"),  # line 11
        )
    )
    assert [a.number for a in parsed.actions] == [1, 6]
    assert [(e.row, e.cell) for e in parsed.errors] == [
        (5, "Economy"),
        (6, "Economy"),
        (7, "Economy"),
        (8, "Economy"),
        (9, "Economy"),
        (10, "Economy"),
    ]
    reasons = [e.reason for e in parsed.errors]
    assert "action number 'One' is not a whole number" in reasons[0]
    assert "expected 8 columns, found 4" in reasons[1]
    assert "timescale 'Soon'" in reasons[2]
    assert "priority 'Urgent'" in reasons[3]
    assert "action 1 already appears at row 4" in reasons[4]
    assert "no action to be taken" in reasons[5]


def test_unknown_cell_is_reported_and_its_actions_are_not_filed_elsewhere():
    parsed = parse_plan(plan_text(action_row("1"), cell="Vulnerable People"))
    assert parsed.actions == []
    assert [(e.row, e.cell) for e in parsed.errors] == [(1, None), (4, None)]
    assert "'Vulnerable People' is not one of the recovery cells" in parsed.errors[0].reason


def test_cell_headings_are_matched_whatever_their_dash_or_ampersand():
    text = "\n".join(["District & Communities – Recovery Action Plan", HEADINGS, action_row("1")])
    parsed = parse_plan(text)
    assert parsed.errors == []
    assert [(a.cell, a.cell_slug) for a in parsed.actions] == [("District and Communities", "district-and-communities")]


def test_stray_quote_mark_is_reported_without_losing_the_rows_after_it():
    parsed = parse_plan(
        plan_text(
            action_row("1"),
            action_row("2", action='"Unclosed quote then text'),
            action_row("3"),
        )
    )
    assert [a.number for a in parsed.actions] == [1, 3]
    assert [(e.row, e.cell) for e in parsed.errors] == [(5, "Economy")]
    assert "quote" in parsed.errors[0].reason


def test_quoted_cell_may_span_lines():
    parsed = parse_plan(
        plan_text(
            action_row("1", action='"First paragraph\nSecond paragraph with ""quotes"""'),
            action_row("2"),
        )
    )
    assert parsed.errors == []
    first, second = parsed.actions
    assert first.description == 'First paragraph\nSecond paragraph with "quotes"'
    assert (first.row, second.row) == (4, 6)


def test_title_page_and_contents_are_not_actions_or_errors():
    text = "KRF COVID-19 Recovery Strategy\n\nContents\tPage\nEconomy\t2\n\n" + plan_text(action_row("1"))
    parsed = parse_plan(text)
    assert parsed.errors == []
    assert [a.row for a in parsed.actions] == [9]
