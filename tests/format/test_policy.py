"""The compression policy is a pure function; these pin its rule."""

from __future__ import annotations

import pytest

from runarchive.policy import KeptBytes, PendingCheckpoint, Policy, select_checkpoints


def cps(names: str) -> list[PendingCheckpoint]:
    return [PendingCheckpoint(seq, name) for seq, name in enumerate(names, start=1)]


def test_keeps_first_latest_of_each_name_and_last_n() -> None:
    pending = cps("abcabcabcabcab")  # seqs 1..14
    kept = select_checkpoints(pending, Policy(keep_last=3), first_checkpoint_seq=1)
    # first=1; latest a=13, b=14, c=12; last three = 12, 13, 14
    assert kept == {1, 12, 13, 14}


def test_last_n_dominates_when_batch_is_small() -> None:
    pending = cps("aaaa")
    assert select_checkpoints(pending, Policy(), first_checkpoint_seq=1) == {1, 2, 3, 4}


def test_first_checkpoint_only_when_in_batch() -> None:
    pending = [PendingCheckpoint(s, "a") for s in range(100, 130)]
    kept = select_checkpoints(pending, Policy(keep_last=2), first_checkpoint_seq=1)
    assert kept == {128, 129}


def test_keep_all() -> None:
    pending = cps("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert select_checkpoints(pending, Policy(keep_all=True), 1) == set(range(1, 44))


def test_everything_off_keeps_nothing() -> None:
    policy = Policy(keep_first=False, keep_latest_per_name=False, keep_last=0)
    assert select_checkpoints(cps("abc"), policy, 1) == set()


def test_deterministic_for_the_same_prefix() -> None:
    pending = cps("abcdabcdabcdabcdabcdabcdabcdabcdabcd")
    policy = Policy(keep_last=5)
    assert select_checkpoints(pending, policy, 1) == select_checkpoints(list(pending), policy, 1)


def test_seed_rule_matches_compress_after_example() -> None:
    """Seed CheckpointManager rule: 60 checkpoints of 3 names keep first, latest of each,
    and the last 20."""
    pending = [PendingCheckpoint(i, ("plan", "act", "observe")[i % 3]) for i in range(1, 61)]
    kept = select_checkpoints(pending, Policy(), first_checkpoint_seq=1)
    assert kept == {1} | set(range(41, 61))


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="keep_last"):
        Policy(keep_last=-1)
    with pytest.raises(ValueError, match="keep_lats"):
        Policy.model_validate({"keep_lats": 3})


def test_kept_bytes_matches_the_selection() -> None:
    policy = Policy(keep_last=3)
    est = KeptBytes(policy)
    sizes = {}
    for seq, name in enumerate("abcabcabcabcab", start=1):
        sizes[seq] = seq * 10
        est.add_checkpoint(seq, name, seq * 10)
    est.add_event(7)
    kept = select_checkpoints(cps("abcabcabcabcab"), policy, 1)
    assert est.total == sum(sizes[s] for s in kept) + 7
    est.reset()
    assert est.total == 0
