"""The call adviser's pages: take a call (for the caller or on someone's behalf), warned of a likely duplicate
before saving; find a caller's earlier referrals; amend an address; cancel with a reason; read back the reference.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

from services.web import forms
from services.web.api import ADVISERS, Clients_, Csrf, person
from services.web.app import render
from services.web.clients import ApiError, Caller

router = APIRouter(prefix="/adviser")
Adviser = Annotated[Caller, Depends(person(*ADVISERS))]

VULNERABILITIES = {
    "shielding": "Shielding",
    "lives-alone": "Lives alone",
    "no-support-network": "No support network",
    "needs-interpreter": "Needs an interpreter",
    "disability": "Disability",
    "mental-health": "Mental health",
    "over-70": "Over 70",
    "pregnant": "Pregnant",
    "carer": "A carer",
    "no-digital-access": "No internet access",
    "financial-hardship": "Financial hardship",
}
CONSENT_GIVEN_BY = {
    "resident": "The resident",
    "referrer-on-behalf": "The caller, on their behalf",
    "best-interests": "Nobody could: shared in their best interests",
}
CANCEL_REASONS = {
    "no-longer-needed": "No longer needed",
    "resident-request": "The resident asked",
    "duplicate": "A duplicate",
    "entered-in-error": "Entered in error",
    "other": "Other",
}
NOTIFY_PROBLEMS = {
    "no_contact": "Enter a mobile number or email to send the reference to, or untick the box",
    "not_by_message": "They are contacted by letter or through the caller: choose another way, or untick the box",
}
CONTACTS = dict(forms.CONTACT_CHOICES) | {"via-referrer": "Through the caller"}
# The referrals API's fields, to this form's fields and their labels.
API_FIELDS = (
    ("resident.name", "name", "Resident's name"),
    ("resident.date_of_birth", "dob-day", "Date of birth"),
    ("resident.phone", "phone", "Phone"),
    ("resident.email", "email", "Email"),
    ("resident.address.line1", "line1", "Address line 1"),
    ("resident.address.postcode", "postcode", "Postcode"),
    ("resident.address", "line1", "Address"),
    ("resident.contact_preference", "preference", "Contact by"),
    ("resident.language", "language", "Language"),
    ("referrer.name", "referrer_name", "Caller's name"),
    ("referrer.phone", "referrer_phone", "Caller's phone"),
    ("referrer", "referrer_name", "Caller"),
    ("consent.to_notify", "notify", "Reference and updates"),
    ("consent", "consent", "Consent"),
    ("requests", "types", "Help needed"),
)


def _values(form) -> dict:
    text = {
        k: str(form.get(k, "")).strip()[:2000]
        for k in (
            "on_behalf",
            "referrer_name",
            "referrer_organisation",
            "referrer_relationship",
            "referrer_phone",
            "consent_given_by",
            "name",
            "dob-day",
            "dob-month",
            "dob-year",
            "phone",
            "email",
            "line1",
            "line2",
            "town",
            "postcode",
            "preference",
            "language",
            "urgency",
            "consent",
            "notify",
            *forms.REPEAT_FIELDS,
        )
    }
    text["vulnerabilities"] = [v for v in form.getlist("vulnerabilities") if v in VULNERABILITIES]
    text["types"] = [str(t) for t in form.getlist("types")]
    text["details"] = {t: str(form.get(f"details-{t}", "")).strip()[:2000] for t in text["types"]}
    return text


def _check(values: dict, known_types: list[str]) -> tuple[dict, dict | None]:
    """Errors an adviser can fix on the page, and the referrals API's body when there are none."""
    errors = {}
    if not values["name"]:
        errors["name"] = "Enter the resident's name"
    if not values["line1"]:
        errors["line1"] = "Enter the first line of the address"
    postcode, message = forms.check_postcode(values["postcode"])
    if message:
        errors["postcode"] = message
    if values["phone"] and forms.check_phone(values["phone"]):
        errors["phone"] = forms.MESSAGES["phone.invalid"]
    dob = None
    parts = (values["dob-day"], values["dob-month"], values["dob-year"])
    if any(parts):
        try:
            dob = date(int(parts[2]), int(parts[1]), int(parts[0]))
        except ValueError:
            errors["dob-day"] = "Enter a real date of birth, for example 2 3 1941"
    if not values["types"] or any(t not in known_types for t in values["types"]):
        errors["types"] = "Select the help needed"
    if values["on_behalf"] == "yes" and not values["referrer_name"]:
        errors["referrer_name"] = "Enter the caller's name"
    if values["consent"] != "yes":
        errors["consent"] = "Ask for consent to share the details with the hub, and tick the box when given"
    why = forms.check_notify(
        notify=values["notify"] == "yes", phone=values["phone"], email=values["email"], preference=values["preference"]
    )
    if why:
        errors["notify"] = NOTIFY_PROBLEMS[why]
    recurrence, repeat_errors = forms.check_recurrence(values)
    errors.update(repeat_errors)
    if errors:
        return errors, None
    resident = {
        "name": values["name"],
        "address": {
            "line1": values["line1"],
            "line2": values["line2"] or None,
            "town": values["town"] or None,
            "postcode": postcode,
        },
        "vulnerabilities": values["vulnerabilities"],
    }
    for key in ("phone", "email", "language"):
        if values[key]:
            resident[key] = values[key]
    if dob:
        resident["date_of_birth"] = dob.isoformat()
    if values["preference"]:
        resident["contact_preference"] = values["preference"]
    body = {
        "channel": "phone",
        "resident": resident,
        "consent": {
            "to_share": True,
            "given_by": values["consent_given_by"] or "resident",
            "to_notify": values["notify"] == "yes",
        },
        "requests": [
            {
                "type": t,
                "details": values["details"].get(t) or None,
                "urgency": values["urgency"] or None,
                **({"recurrence": recurrence} if recurrence else {}),
            }
            for t in values["types"]
        ],
    }
    if values["on_behalf"] == "yes":
        body["referrer"] = {
            k: v
            for k, v in {
                "name": values["referrer_name"],
                "organisation": values["referrer_organisation"] or None,
                "relationship": values["referrer_relationship"] or None,
                "phone": values["referrer_phone"] or None,
            }.items()
            if v
        }
    return {}, body


def _api_errors(errors: list[dict]) -> dict:
    found = {}
    for error in errors:
        field = str(error.get("field", ""))
        repeat = forms.recurrence_field(field)
        if repeat is not None:
            found.setdefault(repeat[0], f"Repeat: {error.get('reason', 'is not right')}")
            continue
        for prefix, name, label in API_FIELDS:
            if field == prefix or field.startswith((prefix + ".", prefix + "[")):
                found.setdefault(name, f"{label}: {error.get('reason', 'is not right')}")
                break
        else:
            found.setdefault("name", f"{field}: {error.get('reason', 'is not right')}")
    return found


async def _types(clients, adviser: Caller) -> list[dict]:
    return [t for t in await clients.referrals.call("GET", "/v1/request-types", caller=adviser) if t["active"]]


async def _call_page(request, clients, adviser, *, values=None, errors=None, status_code=200):
    return render(
        request,
        "adviser/call.html",
        status_code=status_code,
        title="Take a call",
        column="full",
        types=await _types(clients, adviser),
        values=values or {"vulnerabilities": [], "types": [], "details": {}},
        errors=errors or {},
        vulnerabilities=VULNERABILITIES,
        given_by=CONSENT_GIVEN_BY,
        urgencies=forms.URGENCY_CHOICES,
        frequencies=forms.FREQUENCY_CHOICES,
        contacts=CONTACTS,
    )


@router.get("")
async def call_page(request: Request, adviser: Adviser, clients: Clients_):
    return await _call_page(request, clients, adviser)


@router.post("/call", dependencies=[Csrf])
async def check_call(request: Request, adviser: Adviser, clients: Clients_):
    """Check the call's answers, then look for a likely duplicate before saving."""
    values = _values(await request.form())
    types = await _types(clients, adviser)
    errors, body = _check(values, [t["id"] for t in types])
    if errors:
        return await _call_page(request, clients, adviser, values=values, errors=errors, status_code=400)
    try:
        found = await clients.referrals.call("POST", "/v1/referrals/duplicate-check", caller=adviser, json=body)
    except ApiError as error:
        if error.status != 422:
            raise
        return await _call_page(
            request, clients, adviser, values=values, errors=_api_errors(error.field_errors), status_code=400
        )
    call = {"body": body, "values": values, "key": secrets.token_urlsafe(16)}
    request.state.session.set("call", call)
    if found["duplicates"]:
        labels = {t["id"]: t["label"] for t in types}
        return render(
            request,
            "adviser/duplicate.html",
            title="This may be a duplicate",
            call=call,
            duplicates=found["duplicates"],
            labels=labels,
            ago=_ago,
        )
    return await _save(request, clients, adviser, call)


@router.post("/call/save", dependencies=[Csrf])
async def save_call(request: Request, adviser: Adviser, clients: Clients_):
    call = request.state.session.get("call")
    key = str((await request.form()).get("key", ""))
    if call is None or call["key"] != key:
        saved = request.state.session.get("saved_call") or {}
        if saved.get("key") == key:
            return RedirectResponse(f"/adviser/referrals/{saved['id']}?saved=1", status_code=303)
        return render(request, "errors/form-expired.html", status_code=400, title="This form has expired")
    return await _save(request, clients, adviser, call)


async def _save(request: Request, clients, adviser: Caller, call: dict):
    try:
        out = await clients.referrals.call(
            "POST",
            "/v1/referrals",
            caller=adviser,
            json=call["body"],
            headers={"Idempotency-Key": f"web-call-{call['key']}"},
        )
    except ApiError as error:
        if error.status != 422:
            raise
        return await _call_page(
            request, clients, adviser, values=call["values"], errors=_api_errors(error.field_errors), status_code=400
        )
    request.state.session.pop("call")
    request.state.session.set("saved_call", {"key": call["key"], "id": out["id"]})
    return RedirectResponse(f"/adviser/referrals/{out['id']}?saved=1", status_code=303)


def _ago(when: str) -> str:
    then = datetime.fromisoformat(when.replace("Z", "+00:00"))
    days = (datetime.now(UTC) - then).days
    return "today" if days < 1 else "yesterday" if days == 1 else f"{days} days ago"


@router.get("/referrals/{referral_id}")
async def referral_page(request: Request, referral_id: str, adviser: Adviser, clients: Clients_):
    return await _referral(request, clients, adviser, referral_id)


async def _referral(request, clients, adviser, referral_id, *, errors=None, status_code=200):
    referral = await clients.referrals.call("GET", f"/v1/referrals/{referral_id}", caller=adviser)
    labels = {t["id"]: t["label"] for t in await _types(clients, adviser)}
    return render(
        request,
        "adviser/referral.html",
        status_code=status_code,
        title=f"Referral {referral['reference']}",
        referral=referral,
        labels=labels,
        saved=request.query_params.get("saved"),
        done=request.query_params.get("done"),
        reasons=CANCEL_REASONS,
        errors=errors or {},
        contacts=CONTACTS,
        vulnerabilities=VULNERABILITIES,
    )


@router.post("/referrals/{referral_id}/address", dependencies=[Csrf])
async def amend_address(request: Request, referral_id: str, adviser: Adviser, clients: Clients_):
    form = await request.form()
    values = {k: str(form.get(k, "")).strip()[:200] for k in ("line1", "line2", "town", "postcode", "note")}
    errors = {}
    if not values["line1"]:
        errors["line1"] = "Enter the first line of the address"
    postcode, message = forms.check_postcode(values["postcode"])
    if message:
        errors["postcode"] = message
    if errors:
        return await _referral(request, clients, adviser, referral_id, errors=errors, status_code=400)
    body = {
        "resident": {
            "address": {
                "line1": values["line1"],
                "line2": values["line2"] or None,
                "town": values["town"] or None,
                "postcode": postcode,
            }
        },
        "note": values["note"] or "address amended on a call",
    }
    try:
        await clients.referrals.call("PATCH", f"/v1/referrals/{referral_id}", caller=adviser, json=body)
    except ApiError as error:
        if error.status != 422:
            raise
        return await _referral(
            request, clients, adviser, referral_id, errors=_api_errors(error.field_errors), status_code=400
        )
    return RedirectResponse(f"/adviser/referrals/{referral_id}?done=address", status_code=303)


@router.post("/referrals/{referral_id}/cancel", dependencies=[Csrf])
async def cancel(request: Request, referral_id: str, adviser: Adviser, clients: Clients_):
    form = await request.form()
    reason = str(form.get("reason", ""))
    if reason not in CANCEL_REASONS:
        return await _referral(
            request,
            clients,
            adviser,
            referral_id,
            status_code=400,
            errors={"reason": "Select why the request is cancelled"},
        )
    body = {"reason": reason, "note": str(form.get("cancel_note", "")).strip()[:1000] or None}
    request_id = str(form.get("request_id", ""))
    path = (
        f"/v1/referrals/{referral_id}/requests/{request_id}/cancel"
        if request_id
        else f"/v1/referrals/{referral_id}/cancel"
    )
    try:
        await clients.referrals.call("POST", path, caller=adviser, json=body)
    except ApiError as error:
        if error.status not in (409, 422):
            raise
        return await _referral(
            request,
            clients,
            adviser,
            referral_id,
            status_code=400,
            errors={"reason": error.problem.get("detail") or "It cannot be cancelled now"},
        )
    return RedirectResponse(f"/adviser/referrals/{referral_id}?done=cancelled", status_code=303)


@router.get("/find")
async def find_page(request: Request, adviser: Adviser, clients: Clients_):
    query = {
        k: request.query_params.get(k, "").strip()[:200]
        for k in ("reference", "name", "postcode", "phone", "dob-day", "dob-month", "dob-year")
    }
    if not any(query.values()):
        return render(request, "adviser/find.html", title="Find a referral", values=query, errors={}, results=None)
    params, errors = {}, {}
    if query["reference"]:
        params["reference"] = query["reference"]
    elif query["name"] or query["postcode"]:
        if not (query["name"] and query["postcode"]):
            errors["name" if not query["name"] else "postcode"] = "Give both the name and the postcode"
        params.update(name=query["name"], postcode=query["postcode"])
    elif query["phone"] or any(query[k] for k in ("dob-day", "dob-month", "dob-year")):
        try:
            dob = date(int(query["dob-year"]), int(query["dob-month"]), int(query["dob-day"]))
            params.update(phone=query["phone"], date_of_birth=dob.isoformat())
        except ValueError:
            errors["dob-day"] = "Enter the caller's date of birth with their phone number"
        if not query["phone"]:
            errors["phone"] = "Give both the phone number and the date of birth"
    if errors:
        return render(
            request,
            "adviser/find.html",
            status_code=400,
            title="Find a referral",
            values=query,
            errors=errors,
            results=None,
        )
    try:
        answer = await clients.referrals.call("GET", "/v1/referrals", caller=adviser, params=params)
    except ApiError as error:
        if error.status != 422:
            raise
        found = {e.get("field"): e.get("reason") for e in error.field_errors}
        return render(
            request,
            "adviser/find.html",
            status_code=400,
            title="Find a referral",
            values=query,
            errors={k: f"{k.title()}: {v}" for k, v in found.items() if k in query}
            or {"reference": "Check what you searched for"},
            results=None,
        )
    return render(
        request, "adviser/find.html", title="Find a referral", values=query, errors={}, results=answer["results"]
    )
