"""The one strict comparison of a state dict against the keys and shapes it must have.

Loading a checkpoint (``checkpoint.load_state_dict_strict``) and converting foreign weights
(``convert.convert_state_dict``) both report the same three things: keys missing, keys unexpected, tensors
mis-shaped. ``KeyReport`` counts them and words the message once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

Shape = Sequence[int]
SHOWN = 8  # keys named per kind in a message; the count is always given


@dataclass(frozen=True)
class KeyReport:
    """What does not fit: sorted key lists, and ``"key (given) -> (expected)"`` lines for wrong shapes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)

    def parts(self, where: str = "") -> list[str]:
        """One ``"missing<where> (n): k1, k2, ..."`` clause per non-empty kind (``where``: e.g. ``" in source"``)."""
        kinds = ((f"missing{where}", self.missing), (f"unexpected{where}", self.unexpected),
                 ("mis-shaped", self.misshaped))
        return [f"{label} ({len(keys)}): {', '.join(keys[:SHOWN])}{' ...' if len(keys) > SHOWN else ''}"
                for label, keys in kinds if keys]


def compare(
    expected: Mapping[str, Shape],
    given: Mapping[str, Shape],
    fits: Callable[[str, Shape], Shape | None] | None = None,
    describe: Callable[[str], str] = str,
) -> KeyReport:
    """Compare ``given`` shapes against ``expected`` ones, key by key.

    ``fits(key, given_shape)`` may return the shape a given tensor takes after a declared transform (a converter's
    reshape or transpose), or ``None`` when it cannot take one; by default shapes must be equal. ``describe(key)``
    names the expected side in a mis-shaped line (a converter names our key next to the source's).
    """
    missing = [k for k in expected if k not in given]
    unexpected = sorted(k for k in given if k not in expected)
    misshaped = []
    for k, want in expected.items():
        if k not in given:
            continue
        got = tuple(given[k]) if fits is None else fits(k, given[k])
        if got is None or tuple(got) != tuple(want):
            misshaped.append(f"{k} {tuple(given[k])} -> {describe(k)} {tuple(want)}")
    return KeyReport(missing, unexpected, sorted(misshaped))
