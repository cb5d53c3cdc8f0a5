"""Sealing personal data: keys from the environment, rotation, clear errors, and production refusing development keys."""

import pytest

from services.referrals.app import ReferralsSettings
from shared.crypto import CannotOpen, CryptoError, Keyring, UnknownKey, is_sealed, new_key

OLD, NEW, INDEX = new_key(), new_key(), new_key()


def keyring(data_keys: str, index: str = INDEX) -> Keyring:
    return Keyring.from_text(data_keys, index)


def test_a_sealed_value_opens_to_what_was_sealed_and_shows_nothing_of_it():
    ring = keyring(f"k1:{OLD}")
    sealed = ring.seal(b"Margaret Jones, 01843 577000")
    assert is_sealed(sealed) and b"Margaret" not in sealed and b"577000" not in sealed
    assert ring.open(sealed) == b"Margaret Jones, 01843 577000"
    assert ring.seal(b"same") != ring.seal(b"same")  # a fresh nonce each time
    assert ring.open_json(ring.seal_json({"name": "Jo", "dob": None})) == {"name": "Jo", "dob": None}
    assert ring.seal_text(None) is None and ring.open_text(ring.seal_text("note")) == "note"


def test_a_row_field_is_sealed_into_its_column_and_opened_back_beside_it():
    ring = keyring(f"k1:{OLD}")
    stored = ring.seal_field({"id": "r1", "details": "Weekly shop, no dairy"}, "details", into="sealed_details")
    assert set(stored) == {"id", "sealed_details"} and b"dairy" not in stored["sealed_details"]
    assert ring.open_field(stored, "sealed_details", as_="details")["details"] == "Weekly shop, no dairy"
    empty = ring.seal_field({"id": "r2", "details": None}, "details", into="sealed_details")
    assert empty["sealed_details"] is None
    assert ring.open_field(empty, "sealed_details", as_="details")["details"] is None


def test_a_rotated_keyring_opens_old_values_and_seals_with_the_new_key():
    before = keyring(f"k1:{OLD}")
    old_value = before.seal(b"sealed last year")
    rotated = keyring(f"k2:{NEW},k1:{OLD}")
    assert rotated.open(old_value) == b"sealed last year"
    new_value = rotated.seal(b"sealed today")
    assert rotated.key_id_of(new_value) == "k2" and rotated.key_id_of(old_value) == "k1"
    with pytest.raises(UnknownKey, match="'k2'"):
        before.open(new_value)


def test_a_missing_key_a_wrong_key_or_changed_bytes_is_a_clear_error_not_garbage():
    sealed = keyring(f"k1:{OLD}").seal(b"Margaret Jones")
    with pytest.raises(UnknownKey, match="data key 'k1', which KT_DATA_KEYS does not hold"):
        keyring(f"k2:{NEW}").open(sealed)
    with pytest.raises(CannotOpen, match="not the one that sealed it"):
        keyring(f"k1:{NEW}").open(sealed)  # another key under the same id
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(CannotOpen):
        keyring(f"k1:{OLD}").open(tampered)
    relabelled = sealed.replace(b"kt1:k1:", b"kt1:k2:")  # the header is authenticated too
    with pytest.raises(CannotOpen):
        keyring(f"k2:{OLD}").open(relabelled)


@pytest.mark.parametrize(
    "data_keys, reason",
    [
        ("", "holds no key"),
        ("k1", "id:base64key"),
        ("k1:not base64!", "not base64"),
        (f"k1:{OLD[:20]}", "32 bytes"),
        (f"k1:{OLD},k1:{NEW}", "twice"),
    ],
    ids=["empty", "no-colon", "not-base64", "short-key", "id-twice"],
)  # fixed ids: the keys are random
def test_a_malformed_keyring_is_refused_with_the_reason(data_keys, reason):
    with pytest.raises(CryptoError, match=reason):
        keyring(data_keys)


def test_blind_indexes_match_equal_values_only_and_differ_by_purpose_and_key():
    ring = keyring(f"k1:{OLD}")
    assert ring.blind_index("phone", "+441843577000") == ring.blind_index("phone", "+441843577000")
    assert ring.blind_index("phone", "+441843577000") != ring.blind_index("phone", "+441843577001")
    assert ring.blind_index("name-word", "jones") != ring.blind_index("name", "jones")
    assert keyring(f"k1:{OLD}", new_key()).blind_index("name", "jones") != ring.blind_index("name", "jones")
    assert len(ring.blind_index("postcode", "CT9 2RN")) == 32


# -- where the keys come from


def test_development_keys_are_made_once_in_var_and_shared(tmp_path):
    first = ReferralsSettings(var_dir=tmp_path).keyring()
    second = ReferralsSettings(var_dir=tmp_path).keyring()
    assert second.open(first.seal(b"x")) == b"x"
    assert first.sealing_key_id.startswith("dev")
    assert (tmp_path / "dev-data-keys").stat().st_mode & 0o777 == 0o600


def test_configured_keys_are_used_and_never_shown(tmp_path):
    settings = ReferralsSettings(var_dir=tmp_path, data_keys=f"k2:{NEW},k1:{OLD}", blind_index_key=INDEX)
    assert settings.keyring().sealing_key_id == "k2"
    assert not (tmp_path / "dev-data-keys").exists()
    for shown in (repr(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert NEW not in shown and INDEX not in shown


def test_production_refuses_to_start_without_data_keys(tmp_path):
    settings = ReferralsSettings(var_dir=tmp_path, environment="production", jwt_jwks_url="https://idp.example/jwks")
    with pytest.raises(RuntimeError, match="production needs KT_DATA_KEYS and KT_BLIND_INDEX_KEY"):
        settings.keyring()
    assert not (tmp_path / "dev-data-keys").exists()


def test_production_refuses_half_a_configuration(tmp_path):
    settings = ReferralsSettings(
        var_dir=tmp_path, environment="production", jwt_jwks_url="https://idp.example/jwks", data_keys=f"k1:{OLD}"
    )
    with pytest.raises(RuntimeError, match="both KT_DATA_KEYS and KT_BLIND_INDEX_KEY"):
        settings.keyring()


def test_production_refuses_the_development_keys(tmp_path):
    dev_text = (ReferralsSettings(var_dir=tmp_path).keyring(), (tmp_path / "dev-data-keys").read_text().split())[1]
    production = dict(var_dir=tmp_path, environment="production", jwt_jwks_url="https://idp.example/jwks")
    with pytest.raises(RuntimeError, match="development data keys are refused in production"):
        ReferralsSettings(**production, data_keys=dev_text[0], blind_index_key=dev_text[1]).keyring()
    renamed = "k1:" + dev_text[0].split(":", 1)[1]  # the development key's bytes under a production-looking id
    with pytest.raises(RuntimeError, match="development data keys are refused in production"):
        ReferralsSettings(**production, data_keys=renamed, blind_index_key=INDEX).keyring()
    assert (
        ReferralsSettings(**production, data_keys=f"k1:{OLD}", blind_index_key=INDEX).keyring().sealing_key_id == "k1"
    )


def test_in_production_referrals_does_not_start_without_keys_and_reporting_needs_none(tmp_path):
    from services.referrals.models import tables as referrals_tables
    from services.reporting.app import ReportingSettings
    from services.reporting.models import tables as reporting_tables
    from shared.app import build_runtime

    production = dict(var_dir=tmp_path, environment="production", jwt_jwks_url="https://idp.example/jwks")
    with pytest.raises(RuntimeError, match="production needs KT_DATA_KEYS"):
        build_runtime(ReferralsSettings(**production), referrals_tables)
    assert build_runtime(ReportingSettings(**production), reporting_tables).keyring is None  # it holds no personal data


def test_while_the_index_key_is_rotated_lookups_match_either_key_and_indexes_are_made_with_the_new_one():
    old_index, new_index = new_key(), new_key()
    before = Keyring.from_text(f"k1:{OLD}", old_index)
    during = Keyring.from_text(f"k1:{OLD}", new_index, old_index)
    after = Keyring.from_text(f"k1:{OLD}", new_index)
    stored_before = before.blind_index("phone", "+441843577000")
    assert before.blind_indexes("phone", "+441843577000") == (stored_before,) and not before.has_previous_index_key
    assert during.has_previous_index_key
    assert during.blind_index("phone", "+441843577000") == after.blind_index("phone", "+441843577000") != stored_before
    assert during.blind_indexes("phone", "+441843577000") == (
        after.blind_index("phone", "+441843577000"),
        stored_before,
    )
    assert Keyring.from_text(f"k1:{OLD}", new_index, new_index).blind_indexes("phone", "x") == (
        after.blind_index("phone", "x"),
    )  # the same key twice is one key
    with pytest.raises(CryptoError, match="KT_BLIND_INDEX_KEY_PREVIOUS"):
        Keyring.from_text(f"k1:{OLD}", new_index, "short")


def test_the_previous_index_key_is_read_from_the_environment_with_the_others(monkeypatch, tmp_path):
    old_index, new_index = new_key(), new_key()
    monkeypatch.setenv("KT_DATA_KEYS", f"k1:{OLD}")
    monkeypatch.setenv("KT_BLIND_INDEX_KEY", new_index)
    monkeypatch.setenv("KT_BLIND_INDEX_KEY_PREVIOUS", old_index)
    ring = ReferralsSettings(var_dir=tmp_path).keyring()
    assert ring.blind_indexes("name", "jones")[1] == Keyring.from_text(f"k1:{OLD}", old_index).blind_index(
        "name", "jones"
    )
    monkeypatch.delenv("KT_BLIND_INDEX_KEY")
    monkeypatch.delenv("KT_DATA_KEYS")
    with pytest.raises(RuntimeError, match="KT_BLIND_INDEX_KEY_PREVIOUS is set without KT_BLIND_INDEX_KEY"):
        ReferralsSettings(var_dir=tmp_path).keyring()
