"""The simulated HORISEN's data: finance documents (customer invoices of an SMS platform
owner) and their traffic reports, shaped like the API's (wire.py names).

A history is a pure function of (seed, today, days, documents_per_day, partners,
paid_ratio, horizon); a document's traffic report a pure function of (seed, the
document's id and items). Amounts add up: the items' `totalNoVat` sum to `amountNoVat`,
their `totalVat` to `amountVat`, `total = amountNoVat + amountVat = totalPaid +
totalUnpaid`; an item bills its country's messages at one price per message, and the
traffic report splits it over the country's operators (`totalAmount = messageCount ×
pricePerMessage`, exact to 5 decimals). Times are naive UTC datetimes, written `STAMP`.

Also the documents export's query language (`predicate`, `sort_key`), pure functions.
"""

from __future__ import annotations

import operator
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from . import wire

STAMP = "%Y-%m-%d %H:%M:%S"  # statusDt, insertDt, paymentStatusDate: UTC [I]
CENT = Decimal("0.01")
PRICE_UNIT = Decimal("0.00001")  # prices per message have 5 decimals
ZERO = Decimal("0.00")
PAYMENT_TERM = timedelta(days=30)
DOMESTIC_CURRENCY = "EUR"
RATES = {"EUR": Decimal("1"), "CHF": Decimal("1.0456"), "USD": Decimal("0.9210")}  # -> EUR
STATUSES = (("approved", 90), ("draft", 5), ("canceled", 5))
CONDITIONS = ("Standard", "Premium route", "Wholesale", "OTP priority")

# Destinations: country code -> (country name, ((operator, mcc, mnc), ...)), real MCC/MNC.
NETWORKS: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "DE": ("Germany", (("Telekom Deutschland", "262", "01"), ("Vodafone", "262", "02"),
                       ("Telefónica O2", "262", "03"))),
    "CH": ("Switzerland", (("Swisscom", "228", "01"), ("Sunrise", "228", "02"), ("Salt", "228", "03"))),
    "AT": ("Austria", (("A1 Telekom Austria", "232", "01"), ("Magenta Telekom", "232", "03"),
                       ("Drei", "232", "10"))),
    "FR": ("France", (("Orange", "208", "01"), ("SFR", "208", "10"), ("Free Mobile", "208", "15"),
                      ("Bouygues Telecom", "208", "20"))),
    "NL": ("Netherlands", (("KPN", "204", "08"), ("VodafoneZiggo", "204", "04"), ("Odido", "204", "16"))),
    "GB": ("United Kingdom", (("EE", "234", "30"), ("O2", "234", "10"), ("Vodafone", "234", "15"),
                              ("Three", "234", "20"))),
    "RS": ("Serbia", (("Yettel", "220", "01"), ("mts", "220", "03"), ("A1 Srbija", "220", "05"))),
    "IT": ("Italy", (("TIM", "222", "01"), ("Vodafone", "222", "10"))),
    "ES": ("Spain", (("Vodafone", "214", "01"), ("Orange", "214", "03"), ("Movistar", "214", "07"))),
}
_COUNTRY_OF_ITEM = {f"SMS traffic {name}": code for code, (name, _) in NETWORKS.items()}
_DESTINATIONS = tuple(NETWORKS)

# Partners (the platform owner's customers): country -> weight, legal form, VAT rate,
# currency, places.
PARTNER_COUNTRIES: dict[str, tuple[int, str, Decimal, str, tuple[tuple[str, str], ...]]] = {
    "DE": (6, "GmbH", Decimal("0.19"), "EUR", (("Berlin", "10115"), ("München", "80331"), ("Köln", "50667"))),
    "CH": (3, "AG", Decimal("0.081"), "CHF", (("Zürich", "8001"), ("St. Gallen", "9000"))),
    "AT": (2, "GmbH", ZERO, "EUR", (("Wien", "1010"), ("Graz", "8010"))),
    "NL": (2, "B.V.", ZERO, "EUR", (("Amsterdam", "1012 AB"), ("Utrecht", "3511 CE"))),
    "FR": (2, "SAS", ZERO, "EUR", (("Paris", "75002"), ("Lyon", "69002"))),
    "GB": (2, "Ltd", ZERO, "USD", (("London", "EC1A 1BB"), ("Manchester", "M1 1AE"))),
    "RS": (1, "d.o.o.", ZERO, "USD", (("Beograd", "11000"), ("Novi Sad", "21000"))),
}
STEMS = ("Alpine Messaging", "Nordlicht Mobile", "Bluewave SMS", "Rheinpost Digital", "Helvetia Connect",
         "Danube Telecom", "Kestrel Notify", "Polar Bulk", "Lumen Gateway", "Vectra Mobile", "Orbit Alerts",
         "Brightline Comms", "Fjord Signal", "Meridian Push", "Sava Mobile", "Cobalt OTP", "Atlas Reach",
         "Tessera Telecom", "Quill Messaging", "Zenith Routes", "Harbor SMS", "Ember Notify")
STREETS = {"DE": "Hauptstraße", "CH": "Bahnhofstrasse", "AT": "Mariahilfer Straße", "NL": "Stationsweg",
           "FR": "Rue de la Paix", "GB": "High Street", "RS": "Knez Mihailova"}


def stamp(t: datetime) -> str:
    """`t` (naive UTC) as `STAMP`."""
    return t.isoformat(" ", "seconds")


@dataclass(frozen=True)
class Partner:
    id: int
    ref: str  # bizPartnerExternalRefId
    currency: str
    vat_rate: Decimal
    info: dict[str, Any]  # bizPartner


def partner(seed: int, p: int) -> Partner:
    """Partner `p` (from 1): a pure function of (seed, p)."""
    rng = random.Random(f"{seed}/partner/{p}")
    codes = tuple(PARTNER_COUNTRIES)
    cc = rng.choices(codes, [PARTNER_COUNTRIES[c][0] for c in codes])[0]
    _, legal, vat_rate, currency, places = PARTNER_COUNTRIES[cc]
    stem = STEMS[(p - 1) % len(STEMS)] + ("" if p <= len(STEMS) else f" {p}")
    city, zip_code = rng.choice(places)
    digits = f"{rng.randrange(10**9):09d}"
    vat = {"CH": f"CHE-{digits[:3]}.{digits[3:6]}.{digits[6:]} MWST", "AT": f"ATU{digits[:8]}",
           "NL": f"NL{digits}B01", "FR": f"FR{rng.randrange(100):02d}{digits}"}.get(cc, cc + digits)
    return Partner(p, str(uuid.UUID(int=rng.getrandbits(128), version=4)), currency, vat_rate, {
        "name": f"{stem} {legal}", "briefName": stem.split()[0].upper()[:8] + f"{p:03d}",
        "vatNumber": vat, "registrationNumber": f"{cc}-REG-{rng.randrange(10**7, 10**8)}",
        "email": f"billing@{stem.lower().replace(' ', '-')}.{cc.lower()}",
        "address": f"{STREETS[cc]} {rng.randrange(1, 120)}", "city": city, "zip": zip_code,
        "countryCode": cc})


class Records:
    """Makes documents and traffic reports for one seed and set of partners."""

    def __init__(self, seed: int, partners: int) -> None:
        if partners < 1:
            raise ValueError("at least one partner")
        self.seed = seed
        self.partners = [partner(seed, p) for p in range(1, partners + 1)]

    def history(self, today: date, days: int, per_day: int, paid_ratio: float,
                horizon: datetime) -> list[dict[str, Any]]:
        """`per_day` documents for each of the `days` days ending `today`, ids from 1 in
        date order. No stamp is later than `horizon`."""
        rng = random.Random(f"{self.seed}/history")
        out: list[dict[str, Any]] = []
        for d in range(days - 1, -1, -1):
            day = today - timedelta(days=d)
            opening = datetime(day.year, day.month, day.day, 7)
            for offset in sorted(rng.randrange(12 * 3600) for _ in range(per_day)):
                inserted = min(opening + timedelta(seconds=offset), horizon)
                out.append(self.document(rng, len(out) + 1, day, inserted, paid_ratio, horizon))
        return out

    def document(self, rng: random.Random, i: int, day: date, inserted: datetime, paid_ratio: float,
                 horizon: datetime, status: str | None = None) -> dict[str, Any]:
        """Document `i`; its `status` drawn (`STATUSES`) unless given."""
        p = self.partners[rng.randrange(len(self.partners))]
        drawn = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
        status = status or drawn
        paid_at = None
        if status == "approved" and rng.random() < paid_ratio:
            # Paid when that moment has come (not all at once at the horizon).
            at = inserted + timedelta(seconds=rng.randrange(3600, 40 * 86400))
            paid_at = at if at <= horizon else None
        items: list[dict[str, Any]] = []
        for n, cc in enumerate(rng.sample(_DESTINATIONS, rng.randint(1, 3)), 1):
            quantity = Decimal(rng.randrange(500, 200_001))
            price = Decimal(rng.randrange(1500, 9500)).scaleb(-5)
            no_vat = (quantity * price).quantize(CENT, ROUND_HALF_UP)
            items.append({"id": i * 10 + n, "name": f"SMS traffic {NETWORKS[cc][0]}", "quantity": quantity,
                          "price": price, "totalNoVat": no_vat,
                          "totalVat": (no_vat * p.vat_rate).quantize(CENT, ROUND_HALF_UP)})
        amount_no_vat = sum((it["totalNoVat"] for it in items), ZERO)
        amount_vat = sum((it["totalVat"] for it in items), ZERO)
        total = amount_no_vat + amount_vat
        rate = RATES[p.currency]
        period_end = day.replace(day=1) - timedelta(days=1)
        paid = ZERO
        part_at = None
        if status == "approved" and not paid_at:
            # Some open invoices are part paid: their own draw, so the rest of the history
            # is what it was without them.
            own = random.Random(f"{self.seed}/part/{i}")
            at = inserted + timedelta(seconds=own.randrange(3600, 20 * 86400))
            if own.random() < paid_ratio / 3 and at <= horizon:
                paid = (amount_no_vat / 2).quantize(CENT, ROUND_HALF_UP)
                part_at = at
        return {
            "id": i, "documentUuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "documentNumber": f"INV-{day.year}-{i:06d}", "documentDate": day.isoformat(),
            "dueDate": (day + PAYMENT_TERM).isoformat(), "periodStart": period_end.replace(day=1).isoformat(),
            "periodEnd": period_end.isoformat(), "currencyCode": p.currency, "amountNoVat": amount_no_vat,
            "amountVat": amount_vat, "total": total, "totalUnpaid": ZERO if paid_at else total - paid,
            "totalPaid": total if paid_at else paid, "domesticCurrencyCode": DOMESTIC_CURRENCY,
            "domesticCurrencyRate": rate, "domesticTotal": (total * rate).quantize(CENT, ROUND_HALF_UP),
            "status": status, "paymentStatus": "paid" if paid_at else "open",
            "paymentStatusDate": stamp(paid_on) if (paid_on := paid_at or part_at) else None,
            "statusDt": stamp(paid_at or part_at or inserted), "insertDt": stamp(inserted),
            "bizPartnerId": p.id,
            "bizPartnerExternalRefId": p.ref, "bizPartner": p.info, "syncStatus": "synced", "items": items,
        }

    def reports(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """The traffic report of `doc`: 1-2 operator rows per item, so 1-6 rows."""
        rng = random.Random(f"{self.seed}/reports/{doc['id']}")
        rows: list[dict[str, Any]] = []
        for item in doc["items"]:
            cc = _COUNTRY_OF_ITEM.get(item["name"])
            if cc is None:
                continue
            country, operators = NETWORKS[cc]
            chosen = rng.sample(operators, rng.randint(1, 2))
            messages = int(item["quantity"])
            first = rng.randint(1, messages - 1) if len(chosen) > 1 else messages
            condition = rng.choice(CONDITIONS)
            for (network, mcc, mnc), count in zip(chosen, (first, messages - first), strict=False):
                rows.append({"pricingConditionName": condition, "countryName": country,
                             "operatorName": network, "mcc": mcc, "mnc": mnc, "messageCount": count,
                             "pricePerMessage": item["price"],
                             "totalAmount": (count * item["price"]).quantize(PRICE_UNIT),
                             "sellCurrencyCode": doc["currencyCode"]})
        return rows


#: The stamps a change of payment moves: what the platform does is not documented.
STAMPS = ("statusDt", "paymentStatusDate")


def _stamped(doc: dict[str, Any], at: datetime, moves: tuple[str, ...]) -> dict[str, Any]:
    return {**doc, **{name: stamp(at) for name in moves}}


def pay(doc: dict[str, Any], at: datetime, moves: tuple[str, ...] = STAMPS) -> dict[str, Any]:
    """`doc` paid in full at `at`, moving the stamps in `moves`, as a new dict (the old one
    is left as it was)."""
    return _stamped({**doc, "totalUnpaid": ZERO, "totalPaid": doc["total"], "paymentStatus": "paid"},
                    at, moves)


def pay_part(doc: dict[str, Any], at: datetime, moves: tuple[str, ...] = STAMPS) -> dict[str, Any]:
    """Half of what `doc` has open paid at `at` (to the cent): `paymentStatus` stays `open`."""
    part = (doc["totalUnpaid"] / 2).quantize(CENT, ROUND_HALF_UP)
    return _stamped({**doc, "totalUnpaid": doc["totalUnpaid"] - part, "totalPaid": doc["totalPaid"] + part},
                    at, moves)


#: How `correct` changes a document.
CORRECTIONS = ("due", "vat", "quantity")


def correct(doc: dict[str, Any], kind: str, at: datetime, vat_rate: Decimal) -> dict[str, Any]:
    """`doc` corrected at `at` (`statusDt` moves), as a new dict: `due` moves the due date two
    weeks on; `vat` bills the VAT as net (reverse charge found late: the total stays, and
    what is unpaid); `quantity` bills 1,000 more messages on the first item at its price
    and `vat_rate`, and what is more is unpaid."""
    changed: dict[str, Any]
    if kind == "due":
        changed = {"dueDate": (date.fromisoformat(doc["dueDate"]) + timedelta(days=14)).isoformat()}
    elif kind == "vat":
        items = [{**it, "totalNoVat": it["totalNoVat"] + it["totalVat"], "totalVat": ZERO}
                 for it in doc["items"]]
        changed = {"items": items, "amountNoVat": doc["amountNoVat"] + doc["amountVat"], "amountVat": ZERO}
    elif kind == "quantity":
        first = doc["items"][0]
        quantity = first["quantity"] + 1000
        no_vat = (quantity * first["price"]).quantize(CENT, ROUND_HALF_UP)
        vat = (no_vat * vat_rate).quantize(CENT, ROUND_HALF_UP)
        items = [{**first, "quantity": quantity, "totalNoVat": no_vat, "totalVat": vat}, *doc["items"][1:]]
        amount_no_vat = sum((it["totalNoVat"] for it in items), ZERO)
        amount_vat = sum((it["totalVat"] for it in items), ZERO)
        total = amount_no_vat + amount_vat
        unpaid = total - doc["totalPaid"]
        changed = {"items": items, "amountNoVat": amount_no_vat, "amountVat": amount_vat, "total": total,
                   "totalUnpaid": unpaid, "paymentStatus": "paid" if unpaid <= 0 else "open",
                   "domesticTotal": (total * doc["domesticCurrencyRate"]).quantize(CENT, ROUND_HALF_UP)}
    else:
        raise ValueError(f"no correction {kind!r} (known: {', '.join(CORRECTIONS)})")
    return {**doc, **changed, "statusDt": stamp(at)}


# ---------------------------------------------------------------- the export's query language

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "gte": operator.ge, "lte": operator.le, "gt": operator.gt, "lt": operator.lt}
NUMBER_FIELDS = frozenset({"id", "bizPartnerId", "amountNoVat", "amountVat", "total", "totalUnpaid",
                           "totalPaid", "domesticCurrencyRate", "domesticTotal"})
DATE_FIELDS = frozenset({"documentDate", "dueDate", "periodStart", "periodEnd"})
STAMP_FIELDS = frozenset({"statusDt", "insertDt", "paymentStatusDate"})
SCALAR_FIELDS = frozenset(wire.Document.__struct_fields__) - {"bizPartner", "items"}  # filter and sort
_FILTER = re.compile(r"([A-Za-z]+)\(([A-Za-z]+)\)")


class BadFilter(ValueError):
    """A filter with an unknown operator or field, or a value that does not parse."""


def _value(name: str, raw: str) -> Any:
    """A filter value, comparable with the documents' values of `name`: numbers as Decimal,
    dates and stamps as strings in their fixed formats (a date bound of a stamp is midnight)."""
    try:
        if name in NUMBER_FIELDS:
            number = Decimal(raw)
            if not number.is_finite():
                raise ValueError
            return number
        if name in DATE_FIELDS:
            return date.fromisoformat(raw).isoformat()
        if name in STAMP_FIELDS:
            t = datetime.fromisoformat(raw.strip())
            return stamp(t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t)
    except (ValueError, ArithmeticError):
        raise BadFilter(f"{raw!r} is not a valid value for {name}") from None
    return raw


def predicate(param: str, raw: str) -> Callable[[dict[str, Any]], bool]:
    """One query parameter (`field=a,b`, any of them; or `op(field)=value`) as a test of a
    document; BadFilter if it is not one."""
    m = _FILTER.fullmatch(param)
    op, name = (m[1], m[2]) if m else ("eq", param)
    if name not in SCALAR_FIELDS:
        raise BadFilter(f"cannot filter on {name!r}")
    if op == "eq":
        wanted = {_value(name, v) for v in raw.split(",")}
        return lambda doc: doc[name] in wanted
    if op == "between":
        bounds = raw.split(",")
        if len(bounds) != 2:
            raise BadFilter(f"between({name}) takes two comma-separated values, not {raw!r}")
        low, high = _value(name, bounds[0]), _value(name, bounds[1])
        return lambda doc: doc[name] is not None and low <= doc[name] <= high
    compare = OPERATORS.get(op)
    if compare is None:
        raise BadFilter(f"unknown filter operator {op!r}")
    bound = _value(name, raw)
    return lambda doc: doc[name] is not None and compare(doc[name], bound)


def sort_key(name: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    """Nulls first, then numbers, then anything else by its text (a `corrupt()`ed document
    may hold a value of another type)."""
    def key(doc: dict[str, Any]) -> tuple[int, Any]:
        value = doc.get(name)
        if value is None:
            return (0, 0)
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            return (1, value)
        return (2, str(value))
    return key
