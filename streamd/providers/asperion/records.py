"""The simulated Asperion's records: each a pure function of (seed, tenant, resource, id),
shaped like the API's (wire.py names), and how `mutate()` changes one so that the change
shows in the unified model. Dutch, Belgian and German small businesses, amounts in EUR."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

EPOCH = datetime(2026, 3, 1, 9, 0)  # naive: Asperion local time; mutation m is stamped EPOCH + m min
CENT = Decimal("0.01")
VAT_RATE = Decimal("0.21")


SURNAMES = ("Jansen", "De Vries", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "De Boer", "Hoekstra",
            "Peeters", "Maes", "Janssens", "Schmidt", "Weber")
TRADES = ("Installatietechniek", "Bouw", "Advies", "Transport", "Bakkerij", "Webdesign", "Schilderwerken")
LEGAL = {"NL": "B.V.", "BE": "BV", "DE": "GmbH"}
PLACES = {"NL": (("Amsterdam", "1012 AB"), ("Utrecht", "3511 CE"), ("Rotterdam", "3011 AD")),
          "BE": (("Antwerpen", "2000"), ("Gent", "9000")), "DE": (("Köln", "50667"), ("Aachen", "52062"))}
STREETS = ("Hoofdstraat", "Stationsweg", "Kerkstraat", "Industrieweg", "Marktplein")
SERVICES = ("Werkzaamheden", "Onderhoud", "Advieswerk", "Levering materialen", "Licenties")
ARTICLES = (("Consultancy", "hour", 21), ("Installatie", "hour", 21), ("Onderhoudscontract", "pcs", 21),
            ("Kabel CAT6 305 m", "pcs", 21), ("Vakboek", "pcs", 9), ("Training", "hour", 21),
            ("Koffiebonen 1 kg", "pcs", 9))


Pick = Callable[[random.Random], dict[str, Any]]  # chooses the debtor of a new invoice


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def day_of(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT00:00:00")


def money(rng: random.Random, low: int, high: int) -> Decimal:
    return (Decimal(rng.randrange(low, high)) / 100).quantize(CENT)


def iban(rng: random.Random) -> str:
    """A Dutch IBAN whose check digits are right (mod 97)."""
    bban = rng.choice(("ABNA", "INGB", "RABO", "TRIO")) + f"{rng.randrange(10**10):010d}"
    digits = "".join(str(int(c, 36)) for c in bban + "NL00")
    return f"NL{98 - int(digits) % 97:02d}{bban}"


def debtor(rng: random.Random, i: int, added: datetime, changed: datetime, debtor: Pick) -> dict[str, Any]:
    country = rng.choices(("NL", "BE", "DE"), (8, 2, 1))[0]
    surname, trade = rng.choice(SURNAMES), rng.choice(TRADES)
    city, postal = rng.choice(PLACES[country])
    domain = re.sub("[^a-z]", "", (surname + trade).lower()) + "." + country.lower()
    vat = {"NL": f"NL{rng.randrange(10**9):09d}B01", "BE": f"BE0{rng.randrange(10**9):09d}",
           "DE": f"DE{rng.randrange(10**9):09d}"}[country]
    phone = {"NL": "+31", "BE": "+32", "DE": "+49"}[country] + f" {rng.randrange(10**8, 10**9)}"
    return {"id": i, "name": f"{surname} {trade} {LEGAL[country]}", "customerNumber": f"D{i:05d}",
            "iban": iban(rng), "vatNumber": vat, "street": f"{rng.choice(STREETS)} {rng.randrange(1, 200)}",
            "postalCode": postal, "city": city, "countryCode": country,
            "emailAddress": f"administratie@{domain}", "phoneNumber": phone, "currencyCode": "EUR",
            "dateAdded": stamp(added), "dateLastChange": stamp(changed), "blocked": rng.random() < 0.05}


def invoice(rng: random.Random, i: int, added: datetime, changed: datetime, pick: Pick) -> dict[str, Any]:
    debtor = pick(rng)
    day = changed.replace(hour=0, minute=0, second=0)
    excl = money(rng, 2_500, 750_000)
    vat = (excl * VAT_RATE).quantize(CENT, ROUND_HALF_UP)
    status = rng.choices((6, 7, 1, 2, 3, 8), (60, 28, 3, 3, 3, 3))[0]
    return {"id": i, "invoiceNumber": f"{day.year}{i:05d}", "date": day_of(day),
            "paymentDueDate": day_of(day + timedelta(days=30)), "debtorId": debtor["id"],
            "debtorCustomerNumber": debtor["customerNumber"], "debtorName": debtor["name"],
            "amountExclVat": excl, "vatAmount": vat, "amountInclVat": excl + vat,
            "amountOpen": Decimal("0.00") if status == 7 else excl + vat, "currencyCode": "EUR",
            "status": status, "description": f"{rng.choice(SERVICES)} {day:%m-%Y}",
            # served by /salesinvoiceswithlines only (the simulator's `_served`)
            "lines": {"_data": [{"id": i * 10 + 1, "description": f"{SERVICES[i % len(SERVICES)]}",
                                 "amount": excl, "vatAmount": vat, "vatCode": "H", "ledgerAccountId": 8000}],
                      "_meta": {"totalCount": 1}}}


def article(rng: random.Random, i: int, added: datetime, changed: datetime, pick: Pick) -> dict[str, Any]:
    label, unit, vat = rng.choice(ARTICLES)
    return {"id": i, "code": f"A{i:05d}", "description": f"{label} ({i})", "unit": unit,
            "salesPrice": money(rng, 500, 50_000), "vatPercentage": Decimal(vat), "currencyCode": "EUR",
            "blocked": rng.random() < 0.05, "dateAdded": stamp(added), "dateLastChange": stamp(changed)}


def update(resource: str, rec: dict[str, Any], m: int, now: datetime) -> None:
    """Change a field the normalizer maps, so that the update shows in the unified model."""
    if resource == "debtors":
        rec["emailAddress"] = f"finance{m}@{rec['emailAddress'].partition('@')[2]}"
        rec["dateLastChange"] = stamp(now)
    elif resource == "salesinvoices":
        if rec["status"] == 6:
            rec["status"], rec["amountOpen"] = 7, Decimal("0.00")
        else:
            rec["description"] = rec["description"].partition(" (rev.")[0] + f" (rev. {m})"
            due = datetime.fromisoformat(rec["paymentDueDate"]) + timedelta(days=14)
            rec["paymentDueDate"] = day_of(due)
    else:
        rec["salesPrice"] += Decimal("1.00")
        rec["dateLastChange"] = stamp(now)


Maker = Callable[[random.Random, int, datetime, datetime, Pick], dict[str, Any]]
MAKERS: dict[str, Maker] = {"debtors": debtor, "salesinvoices": invoice, "articles": article}


