"""User payloads: pydantic models ⇄ Payload, by value or by reference."""

from __future__ import annotations

import hashlib
from typing import ClassVar

import pytest
from pydantic import BaseModel

from sagaline.schemas.base import Payload, PayloadRef
from sagaline.schemas.errors import PayloadError
from sagaline.schemas.payload import (
    PayloadStore,
    from_payload,
    payload_bytes,
    payload_sha256,
    payload_type_name,
    payload_version,
    to_payload,
)

pytestmark = pytest.mark.unit


class Order(BaseModel):
    order_id: str
    amount_cents: int
    lines: list[str] = []


class Refund(BaseModel):
    payload_type: ClassVar[str] = "shop.Refund"
    payload_version: ClassVar[int] = 2
    order_id: str
    reason: str


class DictStore:
    """An in-memory PayloadStore (the Postgres one lives in consumers/payload_store.py)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, data: bytes) -> PayloadRef:
        digest = hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return PayloadRef(sha256=digest, size=len(data))

    def get(self, ref: PayloadRef) -> bytes:
        return self.blobs[ref.sha256]


def test_type_name_and_version() -> None:
    assert payload_type_name(Order) == f"{__name__}.Order"
    assert payload_version(Order) == 1
    assert payload_type_name(Refund) == "shop.Refund"
    assert payload_version(Refund) == 2


def test_inline_round_trip() -> None:
    order = Order(order_id="o-1", amount_cents=1250, lines=["a", "b"])
    payload = to_payload(order)
    assert payload.data == order.model_dump_json().encode()
    assert payload.ref is None and payload.content_type == "application/json"
    assert from_payload(payload, Order) == order


def test_large_payload_goes_by_reference() -> None:
    store = DictStore()
    assert isinstance(store, PayloadStore)
    order = Order(order_id="o-2", amount_cents=1, lines=["x" * 100] * 20)
    payload = to_payload(order, store=store, threshold=1024)
    assert payload.data is None and payload.ref is not None
    assert payload.ref.size == len(order.model_dump_json())
    assert from_payload(payload, Order, store=store) == order
    with pytest.raises(PayloadError, match="no payload store"):
        from_payload(payload, Order)
    small = to_payload(Order(order_id="o", amount_cents=1), store=store, threshold=1024)
    assert small.data is not None and small.ref is None


def test_tampered_store_bytes_are_refused() -> None:
    store = DictStore()
    payload = to_payload(
        Order(order_id="o", amount_cents=1, lines=["y" * 50]), store=store, threshold=10
    )
    assert payload.ref is not None
    store.blobs[payload.ref.sha256] = b'{"order_id":"evil","amount_cents":1}'
    with pytest.raises(PayloadError, match="does not match"):
        payload_bytes(payload, store=store)


def test_wrong_type_version_or_content_is_refused() -> None:
    refund = to_payload(Refund(order_id="o", reason="late"))
    with pytest.raises(PayloadError, match="expected"):
        from_payload(refund, Order)
    older = refund.model_copy(update={"version": 1})
    with pytest.raises(PayloadError, match="version 1"):
        from_payload(older, Refund)
    bad = Payload(type_name="shop.Refund", version=2, data=b'{"order_id": 5}')
    with pytest.raises(PayloadError, match="not a valid Refund"):
        from_payload(bad, Refund)
    empty = Payload(type_name="shop.Refund", version=2)
    with pytest.raises(PayloadError, match="neither data nor a reference"):
        from_payload(empty, Refund)


def test_payload_sha256_covers_name_version_and_bytes() -> None:
    a = to_payload(Order(order_id="o", amount_cents=1))
    b = to_payload(Order(order_id="o", amount_cents=2))
    assert payload_sha256(a) == payload_sha256(to_payload(Order(order_id="o", amount_cents=1)))
    assert payload_sha256(a) != payload_sha256(b)
    assert payload_sha256(a) != payload_sha256(a.model_copy(update={"version": 2}))
    expected = hashlib.sha256(f"{a.type_name}\x1f1\x1f".encode() + (a.data or b"")).hexdigest()
    assert payload_sha256(a) == expected


def test_bad_payload_version_attribute() -> None:
    class Weird(BaseModel):
        payload_version: ClassVar[int] = 0

    with pytest.raises(PayloadError, match="positive int"):
        to_payload(Weird())
