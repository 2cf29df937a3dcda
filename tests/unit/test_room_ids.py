"""Room id generation and validation (pure functions, seeded random sources)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privydrop.rooms.ids import (
    ALPHANUMERIC_ALPHABET,
    NUMERIC_ALPHABET,
    InvalidRoomId,
    UrandomSource,
    alphanumeric_candidates,
    alphanumeric_id,
    default_random,
    numeric_candidates,
    numeric_id,
    validate_room_id,
)
from privydrop.store.keys import contains_control_characters

MAX = 64


def test_numeric_ids_are_four_digits_and_keep_leading_zeros() -> None:
    """Generated codes are what users read out loud: four digits, "0427" included."""
    rng = random.Random(1)
    generated = [numeric_id(rng) for _ in range(2_000)]
    assert all(len(i) == 4 and i.isdigit() and i.isascii() for i in generated)
    assert any(i.startswith("0") for i in generated)


def test_alphanumeric_ids_use_letters_and_digits_only() -> None:
    """Fallback codes stay typeable: four characters of [A-Za-z0-9]."""
    rng = random.Random(2)
    for _ in range(1_000):
        generated = alphanumeric_id(rng)
        assert len(generated) == 4
        assert set(generated) <= set(ALPHANUMERIC_ALPHABET)


def test_seeded_generation_is_reproducible() -> None:
    """The injected random source fully determines the ids (tests rely on it)."""
    assert numeric_candidates(random.Random(5), 10) == numeric_candidates(random.Random(5), 10)
    assert alphanumeric_candidates(random.Random(5), 50) == alphanumeric_candidates(
        random.Random(5), 50
    )


def test_candidate_batches_have_no_duplicates() -> None:
    """A batch never wastes a store lookup on the same id twice."""

    class Always0:
        def choice(self, seq: str) -> str:
            return seq[0]

        def random(self) -> float:
            return 0.0

    assert numeric_candidates(Always0(), 10) == ["0000"]
    assert alphanumeric_candidates(Always0(), 50) == ["AAAA"]
    batch = numeric_candidates(random.Random(3), 10)
    assert len(batch) == len(set(batch))


@pytest.mark.parametrize(
    "room_id",
    ["0427", "a", "x" * MAX, "héllo wörld", "日本語", "emoji 🎉", "with space", "a-b_c.d"],
)
def test_valid_room_ids_are_accepted_unchanged(room_id: str) -> None:
    """Any printable id up to the limit works, exactly as typed."""
    assert validate_room_id(room_id, MAX) == room_id


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "must be a string"),
        (427, "must be a string"),
        (["0427"], "must be a string"),
        ("", "required"),
        ("x" * (MAX + 1), "longer than 64"),
        ("abc:sockets", "':'"),
        (":", "':'"),
        ("line\nbreak", "control"),
        ("nul\x00", "control"),
        ("del\x7f", "control"),
        ("c1\x85", "control"),
        ("bidi\u202eevil", "control"),
        ("zero\u200bwidth", "control"),
        ("sep\u2028", "control"),
        ("lone\ud800surrogate", "control"),
        ("   ", "blank"),
        ("\u3000", "blank"),
        (" 0427", "whitespace"),
        ("0427 ", "whitespace"),
        ("0427\t", "control"),
    ],
)
def test_invalid_room_ids_are_refused_with_a_reason(value: object, reason: str) -> None:
    """Bad ids get a 400 with a reason instead of polluting keys and logs.

    ``abc:sockets`` in particular would otherwise be room abc's member set.
    """
    with pytest.raises(InvalidRoomId) as caught:
        validate_room_id(value, MAX)
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason


@given(st.text(min_size=1, max_size=MAX))
def test_validation_accepts_exactly_the_safe_ids(text: str) -> None:
    """Property: accepted iff no ':', no refused character and no whitespace
    at either end; accepted ids are unchanged."""
    safe = ":" not in text and not contains_control_characters(text) and text == text.strip()
    if safe:
        assert validate_room_id(text, MAX) == text
    else:
        with pytest.raises(InvalidRoomId):
            validate_room_id(text, MAX)


def test_default_source_draws_ids_of_the_documented_shape() -> None:
    """Production room codes are four digits, or four letters/digits, never repeated in a batch."""
    rng = default_random()
    digits = numeric_candidates(rng, 10)
    letters = alphanumeric_candidates(rng, 50)
    assert digits and all(len(c) == 4 and c.isdigit() for c in digits)
    assert letters and all(len(c) == 4 and c.isalnum() and c.isascii() for c in letters)
    assert len(set(digits)) == len(digits) and len(set(letters)) == len(letters)


def test_block_source_maps_bytes_without_bias() -> None:
    """Every character of the alphabet is equally likely: a byte is used only
    below the largest multiple of the alphabet's size (248 for 62 symbols,
    250 for 10), so a guesser gains nothing from the byte-to-character map."""
    source = UrandomSource()
    # Each byte value once: the first 248 map 4 times onto each of 62 symbols.
    source._pool = bytes(range(256)) * 2
    drawn = source.strings(ALPHANUMERIC_ALPHABET, 4, 62)
    counts = Counter("".join(drawn))
    assert set(counts) == set(ALPHANUMERIC_ALPHABET)
    assert set(counts.values()) == {4}
    source._pool = bytes(range(256))
    digits = "".join(source.strings(NUMERIC_ALPHABET, 5, 50))
    assert Counter(digits) == {d: 25 for d in NUMERIC_ALPHABET}
    assert source.choice("abc") in "abc" and 0.0 <= source.random() < 1.0
