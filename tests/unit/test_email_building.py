"""What may become an email: the address rule at sign-up, and the message the mailer builds from whatever a
row holds (an address or a product name stored before today's rules included). No I/O."""

from __future__ import annotations

import email
import email.policy
from email.headerregistry import Address
from email.utils import getaddresses
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skuflow.platform.text import a_plain_text, one_line
from skuflow.users import emails
from skuflow.users.mailer import Mailer, Unbuildable, on_the_wire

HEADERS = {"From", "To", "Subject", "Message-ID", "Content-Type", "Content-Transfer-Encoding", "MIME-Version"}
LINE_BREAKS = ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
# Text of every kind, and text made to look like headers.
hostile_text = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda before, brk, header: f"{before}{brk}{header}",
        st.text(max_size=20),
        st.sampled_from(LINE_BREAKS),
        st.sampled_from(["Bcc: everyone@example.com", "To: x@example.com", "", " folded", "Subject: free"]),
    ),
)


def row(email_address: str = "ada@example.com", sku: str = "SKU-1") -> Any:
    return SimpleNamespace(id=7, email=email_address, sku=sku, revision=3, attempts=0, permanent_failures=0)


@pytest.mark.parametrize(
    "text",
    [
        "a@[x.y",
        "postmaster,me@example.com",
        "ada@example.com, bob@example.com",
        "Ada <ada@example.com>",
        "ada@[127.0.0.1]",
        '"ada lovelace"@example.com',
        "ada@example.com\nBcc: x@example.com",
        "ada@exam\rple.com",
        "ädä@example.com",  # would need SMTPUTF8, which not every server speaks
        "a" * 65 + "@example.com",  # a local part has at most 64 characters
        "ada@" + "d" * 64 + ".com",  # a label has at most 63
    ],
)
def test_anything_but_one_mailbox_is_refused_at_sign_up(text: str):
    with pytest.raises(ValueError, match="not one e-mail address"):
        emails.normalize_email(text)


def test_a_stored_address_on_a_domain_sign_up_now_refuses_still_gets_its_email():
    with pytest.raises(ValueError, match="not one e-mail address"):
        emails.normalize_email("ada@corp.local")  # a new address must be able to receive mail from anywhere
    message = Mailer._message(row("ada@corp.local"), "Blue mug")  # one stored before is still one mailbox
    assert [address.addr_spec for address in message["To"].addresses] == ["ada@corp.local"]


def test_a_domain_in_unicode_is_kept_in_its_ascii_form():
    assert emails.normalize_email("Ada@Bücher.Example") == "ada@xn--bcher-kva.example"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.emails(), st.text(max_size=60), st.from_regex(r"[a-z,<>\[\]\"@. \n]{1,30}", fullmatch=True)))
def test_an_accepted_address_is_exactly_one_plain_mailbox(text: str):
    try:
        address = emails.normalize_email(text)
    except ValueError:
        return
    assert address.isascii()
    assert address == address.lower()
    assert len(address) <= emails.MAX_EMAIL_LENGTH
    assert getaddresses([address]) == [("", address)]
    assert Address(addr_spec=address).addr_spec == address


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.one_of(hostile_text, st.text(min_size=60, max_size=200)))  # long ones are folded
def test_no_product_name_can_add_a_header_or_break_the_subject(name: str):
    message = Mailer._message(row(), name)

    parsed = email.message_from_bytes(on_the_wire(message), policy=email.policy.default)
    assert set(parsed.keys()) == HEADERS
    assert [str(value) for value in parsed.get_all("To")] == ["ada@example.com"]
    subject = str(parsed["Subject"])
    assert subject == f"{one_line(name) or 'SKU-1'} is available again"
    assert a_plain_text(subject)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(stored=st.one_of(st.emails(), hostile_text))
def test_a_stored_address_either_makes_one_recipient_or_cannot_be_built(stored: str):
    try:
        message = Mailer._message(row(stored), "Blue mug")
    except Unbuildable as error:
        message, reason = None, str(error)
    if message is None:
        assert "is not one mailbox" in reason
        return
    parsed = email.message_from_bytes(on_the_wire(message), policy=email.policy.default)
    assert set(parsed.keys()) == HEADERS
    [recipient] = parsed["To"].addresses
    assert recipient.addr_spec == emails.normalize_email(stored, new=False)


@pytest.mark.parametrize("text", ["Blue\nmug", "Blue\x85mug", "Blue\u2028mug", "Blue\x00mug", "Blue\ud800mug"])
def test_plain_text_refuses_line_breaks_and_control_characters(text: str):
    with pytest.raises(ValueError, match="no control characters, line breaks or line separators"):
        a_plain_text(text)


def test_one_line_keeps_ordinary_text_and_flattens_the_rest():
    assert (
        one_line("Blue mug \u2013 0,5 l \N{TEACUP WITHOUT HANDLE}") == "Blue mug \u2013 0,5 l \N{TEACUP WITHOUT HANDLE}"
    )
    assert one_line(" Blue\r\n\u2028mug\t ") == "Blue mug"


@pytest.mark.parametrize(("code", "for_good"), [(250, False), (421, False), (451, False), (550, True), (553, True)])
def test_only_a_5xx_answer_refuses_for_good(code: int, for_good: bool):
    assert emails.smtp_refused_for_good(code) is for_good


def test_an_email_is_given_up_after_three_permanent_refusals():
    assert [emails.email_given_up(count) for count in range(5)] == [False, False, False, True, True]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    stored=st.one_of(st.emails(), hostile_text),
    name=st.one_of(
        hostile_text,
        st.text(min_size=60, max_size=200),
        st.from_regex(r"[ -~]{1,120}", fullmatch=True),  # plain ASCII: the part written without the package
        st.from_regex(r"[A-Za-z0-9]{900,1000}", fullmatch=True),  # a subject at the wire's line length
    ),
    sku=st.sampled_from(["SKU-1", "SKU-2", "BENCH-0000012345"]),
)
def test_the_email_sent_is_the_reference_message_byte_for_byte(stored: str, name: str, sku: str):
    """The mailer sends `_email` (a product's part built once, for every email about it); the tests above hold
    of `_message`, which it must equal on the wire, whatever the row and the name."""
    try:
        reference = Mailer._message(row(stored, sku), name)
    except Unbuildable:
        with pytest.raises(Unbuildable):
            Mailer._email(row(stored, sku), name)
        return
    for _ in range(2):  # built, then from the product's part already built
        recipient, subject, content = Mailer._email(row(stored, sku), name)
        assert content == on_the_wire(reference)
        assert (recipient, subject) == (reference["To"].addresses[0].addr_spec, str(reference["Subject"]))
