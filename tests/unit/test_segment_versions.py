"""Segment versions (ids kept across refits, bytes) and a shard's bounded sample of its users."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from rewardloop.learning.bandits import ConfigError, Thompson, make_policy
from rewardloop.learning.segments import SegmentModel
from rewardloop.learning.segments.versions import HEAD, decode, encode, next_version
from rewardloop.learning.surface import ColdStart
from rewardloop.state.segment_priors import (
    SAMPLE_ARMS,
    SAMPLE_USERS,
    Sample,
    decode_evidence,
    encode_evidence,
    sample_hash,
)


def _model(means: list[list[float]]) -> SegmentModel:
    m = np.array(means)
    k = len(m)
    return SegmentModel(m, np.full(m.shape, 5.0), np.arange(1.0, k + 1), np.full(k, 1.0 / k))


def test_versions_round_trip_through_bytes_and_reject_corruption() -> None:
    version = next_version(None, _model([[0.1, 0.5, 0.2], [0.6, 0.1, 0.3]]), 123)
    back = decode(encode(version))
    assert (back.version, back.created_ms, back.ids, back.next_id) == (1, 123, (0, 1), 2)
    for name in ("means", "plays", "strengths", "weights"):
        np.testing.assert_array_equal(getattr(back.model, name), getattr(version.model, name))
    blob = bytearray(encode(version))
    blob[20] ^= 1
    with pytest.raises(ValueError, match="corrupt"):
        decode(bytes(blob))
    with pytest.raises(ValueError, match="truncated"):
        decode(encode(version)[:10])


def test_a_refit_keeps_the_ids_of_the_segments_it_finds_again_and_never_reuses_one() -> None:
    first = next_version(None, _model([[0.1, 0.5], [0.5, 0.1]]), 1)
    # The same two in the other order, slightly moved, plus a third unlike either.
    second = next_version(first, _model([[0.52, 0.12], [0.3, 0.3], [0.11, 0.49]]), 2)
    assert second.ids[0] == first.ids[1] and second.ids[2] == first.ids[0]
    assert second.ids[1] == 2 and second.next_id == 3
    moved = second.moved(first)
    assert moved[1] is None and moved[0] is not None and 0 < moved[0] < 0.2
    # The middle one goes away, then a segment like it comes back: a new id, not 2 again.
    third = next_version(second, _model([[0.5, 0.1], [0.1, 0.5]]), 3)
    fourth = next_version(third, _model([[0.5, 0.1], [0.1, 0.5], [0.3, 0.3]]), 4)
    assert set(third.ids) == {0, 1} and fourth.ids[2] == 3


def test_evidence_keeps_the_most_played_arms_and_round_trips() -> None:
    counts = np.zeros(500)
    counts[:100] = np.arange(1, 101)
    sums = counts / 2
    sums[0] = 5.0  # more rewards than plays: clipped
    arms_kept = SAMPLE_ARMS
    updated, arms, plays, rewards = decode_evidence(encode_evidence(counts, sums, 77), 500)
    assert updated == 77 and len(arms) == arms_kept
    assert set(arms.tolist()) == set(range(100 - arms_kept, 100))
    np.testing.assert_allclose(plays, counts[arms])
    np.testing.assert_allclose(rewards, sums[arms])
    with pytest.raises(ValueError, match="arm out of range"):
        decode_evidence(encode_evidence(counts, sums, 77), 50)
    with pytest.raises(ValueError, match="wrong length"):
        decode_evidence(encode_evidence(counts, sums, 77)[:-1], 500)
    one = np.array([2.0])
    assert decode_evidence(encode_evidence(one, np.array([3.0]), 1), 1)[3].tolist() == [2.0]


def test_the_sample_stays_bounded_and_uniform_over_users() -> None:
    policy = make_policy(Thompson(), 3)
    sample = Sample()
    rng = np.random.default_rng(0)
    users = [rng.bytes(16).hex() for _ in range(5 * SAMPLE_USERS)]
    for user in users:
        sample.touched(user, policy.new_state())
    kept = sample.members.keys() | sample.pending.keys()
    assert SAMPLE_USERS / 2 <= len(kept) <= SAMPLE_USERS and sample.size == len(kept)
    assert all(sample_hash(u) < sample.threshold for u in kept)
    # Those let in before the threshold fell below them are dropped (their entries deleted).
    assert sample.dropped and all(sample_hash(u) >= sample.threshold for u in sample.dropped)
    # Uniform: the kept users are spread over the whole order, not the first to arrive.
    positions = sorted(users.index(u) for u in kept)
    assert positions[len(positions) // 2] > len(users) / 3
    sample.members = {u: 1_000 for u in list(kept)[:10]}
    sample.dropped = set()
    sample.expire(before_ms=2_000)
    assert not sample.members and len(sample.dropped) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"segments": "yes"}, "segments must be true or false"),
        ({"max_segments": 0}, "max_segments must be an integer in [1, 32]"),
        ({"max_segments": 2.5}, "max_segments must be an integer"),
        ({"strength": -1}, "strength must be a number"),
    ],
)
def test_cold_start_names_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ColdStart(**kwargs)  # type: ignore[arg-type]


def test_segments_are_on_by_default_where_they_were_measured_to_help() -> None:
    assert ColdStart().learns_segments("thompson") and not ColdStart().learns_segments("ucb1")
    assert ColdStart(segments=True).learns_segments("ucb1")
    assert not ColdStart(segments=False).learns_segments("thompson")


def test_an_unset_strength_is_estimated_and_a_set_one_is_kept() -> None:
    assert ColdStart().strength is None and ColdStart().prior_strength == 2.0
    assert ColdStart(strength=7).prior_strength == 7.0


def test_a_version_carries_the_prior_mixture_and_format_1_still_decodes() -> None:
    segments = _model([[0.1, 0.5, 0.2], [0.6, 0.1, 0.3]])
    mixture = _model([[0.1, 0.5, 0.2], [0.3, 0.3, 0.3], [0.6, 0.1, 0.3], [0.2, 0.2, 0.6]])
    version = next_version(None, segments, 5, mixture)
    back = decode(encode(version))
    assert back.mixture is not None and back.prior_mixture.k == 4 and back.model.k == 2
    for name in ("means", "plays", "strengths", "weights"):
        np.testing.assert_array_equal(getattr(back.mixture, name), getattr(mixture, name))
    assert next_version(back, segments, 6).prior_mixture is not mixture  # the next fit brings its own
    # Format 1 (before the mixture): the segments' arrays, nothing after; its segments serve.
    old = next_version(None, segments, 5)
    blob = encode(old)
    head = struct.calcsize(HEAD)
    body = blob[:4] + struct.pack("<H", 1) + blob[6:-8]  # format 1, without the mixture's size (0)
    legacy = decode(body + struct.pack("<I", zlib.crc32(body)))
    assert legacy.mixture is None and legacy.prior_mixture is legacy.model and legacy.ids == old.ids
    np.testing.assert_array_equal(legacy.model.means, segments.means)
    with pytest.raises(ValueError, match="wrong length"):
        cut = encode(version)[: head + 40]
        decode(cut + struct.pack("<I", zlib.crc32(cut)))
    with pytest.raises(ValueError, match="arms"):
        encode(next_version(None, segments, 5, _model([[0.1, 0.2]])))
    empty = SegmentModel(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="no segments"):
        encode(next_version(None, segments, 5, empty))
    none = blob[: head - 8] + struct.pack("<II", 0, 3)  # a header of no segments, over 3 arms
    none += struct.pack("<I", 0)
    with pytest.raises(ValueError, match="no segments"):
        decode(none + struct.pack("<I", zlib.crc32(none)))
