"""The text encoder that search and the open-vocabulary head use: the owner's (app/text/encoders), one per
process and spec."""

from __future__ import annotations

import functools

from app.text.encoders import DEFAULT_ENCODER, encoder_from_spec


@functools.lru_cache(maxsize=4)
def load_encoder(spec: str = DEFAULT_ENCODER):
    """The text encoder that `spec` names (default: the bundled multilingual one), loaded once per process."""
    return encoder_from_spec(spec)


def encoder_id(encoder) -> str:
    """`name@version`: what an artifact made with `encoder` records."""
    return f"{encoder.name}@{encoder.version}"
