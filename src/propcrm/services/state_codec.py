"""How an account's evaluation state is stored (``account_states.state``): msgpack of
:class:`~propcrm.domain.state.AccountState`."""

from __future__ import annotations

import msgspec

from ..domain.state import AccountState

STATE_DECODER = msgspec.msgpack.Decoder(AccountState)
STATE_ENCODER = msgspec.msgpack.Encoder()

__all__ = ["STATE_DECODER", "STATE_ENCODER"]
