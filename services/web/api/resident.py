"""The resident's pages: "Get help" (no sign-in; the online channel) and "Check on my request".

One question per page; the answers wait in the (server-side) session until the
resident sends them from "Check your answers". The form carries an idempotency
key made with the answers, so a double click, a refresh or the back button
sends the same referral again and the referrals service answers with the first.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

from services.web import forms
from services.web.api import ONLINE_FORM, Clients_, Csrf, public_form_limited
from services.web.app import render
from services.web.clients import ApiError, ServiceUnavailable

router = APIRouter()
Limited = Depends(public_form_limited)

# The journey, in order: each page and what it must have before it.
PAGES = ("postcode", "help", "when", "details", "about-you", "contact", "consent", "check")
NEEDS = {
    "help": "postcode",
    "when": "types",
    "details": "urgency",
    "about-you": "urgency",
    "contact": "name",
    "consent": "preference",
    "check": "consent",
}
STATUS_WORDS = {
    "routed": "With the hub, waiting to be picked up",
    "accepted": "Accepted by the hub",
    "in_progress": "The hub is arranging it",
    "fulfilled": "Done",
    "unable_to_fulfil": "The hub could not help",
    "rejected": "Being passed to the right hub",
    "cancelled": "Cancelled",
    "out_of_area": "Passed to your council",
    "triage": "Being checked by Kent Together",
    "passed_on": "Passed to your council",
}


def _draft(request: Request) -> dict | None:
    return request.state.session.get("draft")


def _save(request: Request, draft: dict) -> None:
    if draft.pop("attempted", False):
        draft["key"] = secrets.token_urlsafe(16)  # answers changed after a send was tried: a new submission
    request.state.session.set("draft", draft)


def _next(request: Request, page: str) -> RedirectResponse:
    if request.query_params.get("change"):
        return RedirectResponse("/get-help/check", status_code=303)
    return RedirectResponse(f"/get-help/{PAGES[PAGES.index(page) + 1]}", status_code=303)


def _guard(request: Request, page: str) -> tuple[dict | None, RedirectResponse | None]:
    """The answers so far, or where to go when this page cannot be answered yet."""
    draft = _draft(request)
    if draft is None:
        return None, RedirectResponse("/get-help", status_code=303)
    needed = NEEDS.get(page)
    if needed and not draft.get(needed):
        for earlier in PAGES:
            key = {
                "postcode": "postcode",
                "help": "types",
                "when": "urgency",
                "about-you": "name",
                "contact": "preference",
                "consent": "consent",
            }.get(earlier)
            if key and not draft.get(key):
                return None, RedirectResponse(f"/get-help/{earlier}", status_code=303)
    return draft, None


async def _request_types(clients) -> list[dict]:
    return [t for t in await clients.referrals.call("GET", "/v1/request-types", caller=ONLINE_FORM) if t["active"]]


@router.get("/get-help")
async def start(request: Request):
    return render(request, "resident/start.html", title="Get help from Kent Together")


@router.post("/get-help", dependencies=[Csrf])
async def begin(request: Request):
    request.state.session.set("draft", {"key": secrets.token_urlsafe(16)})
    return RedirectResponse("/get-help/postcode", status_code=303)


@router.get("/get-help/postcode")
async def postcode_page(request: Request):
    draft, away = _guard(request, "postcode")
    return away or render(
        request,
        "resident/postcode.html",
        title="What is your postcode?",
        values={"postcode": draft.get("postcode", "")},
        errors=draft.get("errors", {}).get("postcode", {}),
    )


@router.post("/get-help/postcode", dependencies=[Csrf, Limited])
async def postcode_answer(request: Request, clients: Clients_):
    draft, away = _guard(request, "postcode")
    if away:
        return away
    typed = str((await request.form()).get("postcode", ""))[:20]
    postcode, message = forms.check_postcode(typed)
    if message:
        return render(
            request,
            "resident/postcode.html",
            status_code=400,
            title="What is your postcode?",
            values={"postcode": typed},
            errors={"postcode": message},
        )
    try:
        draft["area"] = await clients.fulfilment.call("GET", f"/v1/areas/{postcode}", caller=ONLINE_FORM)
    except ApiError as error:
        if error.status == 422:
            return render(
                request,
                "resident/postcode.html",
                status_code=400,
                title="What is your postcode?",
                values={"postcode": typed},
                errors={"postcode": forms.MESSAGES["postcode.invalid"]},
            )
        draft["area"] = None
    except ServiceUnavailable:
        draft["area"] = None  # the confirmation names "your local council" instead: nobody is turned away
    draft["postcode"] = postcode
    return _answered(request, draft, "postcode")


@router.get("/get-help/help")
async def help_page(request: Request, clients: Clients_):
    draft, away = _guard(request, "help")
    return away or render(
        request,
        "resident/help.html",
        title="What help do you need?",
        types=await _request_types(clients),
        values={"types": draft.get("types", [])},
        errors=draft.get("errors", {}).get("help", {}),
    )


@router.post("/get-help/help", dependencies=[Csrf])
async def help_answer(request: Request, clients: Clients_):
    draft, away = _guard(request, "help")
    if away:
        return away
    types = await _request_types(clients)
    known = [t["id"] for t in types]
    chosen = [str(v) for v in (await request.form()).getlist("types")]
    if not chosen or any(c not in known for c in chosen):
        message = forms.MESSAGES["types.missing" if not chosen else "types.unknown"]
        return render(
            request,
            "resident/help.html",
            status_code=400,
            title="What help do you need?",
            types=types,
            values={"types": chosen},
            errors={"types": message},
        )
    draft["types"] = [k for k in known if k in chosen]
    draft["details"] = {k: v for k, v in (draft.get("details") or {}).items() if k in draft["types"]}
    return _answered(request, draft, "help")


def _when(request: Request, *, values: dict, errors: dict, status_code: int = 200):
    return render(
        request,
        "resident/when.html",
        status_code=status_code,
        title="When do you need help?",
        choices=forms.URGENCY_CHOICES,
        frequencies=forms.FREQUENCY_CHOICES,
        values=values,
        errors=errors,
    )


@router.get("/get-help/when")
async def when_page(request: Request):
    draft, away = _guard(request, "when")
    return away or _when(
        request, values={"urgency": draft.get("urgency", ""), **(draft.get("repeat_answers") or {})}, errors={}
    )


@router.post("/get-help/when", dependencies=[Csrf])
async def when_answer(request: Request):
    draft, away = _guard(request, "when")
    if away:
        return away
    form = await request.form()
    urgency = str(form.get("urgency", ""))
    answers = {name: str(form.get(name, "")).strip()[:20] for name in forms.REPEAT_FIELDS}
    recurrence, errors = forms.check_recurrence(answers)
    if urgency not in dict(forms.URGENCY_CHOICES):
        errors = {"urgency": forms.MESSAGES["urgency.missing"], **errors}
    if errors:
        return _when(request, values={"urgency": urgency, **answers}, errors=errors, status_code=400)
    draft["urgency"] = urgency
    draft["recurrence"], draft["repeat_answers"] = recurrence, answers
    return _answered(request, draft, "when")


@router.get("/get-help/details")
async def details_page(request: Request, clients: Clients_):
    draft, away = _guard(request, "details")
    if away:
        return away
    labels = {t["id"]: t["label"] for t in await _request_types(clients)}
    return render(
        request,
        "resident/details.html",
        title="Tell us about the help you need",
        labels=labels,
        types=draft["types"],
        values=draft.get("details") or {},
        errors=draft.get("errors", {}).get("details", {}),
    )


@router.post("/get-help/details", dependencies=[Csrf])
async def details_answer(request: Request, clients: Clients_):
    draft, away = _guard(request, "details")
    if away:
        return away
    form = await request.form()
    details = {kind: str(form.get(f"details-{kind}", "")).strip() for kind in draft["types"]}
    errors = {f"details-{kind}": forms.MESSAGES["details.long"] for kind, text in details.items() if len(text) > 2000}
    if errors:
        labels = {t["id"]: t["label"] for t in await _request_types(clients)}
        return render(
            request,
            "resident/details.html",
            status_code=400,
            title="Tell us about the help you need",
            labels=labels,
            types=draft["types"],
            values=details,
            errors=errors,
        )
    draft["details"] = {k: v for k, v in details.items() if v}
    return _answered(request, draft, "details")


@router.get("/get-help/about-you")
async def about_you_page(request: Request):
    draft, away = _guard(request, "about-you")
    return away or render(
        request,
        "resident/about-you.html",
        title="Your name and address",
        values=draft,
        errors=draft.get("errors", {}).get("about-you", {}),
    )


@router.post("/get-help/about-you", dependencies=[Csrf])
async def about_you_answer(request: Request):
    draft, away = _guard(request, "about-you")
    if away:
        return away
    form = await request.form()
    values = {k: str(form.get(k, "")).strip()[:300] for k in ("name", "line1", "line2", "town")}
    errors = forms.check_about_you(name=values["name"], line1=values["line1"])
    if errors:
        return render(
            request,
            "resident/about-you.html",
            status_code=400,
            title="Your name and address",
            values={**draft, **values},
            errors=errors,
        )
    draft.update(values)
    return _answered(request, draft, "about-you")


@router.get("/get-help/contact")
async def contact_page(request: Request):
    draft, away = _guard(request, "contact")
    return away or render(
        request,
        "resident/contact.html",
        title="How should we contact you?",
        choices=forms.CONTACT_CHOICES,
        values=draft,
        errors=draft.get("errors", {}).get("contact", {}),
    )


@router.post("/get-help/contact", dependencies=[Csrf])
async def contact_answer(request: Request):
    draft, away = _guard(request, "contact")
    if away:
        return away
    form = await request.form()
    values = {k: str(form.get(k, "")).strip()[:300] for k in ("phone", "email", "preference")}
    errors = forms.check_contact(**values)
    if errors:
        return render(
            request,
            "resident/contact.html",
            status_code=400,
            title="How should we contact you?",
            choices=forms.CONTACT_CHOICES,
            values={**draft, **values},
            errors=errors,
        )
    draft.update(values)
    return _answered(request, draft, "contact")


def _consent(request: Request, draft: dict, *, values: dict, errors: dict, status_code: int = 200):
    return render(
        request,
        "resident/consent.html",
        status_code=status_code,
        title="Sharing your details",
        values=values,
        area=draft.get("area"),
        errors=errors,
    )


@router.get("/get-help/consent")
async def consent_page(request: Request):
    draft, away = _guard(request, "consent")
    return away or _consent(request, draft, values=draft, errors=draft.get("errors", {}).get("consent", {}))


@router.post("/get-help/consent", dependencies=[Csrf])
async def consent_answer(request: Request):
    draft, away = _guard(request, "consent")
    if away:
        return away
    form = await request.form()
    consent = form.get("consent") == "yes"
    notify = str(form.get("notify", ""))
    notify = notify if notify in ("yes", "no") else ""  # not answered: nothing is sent, as with "No"
    errors = {}
    if not consent:
        errors["consent"] = forms.MESSAGES["consent.missing"]
    why = forms.check_notify(
        notify=notify == "yes",
        phone=draft.get("phone") or "",
        email=draft.get("email") or "",
        preference=draft.get("preference") or "",
    )
    if why:
        errors["notify"] = forms.MESSAGES[f"notify.{why}"]
    if errors:
        values = {**draft, "consent": consent, "notify": notify}
        return _consent(request, draft, values=values, errors=errors, status_code=400)
    draft["consent"], draft["notify"] = True, notify
    return _answered(request, draft, "consent")


@router.get("/get-help/check")
async def check_page(request: Request, clients: Clients_):
    draft, away = _guard(request, "check")
    if away:
        return away
    return await _check(request, clients, draft)


async def _check(request: Request, clients, draft: dict, *, errors: dict | None = None, status_code: int = 200):
    labels = {t["id"]: t["label"] for t in await _request_types(clients)}
    return render(
        request,
        "resident/check.html",
        status_code=status_code,
        title="Check your answers before sending",
        draft=draft,
        labels=labels,
        urgencies=dict(forms.URGENCY_CHOICES),
        contacts=dict(forms.CONTACT_CHOICES),
        errors=errors or {},
    )


@router.post("/get-help/check", dependencies=[Csrf, Limited])
async def send(request: Request, clients: Clients_):
    session = request.state.session
    key = str((await request.form()).get("idempotency_key", ""))
    sent = session.get("sent")
    draft = _draft(request)
    if sent and sent["key"] == key and (draft is None or draft.get("key") != key):
        return RedirectResponse("/get-help/confirmation", status_code=303)  # sent already: the same answer
    if draft is None or draft.get("key") != key or not draft.get("consent"):
        return render(request, "resident/not-sent.html", status_code=400, title="Your answers were not sent")
    why = forms.check_notify(
        notify=draft.get("notify") == "yes",
        phone=draft.get("phone") or "",
        email=draft.get("email") or "",
        preference=draft.get("preference") or "",
    )
    if why:  # the contact details were changed after saying yes
        message = forms.MESSAGES[f"notify.{why}"]
        draft.setdefault("errors", {}).setdefault("consent", {})["notify"] = message
        session.set("draft", draft)
        return await _check(request, clients, draft, errors=[("change-notify", message)], status_code=400)
    draft["attempted"] = True
    session.set("draft", draft)
    try:
        out = await clients.referrals.call(
            "POST",
            "/v1/referrals",
            caller=ONLINE_FORM,
            json=forms.referral_body(draft, channel="online"),
            headers={"Idempotency-Key": f"web-{key}"},
        )
    except ApiError as error:
        if error.status != 422:
            raise
        problems = forms.api_errors_to_fields(error.field_errors, types=draft["types"])
        draft["errors"] = {}
        for problem in problems:
            draft["errors"].setdefault(problem.page, {})[problem.field] = problem.message
        session.set("draft", draft)
        summary = [(f"change-{p.page}", p.message) for p in problems]
        return await _check(request, clients, draft, errors=summary, status_code=400)
    session.set(
        "sent",
        {
            "key": key,
            "reference": out["reference"],
            "area": draft.get("area"),
            "types": draft["types"],
            "preference": draft.get("preference"),
        },
    )
    session.pop("draft")
    return RedirectResponse("/get-help/confirmation", status_code=303)


@router.get("/get-help/confirmation")
async def confirmation(request: Request, clients: Clients_):
    sent = request.state.session.get("sent")
    if sent is None:
        return RedirectResponse("/get-help", status_code=303)
    labels = {t["id"]: t["label"] for t in await _request_types(clients)}
    return render(
        request,
        "resident/confirmation.html",
        title="Your request has been sent",
        sent=sent,
        labels=labels,
        contacts=dict(forms.CONTACT_CHOICES),
    )


@router.get("/check-request")
async def status_page(request: Request):
    return render(request, "resident/status.html", title="Check on your request", values={}, errors={}, found=None)


@router.post("/check-request", dependencies=[Csrf, Limited])
async def status_answer(request: Request, clients: Clients_):
    form = await request.form()
    values = {"reference": str(form.get("reference", "")).strip()[:20], "postcode": str(form.get("postcode", ""))[:20]}
    errors = {}
    if not values["reference"]:
        errors["reference"] = "Enter the reference we gave you, like KT-7F3K-9QX2"
    postcode, message = forms.check_postcode(values["postcode"])
    if message:
        errors["postcode"] = message
    if errors:
        return render(
            request,
            "resident/status.html",
            status_code=400,
            title="Check on your request",
            values=values,
            errors=errors,
            found=None,
        )
    answer = await clients.fulfilment.call(
        "GET", "/v1/request-status", caller=ONLINE_FORM, params={"reference": values["reference"], "postcode": postcode}
    )
    labels = {t["id"]: t["label"] for t in await _request_types(clients)}
    return render(
        request,
        "resident/status.html",
        title="Your request" if answer["items"] else "Check on your request",
        values=values,
        errors={},
        found=answer["items"],
        labels=labels,
        words=STATUS_WORDS,
    )


def _clear_errors(draft: dict, page: str) -> None:
    (draft.get("errors") or {}).pop(page, None)


def _answered(request: Request, draft: dict, page: str) -> RedirectResponse:
    """A page answered: its errors from an earlier send go, the answers are kept, on to the next page."""
    _clear_errors(draft, page)
    _save(request, draft)
    return _next(request, page)
