"""One realistic Connec! entity per collection (`wire.COLLECTIONS`), as the API v2 and the
notifications send them, for the tests (the simulator makes its own). They belong to one
group and refer to each other: the invoice bills the organization (with the person as
its contact) for the item, and the payment settles the invoice. Amounts are JSON numbers,
as Connec! writes them; each one here is exact in its shortest repr (`json.dumps` writes
`0.05` as `0.05`), so it reaches the normalizer digit for digit.

`SAMPLES` is shared: copy an entity before changing it (`copy.deepcopy`).
"""

from __future__ import annotations

from typing import Any

GROUP = "cld-9p4k"


def _ids(connec: str, app: str | None = None) -> list[dict[str, str]]:
    """An entity's `id`: the Connec! id, and the id an app gave it, when one did."""
    ids = [{"provider": "connec", "id": connec, "realm": GROUP}]
    if app is not None:
        ids.append({"provider": "xero", "id": app, "realm": "5c5a5e0c-e6f4-4b8f-9b5a-39e0a0c3b2d1"})
    return ids


ORGANIZATION_ID = "a6e2e5b0-5b3c-0136-c3f2-0242ac110004"
PERSON_ID = "a7f1c2d0-5b3c-0136-c3f2-0242ac110004"
ITEM_ID = "a81b4e60-5b3c-0136-c3f2-0242ac110004"
INVOICE_ID = "b2d9e3f0-5b3c-0136-c3f2-0242ac110004"
PAYMENT_ID = "c4a07a10-5b40-0136-c3f2-0242ac110004"
ACCOUNT_ID = "9d2f6a40-5b3c-0136-c3f2-0242ac110004"
TAX_CODE_ID = "9e5b8c70-5b3c-0136-c3f2-0242ac110004"
COMPANY_ID = "9c0e1f20-5b3c-0136-c3f2-0242ac110004"

SAMPLES: dict[str, dict[str, Any]] = {
    "company": {
        "id": _ids(COMPANY_ID), "group_id": GROUP,
        "created_at": "2018-03-01T02:11:09Z", "updated_at": "2018-05-14T06:40:22Z",
        "name": "Harbourside Espresso Pty Ltd", "currency": "AUD", "timezone": "Australia/Sydney",
        "tax_number": "51 824 753 556", "fiscal_year_first_month": 7,
        "email": {"address": "accounts@harbourside.example"},
        "address": {"billing": {"line1": "12 Circular Quay West", "city": "Sydney", "region": "NSW",
                                "postal_code": "2000", "country": "AU"}},
    },
    "accounts": {
        "id": _ids(ACCOUNT_ID, "3f1c5a2e-7d0b-4c8e-a1e6-5b2d9f4c8a10"), "group_id": GROUP,
        "created_at": "2018-03-01T02:12:40Z", "updated_at": "2018-03-01T02:12:40Z",
        "code": "200", "name": "Sales", "description": "Income from any normal business activity",
        "classification": "REVENUE", "type": "REVENUE", "status": "ACTIVE", "currency": "AUD",
    },
    "tax_codes": {
        "id": _ids(TAX_CODE_ID), "group_id": GROUP,
        "created_at": "2018-03-01T02:12:41Z", "updated_at": "2018-03-01T02:12:41Z",
        "name": "GST on Income", "code": "OUTPUT", "sale_tax_rate": 10.0, "purchase_tax_rate": 0,
        "status": "ACTIVE",
    },
    "organizations": {
        "id": _ids(ORGANIZATION_ID, "1d6e9b3c-42f7-4e1a-9c5d-8b7a6f5e4d3c"), "group_id": GROUP,
        "created_at": "2018-04-02T23:05:17Z", "updated_at": "2018-05-10T01:22:03.512Z",
        "name": "Quay Street Catering", "reference": "CUST-0042", "industry": "Hospitality",
        "is_customer": True, "is_supplier": False, "tax_number": "83 914 571 673", "status": "ACTIVE",
        "email": {"address": "orders@quaystreet.example"},
        "phone": {"landline": "+61 2 9251 0000", "mobile": "+61 412 345 678"},
        "address": {
            "billing": {"line1": "88 George Street", "line2": "Level 3", "city": "Sydney", "region": "NSW",
                        "postal_code": "2000", "country": "au"},
            "shipping": {"line1": "1 Hickson Road", "city": "Dawes Point", "region": "NSW",
                         "postal_code": "2000", "country": "AU"},
        },
    },
    "people": {
        "id": _ids(PERSON_ID), "group_id": GROUP,
        "created_at": "2018-04-02T23:06:01Z", "updated_at": "2018-04-02T23:06:01Z",
        "title": "Ms", "first_name": "Priya", "last_name": "Raman", "job_title": "Office Manager",
        "reference": "CONT-0107", "is_customer": True, "is_supplier": False,
        "organization_id": [{"provider": "connec", "id": ORGANIZATION_ID, "realm": GROUP}],
        "email": {"address": "priya.raman@quaystreet.example"},
        "phone_work": {"landline": None, "mobile": "+61 413 555 019"},
        "address_work": {"billing": {"line1": "88 George Street", "city": "Sydney", "region": "NSW",
                                     "postal_code": "2000", "country": "AU"}},
    },
    "items": {
        "id": _ids(ITEM_ID), "group_id": GROUP,
        "created_at": "2018-03-05T04:30:00Z", "updated_at": "2018-04-20T08:15:44Z",
        "code": "BEANS-1KG", "name": "House blend beans 1 kg", "description": "Medium roast, whole bean",
        "status": "ACTIVE", "type": "PURCHASED", "unit": "kg",
        "sale_price": {"net_amount": 38.5, "tax_rate": 10.0, "currency": "AUD"},
        "purchase_price": {"net_amount": 21.0, "tax_rate": 10.0, "currency": "AUD"},
    },
    "invoices": {
        "id": _ids(INVOICE_ID, "6b8f2a1e-93c4-4d7b-b0e5-2f1a9c8d7e6b"), "group_id": GROUP,
        "created_at": "2018-05-01T00:12:09Z", "updated_at": "2018-05-16T03:45:10Z",
        "transaction_number": "INV-0381", "transaction_date": "2018-05-01T00:00:00Z",
        "due_date": "2018-05-31T00:00:00Z", "status": "AUTHORISED", "type": "CUSTOMER",
        "title": "May coffee supply", "public_note": "Thank you for your business",
        "balance": 211.75, "deposit": 0,
        "amount": {"net_amount": 192.5, "tax_amount": 19.25, "total_amount": 211.75, "currency": "AUD"},
        "organization_id": [{"provider": "connec", "id": ORGANIZATION_ID, "realm": GROUP}],
        "person_id": [{"provider": "connec", "id": PERSON_ID, "realm": GROUP}],
        "lines": [{
            "line_number": 1, "description": "House blend beans 1 kg", "quantity": 5,
            "unit_price": {"net_amount": 38.5, "tax_amount": 3.85, "total_amount": 42.35, "tax_rate": 10.0},
            "total_price": {"net_amount": 192.5, "tax_amount": 19.25, "total_amount": 211.75,
                            "tax_rate": 10.0},
            "item_id": [{"provider": "connec", "id": ITEM_ID, "realm": GROUP}],
        }],
    },
    "payments": {
        "id": _ids(PAYMENT_ID), "group_id": GROUP,
        "created_at": "2018-05-20T05:02:31Z", "updated_at": "2018-05-20T05:02:31Z",
        "transaction_date": "2018-05-20", "type": "CUSTOMER", "status": "ACTIVE",
        "payment_reference": "EFT 20-05 QSC", "public_note": "Part payment INV-0381",
        "amount": {"total_amount": 100.0, "currency": "AUD"},
        "organization_id": [{"provider": "connec", "id": ORGANIZATION_ID, "realm": GROUP}],
        "payment_lines": [{
            "amount": 100.0,
            "linked_transactions": [{"id": [{"provider": "connec", "id": INVOICE_ID, "realm": GROUP}],
                                     "class": "Invoice", "applied_amount": 100.0}],
        }],
    },
}
