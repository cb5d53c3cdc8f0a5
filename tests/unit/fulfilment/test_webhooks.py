"""Webhook signatures a hub can check, and retries that back off."""

from datetime import timedelta

from services.fulfilment.webhooks import backoff, sign, verify


def test_the_signature_is_hmac_sha256_of_timestamp_and_body_with_the_hubs_secret():
    import hashlib
    import hmac

    expected = hmac.new(b"s3cret", b'1586163600.{"a":1}', hashlib.sha256).hexdigest()
    assert sign("s3cret", timestamp="1586163600", body=b'{"a":1}') == f"sha256={expected}"


def test_a_changed_body_timestamp_or_secret_fails_verification():
    signature = sign("s3cret", timestamp="1586163600", body=b"{}")

    assert verify("s3cret", timestamp="1586163600", body=b"{}", signature=signature)
    assert not verify("s3cret", timestamp="1586163600", body=b"{ }", signature=signature)
    assert not verify("s3cret", timestamp="1586163601", body=b"{}", signature=signature)
    assert not verify("other", timestamp="1586163600", body=b"{}", signature=signature)


def test_retries_back_off_doubling_up_to_an_hour():
    waits = [backoff(n, base_seconds=5) for n in range(1, 6)]

    assert waits == [timedelta(seconds=s) for s in (5, 10, 20, 40, 80)]
    assert backoff(30, base_seconds=5) == timedelta(hours=1)
