"""PII masking: every kind planted in text and checked string by string, the look-alikes (versions, dates, ISBNs,
Luhn-failing order numbers, IBANs one digit off, times, plain numbers) left as they are, and `clean` masking every
text field of a record in its own shape, with counts per kind in the report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lightning_ft.prep.clean import clean
from lightning_ft.prep.pii import PII_KINDS, iban_valid, luhn_valid, mask_text, mask_value
from tests.helpers import read_jsonl, write_jsonl

MASKED = [
    ("Write to jane.doe@example.com today.", "Write to <EMAIL> today."),
    ("cc: ops+alerts@mail.example.co.uk, thanks", "cc: <EMAIL>, thanks"),
    ("Call +1 415 555 2671 now", "Call <PHONE> now"),
    ("UK office: +44 (0)20 7946 0958.", "UK office: <PHONE>."),
    ("Tel:+4930123456", "Tel:<PHONE>"),
    ("Ring (415) 555-2671 or 415.555.2671", "Ring <PHONE> or <PHONE>"),
    ("London: 020 7946 0958; Paris: 01 23 45 67 89", "London: <PHONE>; Paris: <PHONE>"),
    ("Server 192.168.10.20 answers", "Server <IP_ADDRESS> answers"),
    ("DNS 8.8.8.8:53.", "DNS <IP_ADDRESS>:53."),
    ("IPv6 2001:db8::8a2e:370:7334 and fe80::1", "IPv6 <IP_ADDRESS> and <IP_ADDRESS>"),
    ("Mapped ::ffff:192.0.2.1 here", "Mapped <IP_ADDRESS> here"),
    ("Card 4111 1111 1111 1111 exp 12/25", "Card <CREDIT_CARD> exp 12/25"),
    ("Pay with 5555-5555-5555-4444.", "Pay with <CREDIT_CARD>."),
    ("Amex 378282246310005", "Amex <CREDIT_CARD>"),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN <IBAN> please"),
    ("DE89370400440532013000", "<IBAN>"),
    ("Konto DE89 3704 0044 0532 0130 00.", "Konto <IBAN>."),
]

LOOK_ALIKES = [
    "Upgrade from 1.2.3 to v2.0.1.4, not version 1.2.3.4",
    "Released 2023-01-15, due 15/01/2023, signed 15.01.2023",
    "ISBN 978-3-16-148410-0 and 0-306-40615-2",
    "Order 4111 1111 1111 1112 and 4111111111111112 shipped",
    "Meet at 10:30 or 12:30:45",
    "There are 1234567890 stars, 3,000,000 people and 42 answers",
    "Not addresses: 256.1.1.1, 192.168.01.1, 1.2.3.4.5",
    "IBAN GB82 WEST 1234 5698 7654 33 and DE89 3704 0044 0532 0130 01",
    "Every other item: x[1::2]",
    "256626720691 + 1646615806005 = 4212883012996",  # a sum that passes Luhn: 13 digits without separators
    "472547338\n+960397912423686\n---------------",  # an addend, not a phone: 15 digits without separators
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_each_kind_is_masked_with_its_placeholder(text: str, expected: str) -> None:
    assert mask_text(text)[0] == expected


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_stay(text: str) -> None:
    assert mask_text(text) == (text, {})


def test_checksums() -> None:
    """Luhn on 4111 1111 1111 1111: from the right, the eight undoubled digits are 1s (8), the doubled ones are seven
    1s (14) and the 4 (8): 30, a multiple of 10; a last digit of 2 makes 31. IBAN GB82 WEST 1234 5698 7654 32 is the
    registry's example; mod 97 catches every single-character change, so ...33 fails."""
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    assert not iban_valid("GB82WEST1234569876543")  # GB IBANs have 22 characters


def test_counts_per_kind() -> None:
    text = "a@b.io, c@d.io, +1 415 555 2671 and 4111 1111 1111 1111"
    masked, counts = mask_text(text)
    assert masked == "<EMAIL>, <EMAIL>, <PHONE> and <CREDIT_CARD>"
    assert counts == {"email": 2, "phone": 1, "credit_card": 1}


def test_unselected_kinds_still_claim_their_text() -> None:
    """Masking phones only leaves a card number whole: its digits never become a phone."""
    text = "card 4111 1111 1111 1111, call +1 415 555 2671"
    assert mask_text(text, kinds=["phone"])[0] == "card 4111 1111 1111 1111, call <PHONE>"
    assert mask_text(text, kinds=["credit_card"])[0] == "card <CREDIT_CARD>, call +1 415 555 2671"


def test_mask_value_keeps_the_shape_and_structure_fields() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "Mail me at a@b.co"},
            {"role": "assistant", "content": "OK, or call 020 7946 0958", "tool_calls": [{"to": "x@y.org"}]},
        ],
        "images": ["photos/192.168.1.1.jpg"],
        "score": 3,
    }
    found: Counter[str] = Counter()
    masked = mask_value(record, PII_KINDS, found)
    assert masked == {
        "messages": [
            {"role": "user", "content": "Mail me at <EMAIL>"},
            {"role": "assistant", "content": "OK, or call <PHONE>", "tool_calls": [{"to": "<EMAIL>"}]},
        ],
        "images": ["photos/192.168.1.1.jpg"],
        "score": 3,
    }
    assert found == {"email": 2, "phone": 1}


def test_clean_masks_every_text_field_and_reports_each_kind(tmp_path: Path) -> None:
    """Records 0-2 carry personal data on the prompt and the response side; record 3 only look-alikes."""
    records = [
        {"instruction": "Email jane.doe@example.com", "input": "From 10.0.0.7", "output": "To jane.doe@example.com"},
        {"instruction": "Save my card", "input": "4111 1111 1111 1111", "output": "Saved, IBAN DE89370400440532013000"},
        {"instruction": "Who do I call?", "input": "", "output": "Call +44 20 7946 0958 or (415) 555-2671."},
        {"instruction": "Which version?", "input": "", "output": LOOK_ALIKES[0]},
    ]
    source = write_jsonl(tmp_path / "pii.jsonl", records)
    report = clean(str(source), str(tmp_path / "clean.jsonl"), exact_dedup=False, near_dedup=False)
    assert read_jsonl(tmp_path / "clean.jsonl") == [
        {"instruction": "Email <EMAIL>", "input": "From <IP_ADDRESS>", "output": "To <EMAIL>"},
        {"instruction": "Save my card", "input": "<CREDIT_CARD>", "output": "Saved, IBAN <IBAN>"},
        {"instruction": "Who do I call?", "input": "", "output": "Call <PHONE> or <PHONE>."},
        records[3],
    ]
    where = [f"{source}:{line}" for line in range(1, 5)]
    assert report["pii"] == {
        "email": {"count": 2, "records": [{"record": 0, "where": where[0], "count": 2}]},
        "iban": {"count": 1, "records": [{"record": 1, "where": where[1], "count": 1}]},
        "ip_address": {"count": 1, "records": [{"record": 0, "where": where[0], "count": 1}]},
        "credit_card": {"count": 1, "records": [{"record": 1, "where": where[1], "count": 1}]},
        "phone": {"count": 2, "records": [{"record": 2, "where": where[2], "count": 2}]},
    }


def test_clean_masks_chat_contents_in_place(tmp_path: Path) -> None:
    records = [
        {
            "messages": [
                {"role": "system", "content": "Support desk at help@shop.example"},
                {"role": "user", "content": "My phone is +33 1 23 45 67 89"},
                {"role": "assistant", "content": "Noted: +33 1 23 45 67 89. Anything else?"},
            ]
        }
    ]
    source = write_jsonl(tmp_path / "chat.jsonl", records)
    report = clean(str(source), str(tmp_path / "clean.jsonl"), pii_kinds=["phone"])
    assert read_jsonl(tmp_path / "clean.jsonl") == [
        {
            "messages": [
                {"role": "system", "content": "Support desk at help@shop.example"},
                {"role": "user", "content": "My phone is <PHONE>"},
                {"role": "assistant", "content": "Noted: <PHONE>. Anything else?"},
            ]
        }
    ]
    assert report["layout"] == "messages" and list(report["pii"]) == ["phone"] and report["pii"]["phone"]["count"] == 2


def test_pii_off_leaves_text(tmp_path: Path) -> None:
    records = [{"instruction": "Email a@b.io", "input": "", "output": "Done."}]
    source = write_jsonl(tmp_path / "pii.jsonl", records)
    report = clean(str(source), str(tmp_path / "clean.jsonl"), pii=False)
    assert read_jsonl(tmp_path / "clean.jsonl") == records and report["pii"] == {}


def test_unknown_kind_names_the_valid_ones(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "pii.jsonl", [{"instruction": "x", "input": "", "output": "y"}])
    with pytest.raises(ValueError, match="Unknown PII kinds \\['ssn'\\]; valid: credit_card, email, iban, ip_address"):
        clean(str(source), str(tmp_path / "clean.jsonl"), pii_kinds=["email", "ssn"])
