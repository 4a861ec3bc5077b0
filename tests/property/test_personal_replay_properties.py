"""Strict replay holds with personal fields, with the data key and after its erasure.

For arbitrary personal values and data keys: a saga whose data and step
results carry personal fields is run with the test kit under its data key;
then every recorded input is re-decided (``replay_entries(strict=True)``):

* with the same key, current code decides byte for byte what was recorded
  (the encryption is deterministic);
* with the key destroyed, the same holds (the sealed values are carried as
  their ciphertexts), and the scope names exactly the fields it could not read;
* nowhere in the journal is a personal value in plaintext.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sagaline import Personal, SagaTestKit
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.replay_check import definition_lookup, replay_entries
from sagaline.orchestrator.core.saga import Saga, approval, step
from sagaline.schemas.codec import default_codec
from sagaline.schemas.personal import ERASED, KeyScope, saga_keys

pytestmark = pytest.mark.unit


class Order(BaseModel):
    order_id: str
    email: Annotated[str, Personal]
    shipped_to: Annotated[str | None, Personal] = None
    label: str | None = None


class Shipment(BaseModel):
    label: str
    address: Annotated[str, Personal]


class Shipping(Saga[Order]):
    type_name = "personal_shipping"

    @step()
    def ship(self, ctx: StepContext, data: Order) -> Shipment:
        raise NotImplementedError  # the kit replies instead

    @ship.on_result
    def _shipped(self, data: Order, result: Shipment) -> Order:
        return data.model_copy(update={"shipped_to": result.address, "label": result.label})

    confirm = approval(timeout=timedelta(days=1))


_LOOKUP = definition_lookup(Shipping)
# distinctive enough that finding one in the journal's bytes is never chance
_text = st.text(max_size=30).map(lambda s: f"personal<{s}>@example.org")


def _run(sid: str, email: str, address: str, approve: bool) -> SagaTestKit[Order]:
    kit = SagaTestKit(Shipping, saga_id=sid)
    kit.start(Order(order_id="o-1", email=email))
    kit.succeed(Shipping.ship, Shipment(label="L-1", address=address))
    if approve:
        kit.approve(Shipping.confirm, by="manager")
    else:
        kit.reject(Shipping.confirm, by="manager")
    return kit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    email=_text,
    address=_text,
    key=st.binary(min_size=32, max_size=32),
    approve=st.booleans(),
)
def test_strict_replay_holds_with_the_key_and_after_erasure(
    email: str, address: str, key: bytes, approve: bool
) -> None:
    sid = "saga-personal"
    with saga_keys(KeyScope(sid, key)):
        kit = _run(sid, email, address, approve)
        assert kit.data.email == email and kit.data.shipped_to == address
        report = replay_entries({sid: kit.journal}, strict=True, definitions=_LOOKUP)
    assert report.ok and report.checked_inputs == len(kit.journal) and not report.divergences

    codec = default_codec()
    raw = b"".join(codec.encode(entry) for entry in kit.journal)
    assert email.encode() not in raw and address.encode() not in raw

    erased = KeyScope(sid, None)
    with saga_keys(erased):
        after = replay_entries({sid: kit.journal}, strict=True, definitions=_LOOKUP)
        data = kit.data
    assert after.ok and not after.divergences
    assert data.email == ERASED and data.shipped_to == ERASED and data.label == "L-1"
    assert erased.sealed == {"Order.email", "Order.shipped_to", "Shipment.address"}
