"""The simulated Connec!'s data: one group's books (a `Ledger`) shaped like the API's
entities (wire.py names).

A history is a pure function of (seed, group, its index, entities, start, until); a
mutation of that and the calls before it. Books add up: a line's `total_price` is
`quantity × unit_price`, an invoice's `amount` the sum of its lines, its `balance` the
total less what payments applied (0 when PAID or VOIDED); a payment applies to a real
invoice of the group (or none: on account). What an entity refers to was created before
it. Stamps: RFC 3339 UTC, `Z`, whole seconds (`STAMP`); amounts: Decimal, 2 decimals. A
change replaces an entity's dict (never in place): a snapshot keeps the old state.
"""

from __future__ import annotations

import copy
import functools
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from . import wire

Entity = dict[str, Any]
STAMP = "%Y-%m-%dT%H:%M:%SZ"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
PAYMENT_TERM = timedelta(days=30)
SECOND = timedelta(seconds=1)
#: The order a group's books are made in: what an entity refers to is made before it.
ORDER = ("company", "tax_codes", "accounts", "items", "organizations", "people", "invoices", "payments")
assert set(ORDER) == set(wire.COLLECTIONS)
APPS = ("xero", "myob", "quickbooks")  # another app of the group: a second entry in `id`


@dataclass(frozen=True)
class Profile:
    """Where a group's company is: currency, tax (standard rate in percent), places."""

    country: str
    currency: str
    timezone: str
    tax: str
    rate: Decimal
    legal: str
    phone: str  # a pattern: "#" is a digit
    tax_id: str  # a pattern
    places: tuple[tuple[str, ...], ...]  # (city, region, postal code)
    streets: tuple[str, ...]


def _rows(text: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(cell.strip() for cell in line.split("|")) for line in text.strip().splitlines())


PROFILES = (
    Profile("AU", "AUD", "Australia/Sydney", "GST", Decimal("10.00"), "Pty Ltd",
            "+61 2 #### ####", "## ### ### ###",
            _rows("Sydney|NSW|2000\nMelbourne|VIC|3000\nBrisbane|QLD|4000\nPerth|WA|6000"),
            ("George Street", "Collins Street", "Queen Street", "Hay Street")),
    Profile("NZ", "NZD", "Pacific/Auckland", "GST", Decimal("15.00"), "Limited",
            "+64 9 ### ####", "###-###-###",
            _rows("Auckland|Auckland|1010\nWellington|Wellington|6011\nChristchurch|Canterbury|8011"),
            ("Queen Street", "Lambton Quay", "Colombo Street")),
    Profile("GB", "GBP", "Europe/London", "VAT", Decimal("20.00"), "Ltd",
            "+44 20 #### ####", "GB#########",
            _rows("London|London|EC1A 1BB\nManchester|Greater Manchester|M1 1AE\nBristol|Bristol|BS1 4DJ"),
            ("High Street", "Deansgate", "Park Street")),
)
# name | reference | sale rate | purchase rate (as shares of the standard rate)
TAX_CODES = _rows("""
{tax} on Income|OUTPUT|1|0
{tax} on Expenses|INPUT|0|1
{tax} Free Income|EXEMPTOUTPUT|0|0
{tax} on Imports|GSTONIMPORTS|0|1
Zero Rated Exports|ZERORATEDOUTPUT|0|0
Out of Scope|NONE|0|0
{tax} on Capital|CAPEXINPUT|0|1""")
# code | name | class | type
CHART = _rows("""
090|Business Bank Account|ASSET|BANK
200|Sales|REVENUE|REVENUE
260|Other Revenue|REVENUE|OTHER_INCOME
310|Cost of Goods Sold|EXPENSE|DIRECT_COSTS
404|Bank Fees|EXPENSE|EXPENSE
429|General Expenses|EXPENSE|EXPENSE
610|Accounts Receivable|ASSET|CURRENT
800|Accounts Payable|LIABILITY|CURRENT_LIABILITY
820|{tax} Payable|LIABILITY|CURRENT_LIABILITY
970|Owner Funds Introduced|EQUITY|EQUITY
461|Printing & Stationery|EXPENSE|OVERHEADS
493|Travel - National|EXPENSE|OVERHEADS""")
# code | name | description | unit | sale price | type
CATALOGUE = _rows("""
CONSULT|Consulting|Senior consultant|hour|180.00|SERVICE
DEV|Development|Software developer|hour|150.00|SERVICE
SUPPORT|Support plan|Business-hours support|month|490.00|SERVICE
LIC-STD|Standard licence|Per user|month|29.00|SERVICE
TRAIN|Training day|On-site training|day|1200.00|SERVICE
INSTALL|Installation|Hardware installation|each|350.00|SERVICE
PAPER|Printer paper|A4, box of 5 reams|box|42.50|PURCHASED
TONER|Toner cartridge|Black, high yield|each|118.90|PURCHASED
ROUTER|Office router|Wi-Fi 6, configured|each|429.00|INVENTORY""")
STEMS = _rows("""
Harbour Logistics
Blue Gum Cafe
Southern Cross Plumbing
Kiwi Orchard
Thames Joinery
Lion City Robotics
Redgum Design
Coastal Freight
Summit Accounting
Bright Spark Electrical
Wattle Bakery
Ironbark Construction
Silver Fern Media
Canal Street Books
Marina Bay Florist
Outback Tours
Pacific Dental
Granite Legal""")
COMPANIES = ("Acme Consulting", "Bluebird Software", "Keystone IT Services", "Meridian Digital")
FIRST = ("Olivia Jack Charlotte Noah Amelia William Isla Thomas Mia James Ava Lucas Grace Henry Chloe Oliver "
         "Ruby Leo Zoe Ethan").split()
LAST = ("Smith Nguyen Williams Brown Wilson Taylor Tan Martin Anderson Thompson Walker Patel Lee Harris "
        "Clarke Wong Evans King Murphy Scott").split()
INVOICE_STATUSES = {"DRAFT": 15, "AUTHORISED": 75, "VOIDED": 10}  # in the history; payments pay them


def stamp(t: datetime) -> str:
    """`t` (aware, or naive UTC) as `STAMP`."""
    return (t.astimezone(UTC) if t.tzinfo else t).strftime(STAMP)


@functools.lru_cache(maxsize=1 << 16)
def instant(text: str) -> datetime:
    """An RFC 3339 time (`Z`, an offset, or none: UTC) as an aware UTC datetime; ValueError
    if it is not one."""
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def later(previous: str, now: datetime) -> str:
    """The `updated_at` of a change made `now`: at least a second after `previous`."""
    return stamp(max(now, instant(previous) + SECOND))


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


def _price(net: Decimal, rate: Decimal, currency: str | None = None) -> dict[str, Any]:
    tax = _cents(net * rate / 100)
    out: dict[str, Any] = {"net_amount": net, "tax_amount": tax, "total_amount": net + tax, "tax_rate": rate}
    return out | {"currency": currency} if currency else out


def _between(rng: random.Random, low: datetime, high: datetime) -> datetime:
    return low + timedelta(seconds=rng.randint(0, max(0, int((high - low).total_seconds()))))


def _pick(rng: random.Random, table: tuple[Any, ...] | list[Any]) -> Any:
    return table[rng.randrange(len(table))]


def _nth(table: tuple[tuple[str, ...], ...], n: int) -> tuple[str, tuple[str, ...]]:
    """The n-th row (from 1) of a table, and a suffix that numbers it once the table ran out."""
    lap, i = divmod(n - 1, len(table))
    return (f" {lap + 1}" if lap else ""), table[i]


def _revised(text: str | None) -> str:
    """`text (rev N+1)` from `text (rev N)` or `text`."""
    m = re.fullmatch(r"(.*) \(rev (\d+)\)", text or "")
    return f"{m[1]} (rev {int(m[2]) + 1})" if m else f"{text or ''} (rev 1)".lstrip()


def _fill(rng: random.Random, pattern: str) -> str:
    return "".join(str(rng.randrange(10)) if c == "#" else c for c in pattern)


def _day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0)


class Ledger:
    """One group's books: `data[collection][key]`, the key being the Connec! id."""

    def __init__(self, seed: int, group: str, index: int) -> None:
        self.seed, self.group = seed, group
        self.profile = PROFILES[(seed + index) % len(PROFILES)]
        rng = random.Random(f"{seed}/{group}/app")
        self.app = _pick(rng, APPS)
        self.app_realm = str(rng.randrange(10**14, 10**15)) if self.app == "quickbooks" else self._uuid(rng)
        self.data: dict[str, dict[str, Entity]] = {c: {} for c in ORDER}
        self.made: dict[str, int] = dict.fromkeys(ORDER, 0)
        self.special: dict[str, Entity] = {}  # "sale tax", "purchase tax", "bank": what lines refer to
        self._span = (datetime.min, datetime.min)  # of create(): (start, until)
        self._history = False
        self._links: list[tuple[str, Decimal]] = []  # what a new payment applies: (invoice, amount)

    @staticmethod
    def _uuid(rng: random.Random) -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def history(self, entities: int, start: datetime, until: datetime) -> None:
        rng = random.Random(f"{self.seed}/{self.group}/history")
        for collection in ORDER:
            for _ in range(1 if collection == "company" else entities):
                self.create(collection, rng, start, until, history=True)

    # ------------------------------------------------------------ making entities

    def create(self, collection: str, rng: random.Random, start: datetime, until: datetime, *,
               history: bool = False) -> tuple[str, list[str]]:
        """A new entity made between `start` and `until` (both now for a mutation): its key,
        and the invoices it changed (a payment pays invoices)."""
        self.made[collection] += 1
        self._span, self._history, self._links = (start, until), history, []
        entity = _MAKERS[collection](self, rng, self.made[collection])
        key = entity["id"][0]["id"]  # the Connec! id comes first
        self.data[collection][key] = entity
        return key, [self._apply(invoice, amount, entity["created_at"]) for invoice, amount in self._links]

    def _head(self, rng: random.Random, *refs: Entity | None) -> tuple[Entity, datetime]:
        """id, group_id, created_at, updated_at: created after everything in `refs`."""
        start, until = self._span
        low = max([start, *(instant(e["created_at"]) for e in refs if e is not None)])
        created = _between(rng, min(low, until), until)
        updated = created if rng.random() < 0.5 else _between(rng, created, until)
        ids = [{"provider": wire.CONNEC_ID, "id": self._uuid(rng), "realm": self.group}]
        if rng.random() < 0.4:
            other = str(rng.randrange(1, 10**5)) if self.app == "quickbooks" else self._uuid(rng)
            ids.append({"provider": self.app, "id": other, "realm": self.app_realm})
        return {"id": ids, "group_id": self.group, "created_at": stamp(created),
                "updated_at": stamp(updated)}, created

    def _address(self, rng: random.Random) -> dict[str, str]:
        city, region, postal = _pick(rng, self.profile.places)
        return {"line1": f"{rng.randint(1, 400)} {_pick(rng, self.profile.streets)}", "city": city,
                "region": region, "postal_code": postal, "country": self.profile.country}

    def _phone(self, rng: random.Random) -> str:
        return _fill(rng, self.profile.phone)

    def _company(self, rng: random.Random, n: int) -> Entity:
        p, (head, _) = self.profile, self._head(rng)
        stem = COMPANIES[(self.seed + n) % len(COMPANIES)]
        slug = stem.lower().replace(" ", "-")
        return head | {"name": f"{stem} {p.legal}", "currency": p.currency, "timezone": p.timezone,
                       "tax_number": _fill(rng, p.tax_id), "country": p.country,
                       "email": {"address": f"hello@{slug}.example"}, "phone": {"landline": self._phone(rng)},
                       "website": f"https://{slug}.example", "address": {"billing": self._address(rng)}}

    def _tax_code(self, rng: random.Random, n: int) -> Entity:
        lap, (name, reference, sale, purchase) = _nth(TAX_CODES, n)
        head, _ = self._head(rng)
        if reference in ("OUTPUT", "INPUT"):
            self.special.setdefault("sale tax" if reference == "OUTPUT" else "purchase tax", head)
        rate = self.profile.rate
        return head | {"name": name.format(tax=self.profile.tax) + lap, "reference": reference,
                       "description": f"{reference.title()} tax code",
                       "sale_tax_rate": _cents(rate * int(sale)),
                       "purchase_tax_rate": _cents(rate * int(purchase)),
                       "status": "ACTIVE"}

    def _account(self, rng: random.Random, n: int) -> Entity:
        lap, (code, name, klass, kind) = _nth(CHART, n)
        head, _ = self._head(rng)
        if kind == "BANK":
            self.special.setdefault("bank", head)
        return head | {"code": code + lap.replace(" ", "."), "description": None,
                       "name": name.format(tax=self.profile.tax) + lap,
                       "class": klass, "type": kind, "currency": self.profile.currency, "status": "ACTIVE"}

    def _item(self, rng: random.Random, n: int) -> Entity:
        lap, (code, name, description, unit, price, kind) = _nth(CATALOGUE, n)
        tax = self.special.get("sale tax")
        head, _ = self._head(rng, tax)
        net, currency = Decimal(price), self.profile.currency
        out = head | {"code": code + lap.replace(" ", "-"), "name": name + lap,
                      "description": description, "status": "ACTIVE", "type": kind, "unit": unit,
                      "sale_price": _price(net, self.profile.rate, currency),
                      "purchase_price": {"net_amount": _cents(net * Decimal("0.6")), "currency": currency}}
        return out | {"sale_tax_code_id": [tax["id"][0]]} if tax else out

    def _organization(self, rng: random.Random, n: int) -> Entity:
        (lap, (stem,)), p = _nth(STEMS, n), self.profile
        head, _ = self._head(rng)
        customer = rng.random() < 0.8
        supplier = not customer or rng.random() < 0.2
        slug = stem.lower().replace(" ", "-")
        billing = self._address(rng)
        return head | {"name": f"{stem} {p.legal}{lap}",
                       "reference": f"{'CUST' if customer else 'SUP'}-{n:04d}", "is_customer": customer,
                       "is_supplier": supplier, "tax_number": _fill(rng, p.tax_id), "status": "ACTIVE",
                       "email": {"address": f"accounts@{slug}.example"},
                       "phone": {"landline": self._phone(rng), "mobile": None}, "website": f"https://{slug}.example",
                       "address": {"billing": billing, "shipping": dict(billing)}}

    def _person(self, rng: random.Random, n: int) -> Entity:
        first, last = _pick(rng, FIRST), _pick(rng, LAST)
        orgs = list(self.data["organizations"].values())
        org = _pick(rng, orgs) if orgs and rng.random() < 0.5 else None
        head, _ = self._head(rng, org)
        out = head | {"title": _pick(rng, ("Mr", "Ms", "Dr", None)), "first_name": first, "last_name": last,
                      "job_title": _pick(rng, ("Director", "Office Manager", "Accounts Payable", None)),
                      "reference": f"P-{n:04d}", "is_customer": True, "is_supplier": False,
                      "email": {"address": f"{first}.{last}{n}@mail.example".lower()},
                      "phone_work": {"landline": self._phone(rng), "mobile": self._phone(rng)},
                      "address_work": {"billing": self._address(rng)}}
        return out | {"organization_id": [org["id"][0]]} if org else out

    def _invoice(self, rng: random.Random, n: int) -> Entity:
        orgs, people = list(self.data["organizations"].values()), list(self.data["people"].values())
        party, field = None, "organization_id"
        if orgs and (not people or rng.random() < 0.7):
            party = _pick(rng, orgs)
        elif people:
            party, field = _pick(rng, people), "person_id"
        supplier = party is not None and party.get("is_supplier") is True and (
            not party.get("is_customer") or rng.random() < 0.5)
        tax, rate = self.special.get("purchase tax" if supplier else "sale tax"), self.profile.rate
        items = list(self.data["items"].values())
        chosen = rng.sample(items, min(len(items), rng.randint(1, 4)))
        head, created = self._head(rng, party, tax, *chosen)
        lines: list[dict[str, Any]] = []
        for i, item in enumerate(chosen or [None], 1):
            quantity = Decimal(_pick(rng, (1, 1, 2, 3, 5, 8, 10, 12, 20, 40)))
            if item is None:
                unit, description = _cents(Decimal(rng.randrange(2000, 90000)) / 100), "Services"
            else:
                unit = item["purchase_price" if supplier else "sale_price"]["net_amount"]
                description = item["description"]
            line = {"line_number": i, "description": description, "quantity": quantity,
                    "unit_price": _price(unit, rate), "total_price": _price(_cents(quantity * unit), rate)}
            if item is not None:
                line["item_id"] = [item["id"][0]]
            lines.append(line | {"tax_code_id": [tax["id"][0]]} if tax else line)
        net = sum((line["total_price"]["net_amount"] for line in lines), ZERO)
        vat = sum((line["total_price"]["tax_amount"] for line in lines), ZERO)
        status = rng.choices(list(INVOICE_STATUSES), list(INVOICE_STATUSES.values()))[0]
        status = status if self._history else "AUTHORISED"
        day = _day(created)
        out = head | {"transaction_number": f"{'BILL' if supplier else 'INV'}-{n:04d}",
                      "transaction_date": stamp(day), "due_date": stamp(day + PAYMENT_TERM),
                      "status": status, "type": "SUPPLIER" if supplier else "CUSTOMER",
                      "title": f"{(chosen[0]['name'] if chosen else 'Services')} {day:%B %Y}",
                      "balance": ZERO if status in ("PAID", "VOIDED") else net + vat,
                      "amount": {"net_amount": net, "tax_amount": vat, "total_amount": net + vat,
                                 "tax_rate": rate, "currency": self.profile.currency},
                      "lines": lines}
        return out | {field: [party["id"][0]]} if party else out

    def _payment(self, rng: random.Random, n: int) -> Entity:
        """Pays an open invoice: all of its balance (in the history, sometimes half)."""
        invoices = self.data["invoices"].values()
        candidates = [e for e in invoices if e["status"] == "AUTHORISED" and e["balance"] > 0]
        invoice, bank = _pick(rng, candidates) if candidates else None, self.special.get("bank")
        head, created = self._head(rng, invoice, bank)
        out = head | {"transaction_date": stamp(_day(created)), "type": "CUSTOMER", "status": "ACTIVE",
                      "payment_reference": f"PMT-{n:04d}"}
        linked: list[dict[str, Any]] = []
        if invoice is None:  # on account
            amount = _cents(Decimal(rng.randrange(5000, 200000)) / 100)
        else:
            amount = invoice["balance"]
            if self._history and rng.random() < 0.4:
                amount = _cents(amount / 2)
            self._links.append((invoice["id"][0]["id"], amount))
            linked.append({"id": [invoice["id"][0]], "class": "Invoice", "applied_amount": amount})
            out["type"] = invoice["type"]
            out |= {f: invoice[f] for f in ("organization_id", "person_id") if f in invoice}
        out["amount"] = {"total_amount": amount, "currency": self.profile.currency}
        out["payment_lines"] = [{"amount": amount, "linked_transactions": linked}]
        return out | {"account_id": [bank["id"][0]]} if bank else out

    def _apply(self, key: str, amount: Decimal, at: str) -> str:
        """`amount` of a payment made `at` applied to invoice `key` (a new dict)."""
        old = self.data["invoices"][key]
        invoice = copy.deepcopy(old)
        invoice["balance"] = max(ZERO, old["balance"] - amount)
        if invoice["balance"] == 0:
            invoice["status"] = "PAID"
        made = instant(at)
        invoice["updated_at"] = (stamp(max(made, instant(old["updated_at"]))) if self._history
                                 else later(old["updated_at"], made))
        self.data["invoices"][key] = invoice
        return key

    # ------------------------------------------------------------ changing entities

    def update(self, collection: str, key: str, rng: random.Random, now: datetime) -> Entity:
        """A change made `now` (`updated_at` at least a second later): an invoice moves on
        (DRAFT, AUTHORISED, PAID with balance 0; then a new title), a party gets a new phone,
        an item a 5 % dearer price, an account is (un)archived, the rest a revised text."""
        old = self.data[collection][key]
        e, status = copy.deepcopy(old), old.get("status")
        e["updated_at"] = later(old["updated_at"], now)
        if collection == "invoices" and status in ("DRAFT", "AUTHORISED"):
            e |= {"status": "AUTHORISED"} if status == "DRAFT" else {"status": "PAID", "balance": ZERO}
        elif collection in ("organizations", "company", "people"):
            field = "phone_work" if collection == "people" else "phone"
            e[field] = {**(e.get(field) or {}), "landline": self._phone(rng)}
        elif collection == "items":
            p = e["sale_price"]
            e["sale_price"] = _price(_cents(p["net_amount"] * Decimal("1.05")), p["tax_rate"],
                                     p.get("currency"))
        elif collection == "accounts":
            e["status"] = "ARCHIVED" if status == "ACTIVE" else "ACTIVE"
        else:
            field = {"invoices": "title", "payments": "payment_reference"}.get(collection, "description")
            e[field] = _revised(e.get(field))
        self.data[collection][key] = e
        return e


_MAKERS: dict[str, Callable[[Ledger, random.Random, int], Entity]] = {
    "company": Ledger._company, "tax_codes": Ledger._tax_code, "accounts": Ledger._account,
    "items": Ledger._item, "organizations": Ledger._organization, "people": Ledger._person,
    "invoices": Ledger._invoice, "payments": Ledger._payment}
