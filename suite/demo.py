"""`kent-together demo`: a realistic load through the public HTTP APIs, never into the databases.

Two halves. The **plan** is pure: how many referrals on which day, which request
types, channels and districts, and what each hub does with each request. Counts
are allocated deterministically (largest remainder), so the totals are exact;
everything else (names, postcodes, times, which referral carries which types) is
drawn from a seeded RNG, so a run is reproducible. The **driver** posts the plan
to the referrals API, waits for fulfilment to route every request, and moves the
assignments through their lifecycle with the transition API, as hub staff would.

Referrals are dated with `received_at` and transitions with `at`, which needs the
`referrals:backfill` and `assignments:backfill` scopes (administrators): the
figures then land on the days of the plan, with realistic times to accept and
fulfil.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import httpx

from services.fulfilment import domain as fulfilment
from services.fulfilment.hubs import KENT_HUBS
from services.referrals import domain as referrals_domain

if TYPE_CHECKING:
    from services.fulfilment.postcodes import PostcodeDirectory

K = TypeVar("K")

# The services' own names: request types and channels as referrals takes them, hubs and statuses as fulfilment has them.
TYPES = tuple(request_type for request_type, _, _ in referrals_domain.DEFAULT_REQUEST_TYPES)
CHANNELS = referrals_domain.CHANNELS
HUBS = tuple(hub.slug for hub in KENT_HUBS)
OUT_OF_AREA = "out-of-area"
"""A place that is not a hub: Medway postcodes, which fulfilment queues for Medway Council."""
UNKNOWN = "unknown"
"""A place that is not a hub: well-formed postcodes in no directory, which fulfilment sends to triage."""
FATES = ("fulfilled", "unable", "rejected", "in_progress", "accepted")
"""What a hub does with a request; whatever share is left stays routed (the backlog)."""
LONDON = ZoneInfo("Europe/London")

# Approximate mid-2019 populations (ONS), in thousands: where referrals came from.
DISTRICT_POPULATION = {
    "ashford": 130,
    "canterbury": 165,
    "dartford": 112,
    "dover": 118,
    "folkestone-hythe": 113,
    "gravesham": 106,
    "maidstone": 171,
    "sevenoaks": 121,
    "swale": 150,
    "thanet": 142,
    "tonbridge-malling": 132,
    "tunbridge-wells": 118,
}
# Referrals by hour of the day (a 24/7 line, busiest in the morning).
HOURLY = (1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 12, 12, 11, 10, 9, 8, 7, 6, 5, 4, 2, 1)
URGENCIES = dict(zip(referrals_domain.URGENCIES, (30, 35, 25, 10), strict=True))
"""How urgent referrals are, in referrals' order of urgencies (today first)."""
FULFILLED_OUTCOMES = dict(zip(fulfilment.FULFILLED_OUTCOMES, (70, 20, 10), strict=True))
# Why a hub cannot help, and why it turns a request down: some of fulfilment's codes, weighted.
UNABLE_OUTCOMES = {
    "resident-unreachable": 40,
    "need-met-elsewhere": 25,
    "declined-by-resident": 20,
    "no-capacity": 10,
    "moved-away": 5,
}
REJECT_REASONS = {"not-eligible": 60, "duplicate": 40}
FIRST_NAMES = (
    "Margaret",
    "Jean",
    "Patricia",
    "Barbara",
    "Sheila",
    "Maureen",
    "Joan",
    "Brenda",
    "Valerie",
    "Pauline",
    "Christine",
    "Janet",
    "Susan",
    "Carol",
    "Linda",
    "Ann",
    "Irene",
    "Doreen",
    "Eileen",
    "Sylvia",
    "John",
    "David",
    "Michael",
    "Peter",
    "Brian",
    "Robert",
    "Alan",
    "Keith",
    "Terence",
    "Kenneth",
    "Anthony",
    "Roy",
    "Derek",
    "Colin",
    "Raymond",
    "Graham",
    "Dennis",
    "Stephen",
    "Trevor",
    "Malcolm",
    "Priya",
    "Amrit",
    "Gurpreet",
    "Olena",
    "Tomasz",
    "Agnieszka",
    "Chidi",
    "Ngozi",
    "Mehmet",
    "Aisha",
)
SURNAMES = (
    "Smith",
    "Jones",
    "Williams",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Robinson",
    "Thompson",
    "Wright",
    "Walker",
    "White",
    "Edwards",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Harris",
    "Clarke",
    "Patel",
    "Jackson",
    "Wood",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "Clark",
    "Lee",
    "King",
    "Baker",
    "Harrison",
    "Morgan",
    "Allen",
    "James",
    "Scott",
    "Phillips",
    "Watson",
    "Davis",
    "Parker",
    "Price",
    "Bennett",
    "Young",
    "Griffiths",
)
STREETS = (
    "High Street",
    "Church Road",
    "Station Road",
    "London Road",
    "Victoria Road",
    "Green Lane",
    "Manor Road",
    "Park Road",
    "Queens Road",
    "The Street",
    "Mill Lane",
    "School Lane",
)
DETAILS = {
    "food": ("Weekly shop; no car", "Food parcel: shielding letter received", "Diabetic: needs low-sugar items"),
    "prescription": (
        "Collect from the pharmacy on the high street",
        "Repeat prescription, monthly",
        "Insulin: needs it by Friday",
    ),
    "befriending": ("Lives alone; would like a weekly call", "Feeling isolated since the lockdown"),
    "financial": ("Lost work; rent due", "Needs help applying for Universal Credit"),
    "practical": ("Dog walking", "Post to collect and bills to pay"),
    "other": ("Needs a lift to a hospital appointment", "Boiler broken; landlord not answering"),
}


# --- what to generate ------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """What a user asks for; `make_plan` turns it into exactly that load."""

    referrals: int
    requests: int
    start: date
    end: date
    mix: Mapping[str, float]
    """Request type -> share of requests."""
    channels: Mapping[str, float]
    """Channel -> share of referrals."""
    districts: Mapping[str, float]
    """Hub slug -> weight of referrals."""
    out_of_area: float = 0.0
    """Share of referrals at Medway postcodes (fulfilment's out-of-area queue)."""
    unknown: float = 0.0
    """Share of referrals at postcodes in no directory (fulfilment's triage queue)."""
    activity: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ACTIVITY))
    """Fate -> share of the requests hubs receive; the rest is left routed."""
    seed: int = 2020
    opens_at_hour: int = 0
    """The hour (Europe/London) the service opened on the first day: Kent Together launched at midday."""

    def problems(self) -> list[str]:
        """What makes this load impossible, in the option's words; [] if it can be planned."""
        found = []
        if self.referrals < 1:
            found.append("--referrals must be at least 1")
        kinds = [t for t, share in self.mix.items() if share > 0]
        if not self.referrals <= self.requests <= self.referrals * len(kinds):
            found.append(
                f"--requests must be between --referrals ({self.referrals}) and {len(kinds)} times it: "
                "each referral carries 1 to one-of-each request types"
            )
        if self.end < self.start:
            found.append("--to is before --from")
        for option, shares, known in (
            ("--mix", self.mix, None),
            ("--channels", self.channels, CHANNELS),
            ("--districts", self.districts, HUBS),
            ("--hub-activity", self.activity, FATES),
        ):
            if any(share < 0 for share in shares.values()):
                found.append(f"{option}: shares cannot be negative")
            if known is not None and set(shares) - set(known):
                found.append(
                    f"{option}: unknown {', '.join(sorted(set(shares) - set(known)))}; one of {', '.join(known)}"
                )
            if option != "--hub-activity" and not sum(shares.values()) > 0:
                found.append(f"{option}: give at least one share above 0")
        if sum(self.activity.values()) > 1 + 1e-9:
            found.append("--hub-activity: shares add up to more than 1")
        if not 0 <= self.opens_at_hour <= 23:
            found.append("the opening hour must be 0 to 23")
        if not 0 <= self.out_of_area + self.unknown < 1:
            found.append("--out-of-area and --unknown-postcodes must leave some referrals for the hubs")
        return found

    def fingerprint(self) -> str:
        """Short and stable: part of every Idempotency-Key, so another plan never replays this one's keys."""
        raw = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:10]


DEFAULT_ACTIVITY: dict[str, float] = {
    "fulfilled": 0.62,
    "unable": 0.07,
    "rejected": 0.03,
    "in_progress": 0.08,
    "accepted": 0.06,
}
APRIL_2020_MIX = {
    "food": 0.55,
    "prescription": 0.27,
    "befriending": 0.08,
    "financial": 0.04,
    "practical": 0.04,
    "other": 0.02,
}


def april_2020(*, seed: int = 2020, **overrides: Any) -> LoadSpec:
    """The briefing: 2,893 referrals carrying 4,293 requests, 55% food and 27% prescriptions, 1–25 April 2020.

    Food and prescription shares are the briefing's; how the other 18% divides,
    the channels and the districts (by population) are not in it, and are our guesses.
    """
    values: dict[str, Any] = dict(
        referrals=2893,
        requests=4293,
        start=date(2020, 4, 1),
        end=date(2020, 4, 25),
        mix=APRIL_2020_MIX,
        opens_at_hour=12,
        channels={"phone": 0.5, "online": 0.4, "partner": 0.08, "email": 0.02},
        districts=DISTRICT_POPULATION,
        seed=seed,
    )
    values.update(overrides)
    return LoadSpec(**values)


PRESETS = {"april-2020": april_2020}


def parse_shares(text: str, *, option: str) -> dict[str, float]:
    """`food=55,prescription=27` (or a bare list of names, equal shares) -> {name: weight}; ValueError naming the option."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            shares[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"{option}: {value!r} is not a number (write name=share, for example food=55)") from None
    if not shares:
        raise ValueError(f"{option}: give name=share pairs, for example food=55,prescription=27")
    return shares


# --- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One transition a hub makes, and when."""

    to: str
    at: datetime
    outcome: str | None = None
    reason: str | None = None

    def body(self) -> dict[str, Any]:
        body = {"to": self.to, "at": self.at.isoformat()}
        if self.outcome:
            body["outcome"] = self.outcome
        if self.reason:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True)
class PlannedRequest:
    type: str
    urgency: str
    details: str
    fate: str
    """One of FATES, `open`, or `elsewhere` (not a hub's: out of area or triage)."""
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class PlannedReferral:
    index: int
    idempotency_key: str
    received_at: datetime
    channel: str
    place: str
    """The hub slug its postcode routes to, or OUT_OF_AREA, or UNKNOWN."""
    postcode: str
    name: str
    date_of_birth: date
    phone: str | None
    house: int
    street: str
    requests: tuple[PlannedRequest, ...]

    def body(self) -> dict[str, Any]:
        """The POST /v1/referrals body, as a front-end would send it."""
        resident: dict[str, Any] = {
            "name": self.name,
            "date_of_birth": self.date_of_birth.isoformat(),
            "address": {"line1": f"{self.house} {self.street}", "postcode": self.postcode},
            "contact_preference": "phone" if self.phone else "post",
        }
        if self.phone:
            resident["phone"] = self.phone
        body: dict[str, Any] = {
            "channel": self.channel,
            "received_at": self.received_at.isoformat(),
            "resident": resident,
            "consent": {"to_share": True},
            "requests": [{"type": r.type, "details": r.details, "urgency": r.urgency} for r in self.requests],
        }
        if self.channel == "partner":
            body["referrer"] = {"name": "Duty social worker", "organisation": "Kent County Council"}
            body["consent"]["given_by"] = "referrer-on-behalf"
        return body


@dataclass(frozen=True)
class Plan:
    spec: LoadSpec
    referrals: tuple[PlannedReferral, ...]

    @property
    def requests(self) -> list[PlannedRequest]:
        return [r for referral in self.referrals for r in referral.requests]

    def requests_by_type(self) -> Counter[str]:
        return Counter(r.type for r in self.requests)

    def referrals_by(self, attribute: str) -> Counter[str]:
        return Counter(getattr(r, attribute) for r in self.referrals)

    def referrals_by_day(self) -> Counter[date]:
        return Counter(r.received_at.astimezone(LONDON).date() for r in self.referrals)

    def fates(self) -> Counter[str]:
        return Counter(r.fate for r in self.requests)


def largest_remainder(total: int, weights: Mapping[K, float]) -> dict[K, int]:
    """`total` shared out in proportion to `weights`, in whole numbers that add up to `total` exactly.

    Each gets the floor of its quota; what is left goes one each to the largest
    remainders (ties to the earlier key), so every count is its quota rounded up or down.
    """
    weight_sum = sum(weights.values())
    if weight_sum <= 0:
        raise ValueError("weights must add up to more than 0")
    quotas = {key: total * weight / weight_sum for key, weight in weights.items()}
    counts = {key: int(quota) for key, quota in quotas.items()}
    order = sorted(quotas, key=lambda key: (-(quotas[key] - counts[key]), list(weights).index(key)))
    for key in order[: total - sum(counts.values())]:
        counts[key] += 1
    return counts


def day_weights(start: date, end: date) -> dict[date, float]:
    """A launch's shape: a ramp through the first week as word spreads, then steady, a little quieter at weekends."""
    weights = {}
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        ramp = min(1.0, 0.35 + 0.65 * offset / 6)
        weights[day] = ramp * (0.8 if day.weekday() >= 5 else 1.0)
    return weights


def request_counts(referrals: int, requests: int, *, most: int) -> list[int]:
    """How many requests each referral carries, adding up to `requests`: mostly one, some two, a few three."""
    extra = requests - referrals
    threes = min(referrals // 10, extra // 2) if most >= 3 else 0
    twos = extra - 2 * threes
    if threes + twos <= referrals:
        return [3] * threes + [2] * twos + [1] * (referrals - threes - twos)
    # More requests than pairs can carry: as even as the load allows.
    base, more = divmod(requests, referrals)
    return [base + 1] * more + [base] * (referrals - more)


def assign_types(sizes: Sequence[int], type_counts: Mapping[str, int], rng: random.Random) -> list[tuple[str, ...]]:
    """For each referral, `size` distinct request types, so that each type is used exactly its count.

    Fill the largest referrals first from the types with most left (the greedy
    that always succeeds when any filling does: Gale–Ryser), then mix by swapping
    types between random pairs of referrals, which keeps every total and every
    referral's types distinct.
    """
    left = dict(type_counts)
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    chosen: list[set[str]] = [set() for _ in sizes]
    for i in order:
        kinds = sorted((k for k in left if left[k] > 0), key=lambda k: -left[k])[: sizes[i]]
        if len(kinds) < sizes[i]:
            raise ValueError("these request counts cannot be shared out with distinct types per referral")
        for kind in kinds:
            chosen[i].add(kind)
            left[kind] -= 1
    for _ in range(3 * len(sizes)):
        a, b = rng.randrange(len(sizes)), rng.randrange(len(sizes))
        only_a, only_b = sorted(chosen[a] - chosen[b]), sorted(chosen[b] - chosen[a])
        if only_a and only_b:
            x, y = rng.choice(only_a), rng.choice(only_b)
            chosen[a].symmetric_difference_update({x, y})
            chosen[b].symmetric_difference_update({x, y})
    return [tuple(sorted(kinds, key=lambda k: (TYPES.index(k) if k in TYPES else len(TYPES), k))) for kinds in chosen]


def make_plan(spec: LoadSpec, postcodes: Mapping[str, Sequence[str]], *, now: datetime | None = None) -> Plan:
    """The whole load, exactly as `spec` asks. `postcodes` holds real postcodes for each hub slug (and for
    OUT_OF_AREA and UNKNOWN, if asked for); `now` caps every time, so nothing is dated in the future."""
    problems = spec.problems()
    if problems:
        raise ValueError("; ".join(problems))
    now = now or datetime.now(UTC)
    if spec.start > now.astimezone(LONDON).date():
        raise ValueError("--from is in the future: a demo records what has happened")
    rng = random.Random(spec.seed)
    fingerprint = spec.fingerprint()

    days = [
        day for day, n in largest_remainder(spec.referrals, day_weights(spec.start, spec.end)).items() for _ in range(n)
    ]
    channels = _shuffled(largest_remainder(spec.referrals, spec.channels), rng)
    hub_share = 1 - spec.out_of_area - spec.unknown
    places = largest_remainder(
        spec.referrals,
        {
            **{slug: hub_share * w / sum(spec.districts.values()) for slug, w in spec.districts.items()},
            OUT_OF_AREA: spec.out_of_area,
            UNKNOWN: spec.unknown,
        },
    )
    for place, count in places.items():
        if count and not postcodes.get(place):
            raise ValueError(f"no postcodes known for {place}")
    place_list = _shuffled(places, rng)
    mix = {kind: share for kind, share in spec.mix.items() if share > 0}
    sizes = request_counts(spec.referrals, spec.requests, most=len(mix))
    rng.shuffle(sizes)
    type_counts = largest_remainder(spec.requests, mix)
    for kind, count in type_counts.items():
        if count > spec.referrals:
            raise ValueError(
                f"--mix gives {kind} {count} requests, more than there are referrals ({spec.referrals}): "
                "a referral carries each type at most once"
            )
    kinds = assign_types(sizes, type_counts, rng)
    hub_requests = sum(size for size, place in zip(sizes, place_list, strict=True) if place in HUBS)
    fates = _shuffled(
        largest_remainder(hub_requests, {**spec.activity, "open": max(0.0, 1 - sum(spec.activity.values()))}), rng
    )
    names = _names(spec.referrals, rng)

    referrals = []
    for index in range(spec.referrals):
        received = _time_on(days[index], rng, now=now, from_hour=spec.opens_at_hour if days[index] == spec.start else 0)
        place = place_list[index]
        requests = []
        for kind in kinds[index]:
            fate = fates.pop() if place in HUBS else "elsewhere"
            requests.append(
                PlannedRequest(
                    type=kind,
                    urgency=_pick(URGENCIES, rng),
                    details=rng.choice(DETAILS.get(kind, ("Please call",))),
                    fate=fate,
                    steps=_steps(fate, received, rng, now=now),
                )
            )
        referrals.append(
            PlannedReferral(
                index=index,
                idempotency_key=f"demo-{fingerprint}-{index}",
                received_at=received,
                channel=channels[index],
                place=place,
                postcode=rng.choice(postcodes[place]),
                name=names[index],
                date_of_birth=date(rng.randint(1925, 1985), rng.randint(1, 12), rng.randint(1, 28)),
                phone=f"+44207946{rng.randrange(1000):04d}" if rng.random() < 0.85 else None,
                house=rng.randint(1, 180),
                street=rng.choice(STREETS),
                requests=tuple(requests),
            )
        )
    referrals.sort(key=lambda r: r.received_at)  # posted in the order they were received
    return Plan(spec=spec, referrals=tuple(referrals))


def _shuffled(counts: Mapping[str, int], rng: random.Random) -> list[str]:
    items = [key for key, n in counts.items() for _ in range(n)]
    rng.shuffle(items)
    return items


def _pick(weights: Mapping[str, float], rng: random.Random) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _names(count: int, rng: random.Random) -> list[str]:
    """Distinct names while they last, so no two demo residents look like one person to duplicate detection."""
    pool = [f"{first} {last}" for first in FIRST_NAMES for last in SURNAMES]
    rng.shuffle(pool)
    return [
        pool[i % len(pool)] + ("" if i < len(pool) else f"-{SURNAMES[(i // len(pool)) % len(SURNAMES)]}")
        for i in range(count)
    ]


def _time_on(day: date, rng: random.Random, *, now: datetime, from_hour: int = 0) -> datetime:
    hour = rng.choices(range(from_hour, 24), weights=HOURLY[from_hour:])[0]
    local = datetime.combine(day, time(hour, rng.randrange(60), rng.randrange(60)), tzinfo=LONDON)
    return min(local.astimezone(UTC), (now - timedelta(minutes=1)).replace(microsecond=0))


def _steps(fate: str, received: datetime, rng: random.Random, *, now: datetime) -> tuple[Step, ...]:
    """The hub's transitions for one request, in order, each a realistic while after the last."""
    if fate in ("open", "elsewhere"):
        return ()

    def later(after: datetime, low_hours: float, high_hours: float) -> datetime:
        at = after + timedelta(hours=rng.uniform(low_hours, high_hours))
        return min(at.replace(microsecond=0), now.replace(microsecond=0))

    if fate == "rejected":
        return (Step(fulfilment.Status.REJECTED, later(received, 0.5, 12), reason=_pick(REJECT_REASONS, rng)),)
    speed = rng.random()  # most hubs accept within hours; some take a day or three
    accepted = later(received, *((0.25, 4) if speed < 0.7 else (4, 24) if speed < 0.95 else (24, 72)))
    steps = [Step(fulfilment.Status.ACCEPTED, accepted)]
    if fate == "accepted":
        return tuple(steps)
    started = later(accepted, 0.1, 6)
    steps.append(Step(fulfilment.Status.IN_PROGRESS, started))
    if fate == "fulfilled":
        steps.append(Step(fulfilment.Status.FULFILLED, later(started, 1, 48), outcome=_pick(FULFILLED_OUTCOMES, rng)))
    elif fate == "unable":
        steps.append(
            Step(fulfilment.Status.UNABLE_TO_FULFIL, later(started, 2, 72), outcome=_pick(UNABLE_OUTCOMES, rng))
        )
    return tuple(steps)


def demo_postcodes(directory: PostcodeDirectory, *, medway_code: str = "E06000035") -> dict[str, list[str]]:
    """Real postcodes for every hub (from fulfilment's ONS directory), Medway's, and a few in no directory."""
    found = {hub.slug: directory.postcodes(district_code=hub.district_code) for hub in KENT_HUBS}
    found[OUT_OF_AREA] = directory.postcodes(district_code=medway_code)
    # Well formed, in Kent's postcode areas, and in no directory: fulfilment triages them.
    found[UNKNOWN] = [p for p in ("CT9 9XX", "ME20 9ZZ", "TN1 9ZZ", "DA1 9ZZ") if not directory.lookup(p).found]
    return found


# --- the driver -------------------------------------------------------------------------


@dataclass
class Tokens:
    """Bearer tokens: one that may backfill (referrals and transitions), and hub staff's for reading their lists."""

    backfill: str
    hubs: Mapping[str, str] = field(default_factory=dict)

    def header(self, hub: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.hubs.get(hub, self.backfill) if hub else self.backfill}"}


@dataclass
class Failure:
    what: str
    status: int | None
    detail: str


@dataclass
class Report:
    posted: int = 0
    replayed: int = 0
    requests: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    by_place: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    assignments_found: Counter[str] = field(default_factory=Counter)
    assignments_missing: Counter[str] = field(default_factory=Counter)
    transitions: Counter[str] = field(default_factory=Counter)
    already_done: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    waited_out: int = 0
    """Answers to slow down (429, 503 with Retry-After) the clients waited out and retried."""


Progress = Callable[[str, int, int], None]


async def run_demo(
    plan: Plan,
    *,
    referrals: httpx.AsyncClient,
    fulfilment: httpx.AsyncClient,
    tokens: Tokens,
    concurrency: int = 8,
    wait_seconds: float = 300.0,
    poll_seconds: float = 1.0,
    progress: Progress = lambda stage, done, total: None,
) -> Report:
    """Post the plan's referrals, wait for their assignments, make the hubs' transitions; report everything."""
    report = Report()
    loop = asyncio.get_running_loop()
    started = loop.time()
    gate = asyncio.Semaphore(concurrency)
    planned_by_request: dict[str, tuple[PlannedReferral, PlannedRequest]] = {}
    unknown = await _unknown_request_types(plan, referrals, tokens)
    if unknown:
        report.failures.append(
            Failure(
                "request types",
                None,
                f"the referrals service does not know "
                f"{', '.join(unknown)}: an administrator adds them (POST /v1/request-types)",
            )
        )
        return report

    async def post(referral: PlannedReferral) -> None:
        async with gate:
            try:
                response = await referrals.post(
                    "/v1/referrals",
                    json=referral.body(),
                    headers={**tokens.header(), "Idempotency-Key": referral.idempotency_key},
                )
            except httpx.HTTPError as error:
                report.failures.append(Failure(f"referral {referral.index}", None, f"{type(error).__name__}: {error}"))
                return
        if response.status_code != 201:
            report.failures.append(Failure(f"referral {referral.index}", response.status_code, _detail(response)))
            return
        body = response.json()
        report.posted += 1
        report.replayed += response.headers.get("Idempotent-Replayed") == "true"
        report.by_place[referral.place] += 1
        report.by_channel[referral.channel] += 1
        for stored, planned in zip(body["requests"], referral.requests, strict=True):
            planned_by_request[stored["id"]] = (referral, planned)
            report.requests += 1
            report.by_type[planned.type] += 1
        progress("referrals", report.posted + _failed(report, "referral"), len(plan.referrals))

    await asyncio.gather(*(post(r) for r in plan.referrals))
    report.seconds["post"] = loop.time() - started

    wanted: dict[str, set[str]] = {}
    for request_id, (referral, _) in planned_by_request.items():
        if referral.place in HUBS:
            wanted.setdefault(referral.place, set()).add(request_id)
    found = await _wait_for_assignments(
        fulfilment,
        tokens,
        wanted,
        report=report,
        wait_seconds=wait_seconds,
        poll_seconds=poll_seconds,
        progress=progress,
    )
    report.seconds["routing"] = loop.time() - started - report.seconds["post"]

    work = [
        (item, planned_by_request[item["request_id"]][1])
        for item in found
        if planned_by_request[item["request_id"]][1].steps
    ]
    total_steps = sum(len(planned.steps) for _, planned in work)
    done = 0

    async def move(item: dict[str, Any], planned: PlannedRequest) -> None:
        nonlocal done
        steps = _remaining(planned, item["status"])
        report.already_done += len(planned.steps) - len(steps)
        done += len(planned.steps) - len(steps)
        async with gate:
            for step in steps:
                try:
                    response = await fulfilment.post(
                        f"/v1/assignments/{item['id']}/transitions", json=step.body(), headers=tokens.header()
                    )
                except httpx.HTTPError as error:
                    report.failures.append(Failure(f"assignment {item['id']} to {step.to}", None, str(error)))
                    return
                if response.status_code != 200:
                    report.failures.append(
                        Failure(f"assignment {item['id']} to {step.to}", response.status_code, _detail(response))
                    )
                    return
                report.transitions[step.to] += 1
                done += 1
                progress("transitions", done, total_steps)

    await asyncio.gather(*(move(item, planned) for item, planned in work))
    report.seconds["transitions"] = loop.time() - started - report.seconds["post"] - report.seconds["routing"]
    report.seconds["total"] = loop.time() - started
    return report


async def _unknown_request_types(plan: Plan, referrals: httpx.AsyncClient, tokens: Tokens) -> list[str]:
    """Types the plan uses that the service would refuse: better said once than in every referral's 422."""
    response = await referrals.get("/v1/request-types", headers=tokens.header())
    if response.status_code != 200:
        return []  # each referral's answer will say what is wrong
    known = {t["id"] for t in response.json() if t["active"]}
    return sorted(set(plan.requests_by_type()) - known)


async def _wait_for_assignments(
    fulfilment: httpx.AsyncClient,
    tokens: Tokens,
    wanted: Mapping[str, set[str]],
    *,
    report: Report,
    wait_seconds: float,
    poll_seconds: float,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Each hub's assignments for our requests, read from its list as the hub would, until all are there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    found: dict[str, dict[str, Any]] = {}
    total = sum(len(ids) for ids in wanted.values())
    pending = {hub: set(ids) for hub, ids in wanted.items() if ids}
    while pending:
        for hub in list(pending):
            try:
                items = await _all_assignments(fulfilment, hub, tokens)
            except _ListFailed as error:
                report.failures.append(Failure(f"assignments of {hub}", error.status, error.detail))
                pending.pop(hub)
                continue
            for item in items:
                if item["request_id"] in pending[hub]:
                    found[item["request_id"]] = item
                    pending[hub].discard(item["request_id"])
            if not pending[hub]:
                del pending[hub]
        if pending:
            # A request an earlier run had a hub reject has moved on to triage.
            try:
                queued = await _all_assignments(fulfilment, None, tokens)
            except _ListFailed:
                queued = []
            for item in queued:
                for hub in list(pending):
                    if item["request_id"] in pending[hub]:
                        found[item["request_id"]] = item
                        pending[hub].discard(item["request_id"])
                        if not pending[hub]:
                            del pending[hub]
        progress("routed", len(found), total)
        if not pending or loop.time() > deadline:
            break
        await asyncio.sleep(poll_seconds)
    for hub, ids in pending.items():
        report.assignments_missing[hub] += len(ids)
        report.failures.append(
            Failure(f"assignments of {hub}", None, f"{len(ids)} requests not routed to {hub} after {wait_seconds:.0f}s")
        )
    for item in found.values():
        report.assignments_found[item["hub"] or item["status"]] += 1
    return list(found.values())


class _ListFailed(Exception):
    def __init__(self, status: int | None, detail: str):
        self.status, self.detail = status, detail


async def _all_assignments(fulfilment: httpx.AsyncClient, hub: str | None, tokens: Tokens) -> list[dict[str, Any]]:
    """Every assignment on a hub's list (or, for None, in the triage queue), page by page."""
    path = f"/v1/hubs/{hub}/assignments" if hub else "/v1/queues/triage"
    items, offset = [], 0
    while True:
        try:
            # Closed ones too: a rerun carries on from where each request is, done or not.
            params: dict[str, str | int] = {"limit": 500, "offset": offset, **({"closed": "true"} if hub else {})}
            response = await fulfilment.get(path, params=params, headers=tokens.header(hub))
        except httpx.HTTPError as error:
            raise _ListFailed(None, str(error)) from None
        if response.status_code != 200:
            raise _ListFailed(response.status_code, _detail(response))
        page = response.json()["items"]
        items += page
        if len(page) < 500:
            return items
        offset += 500


ORDER = tuple(
    str(status)
    for status in (
        fulfilment.Status.ROUTED,
        fulfilment.Status.ACCEPTED,
        fulfilment.Status.IN_PROGRESS,
        fulfilment.Status.FULFILLED,
        fulfilment.Status.UNABLE_TO_FULFIL,
    )
)
"""A hub's way through fulfilment's lifecycle, in order."""


def _remaining(planned: PlannedRequest, status: str) -> tuple[Step, ...]:
    """The steps still to make from `status` (a rerun carries on where the last one stopped)."""
    if status == fulfilment.Status.ROUTED:
        return planned.steps
    if planned.fate == "rejected" or status not in ORDER:
        return ()
    position = ORDER.index(status)
    return tuple(step for step in planned.steps if ORDER.index(step.to) > position)


def _failed(report: Report, prefix: str) -> int:
    return sum(1 for f in report.failures if f.what.startswith(prefix))


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        return "; ".join(f"{e.get('field')}: {e.get('reason')}" for e in errors)
    return str(body.get("detail", body))[:300] if isinstance(body, dict) else str(body)[:300]
