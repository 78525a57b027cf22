"""Headers as RabbitMQ hands them over, written back when a message is retried or dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime

from pamqp import decode, encode

from skuflow.messaging import Envelope
from skuflow.messaging.amqp import _properties
from skuflow.messaging.envelope import text


def test_a_header_decoded_as_bytes_can_be_published_again():
    """pamqp hands a long string that is not UTF-8 (sent by some other client) over as `bytes`, and then
    cannot write `bytes`: the copy for a wait queue or the DLQ failed to publish, for as long as the publish
    timeout, and the message went to the DLQ without a reason. Bytes go back as an AMQP byte array."""
    headers = {"note": b"\xff\xfe", "x-death": [{"queue": b"\xfe", "count": 1}], "plain": "ok"}
    envelope = Envelope("sku_processed", b"{}", "other", "m-1", "c-1", None, datetime.now(UTC), headers)

    table = _properties(envelope).headers

    _, decoded = decode.field_table(encode.field_table(table))
    assert decoded == {"note": b"\xff\xfe", "x-death": [{"queue": b"\xfe", "count": 1}], "plain": "ok"}


def test_header_text_is_read_from_a_byte_array_and_from_bytes_in_any_encoding():
    assert (text(bytearray(b"expired")), text(b"expired"), text(b"\xffok")) == ("expired", "expired", "\ufffdok")
