"""What is personal is said once (contract fields, sealed columns); topics, erasure and docs/privacy.md derive from it."""

from pathlib import Path

from services.referrals.models import sealing as referrals_sealing
from shared import privacy
from shared.events import REGISTRY, ReferralReceivedV1, RequestReceivedV1, personal_fields
from shared.settings import Topics

DOCS = Path(__file__).resolve().parents[3] / "docs"
START, END = "<!-- inventory: generated from the declarations (shared/privacy.py inventory) -->", "<!-- /inventory -->"


def test_docs_privacy_lists_what_the_contracts_and_sealed_columns_declare_personal():
    text = (DOCS / "privacy.md").read_text()
    listed = text[text.index(START) + len(START) : text.index(END)].strip() + "\n"
    assert listed == privacy.inventory({"referrals": referrals_sealing}), (
        "paste privacy.inventory() into docs/privacy.md"
    )


def test_a_contract_with_a_personal_field_is_personal_and_its_topics_are_sealed():
    topics = Topics()
    assert ReferralReceivedV1.personal_data and "resident.address.line1" in personal_fields(ReferralReceivedV1)
    assert not RequestReceivedV1.personal_data and personal_fields(RequestReceivedV1) == []
    assert topics.personal(topics.referrals) and topics.personal(topics.hub("thanet"))
    for contract in REGISTRY.values():
        for field in contract.topics:
            if "{" not in getattr(topics, field) and not topics.personal(getattr(topics, field)):
                assert not contract.personal_data, f"{contract.type} is personal on a topic that is not sealed"


def test_erasure_replaces_every_personal_field_of_a_referral_event_and_keeps_the_district():
    data = ReferralReceivedV1.model_validate(
        {
            "referral_id": "5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f00",
            "reference": "KT-AAAA-BBBB",
            "channel": "phone",
            "received_at": "2020-04-01T10:00:00Z",
            "consent_to_share": True,
            "resident": {
                "name": "Margaret Jones",
                "phone": "+441843577000",
                "date_of_birth": "1941-03-02",
                "address": {"line1": "12 Northdown Road", "town": "Margate", "postcode": "CT9 2RN"},
                "vulnerabilities": ["shielding"],
                "language": "Polish",
            },
            "referrer": {"name": "Dr Patel", "organisation": "Northdown Surgery"},
            "requests": [
                {
                    "request_id": "5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f01",
                    "type": "food",
                    "details": "diabetic",
                    "urgency": "today",
                }
            ],
        }
    ).model_dump(mode="json")

    erased = str(privacy.redact(data))

    for secret in (
        "Margaret",
        "577000",
        "1941",
        "Northdown",
        "Margate",
        "2RN",
        "shielding",
        "Polish",
        "Patel",
        "diabetic",
    ):
        assert secret not in erased
    assert "'postcode': 'CT9'" in erased and "KT-AAAA-BBBB" in erased
