"""ISO 4217 List One: every current currency and fund code, with its minor units.

The table below is ISO 4217 List One as its maintenance agency (SIX Financial Information)
published it on `PUBLISHED`, taken from the `iso4217` package on PyPI (version
1.16.20260101), which ships that list verbatim as `iso4217/table.xml`.

To refresh it after an ISO 4217 amendment, get the new List One XML (SIX's "list one",
or `table.xml` from a newer `iso4217` package) and run

    python -m streamd.model.iso4217 path/to/list-one.xml

which rewrites the table between the markers below and `PUBLISHED`, in this file; then run
the tests and commit. Withdrawn codes (List Three, e.g. HRK since 2023) are not in List
One: an amount in one is refused like any unknown code (docs/model.md, "Currencies").
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PUBLISHED = "2026-01-01"

#: code -> minor units (digits after the point of the currency's smallest unit: EUR 2,
#: JPY 0, BHD 3); None where ISO 4217 says N.A. (gold, SDR, XXX "no currency").
MINOR_UNITS: dict[str, int | None] = {
# BEGIN TABLE
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2, "AZN": 2,
    "BAM": 2, "BBD": 2, "BDT": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2, "BOB": 2, "BOV": 2,
    "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2, "CHE": 2,
    "CHF": 2, "CHW": 2, "CLF": 4, "CLP": 0, "CNY": 2, "COP": 2, "COU": 2, "CRC": 2, "CUP": 2,
    "CVE": 2, "CZK": 2, "DJF": 0, "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2,
    "EUR": 2, "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0,
    "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2,
    "IQD": 3, "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0, "KES": 2, "KGS": 2, "KHR": 2,
    "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2,
    "LRD": 2, "LSL": 2, "LYD": 3, "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2,
    "MOP": 2, "MRU": 2, "MUR": 2, "MVR": 2, "MWK": 2, "MXN": 2, "MXV": 2, "MYR": 2, "MZN": 2,
    "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2, "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2,
    "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2, "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2,
    "RWF": 0, "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2,
    "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2, "TJS": 2,
    "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0,
    "USD": 2, "USN": 2, "UYI": 0, "UYU": 2, "UYW": 4, "UZS": 2, "VED": 2, "VES": 2, "VND": 0,
    "VUV": 0, "WST": 2, "XAD": 2, "XAF": 0, "XAG": None, "XAU": None, "XBA": None, "XBB": None,
    "XBC": None, "XBD": None, "XCD": 2, "XCG": 2, "XDR": None, "XOF": 0, "XPD": None, "XPF": 0,
    "XPT": None, "XSU": None, "XTS": None, "XUA": None, "XXX": None, "YER": 2, "ZAR": 2, "ZMW": 2,
    "ZWG": 2,
# END TABLE
}


def _render(xml: bytes) -> tuple[str, str]:
    """(published date, the table's lines) from a List One XML document."""
    root = ET.fromstring(xml)
    published = root.attrib.get("Pblshd", "")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", published):
        raise ValueError(f"not ISO 4217 List One XML (Pblshd={published!r})")
    units: dict[str, int | None] = {}
    for entry in root.iterfind("CcyTbl/CcyNtry"):
        code = (entry.findtext("Ccy") or "").strip()
        if not code:
            continue  # a country without a universal currency (Antarctica)
        digits = (entry.findtext("CcyMnrUnts") or "").strip()
        units.setdefault(code, int(digits) if digits.isdigit() else None)
    if len(units) < 100:
        raise ValueError(f"only {len(units)} codes: not a whole List One")
    lines, line = [], "    "
    for code, minor in sorted(units.items()):
        item = f'"{code}": {minor}, '
        if len(line) + len(item) > 100:
            lines.append(line.rstrip())
            line = "    "
        line += item
    lines.append(line.rstrip())
    return published, "\n".join(lines)


def refresh(xml_path: str) -> None:
    published, table = _render(Path(xml_path).read_bytes())
    me = Path(__file__)
    text = me.read_text(encoding="utf-8")
    text = re.sub(r"(?s)(# BEGIN TABLE\n).*?(\n# END TABLE)", lambda m: m[1] + table + m[2], text)
    text = re.sub(r'(?m)^PUBLISHED = "[^"]*"', f'PUBLISHED = "{published}"', text)
    me.write_text(text, encoding="utf-8")
    print(f"{me}: ISO 4217 List One published {published}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m streamd.model.iso4217 path/to/list-one.xml")
    refresh(sys.argv[1])
