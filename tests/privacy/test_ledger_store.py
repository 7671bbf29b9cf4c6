"""LedgerStore: round trips, an only-tightening budget, an only-growing history, and failing closed
on every kind of tampering (edit, truncation, deletion, key replacement, empty file, swap)."""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import fedprune.io
from fedprune.privacy import LedgerIntegrityError, LedgerStore, PrivacyLedger, epsilon_of
from fedprune.privacy import ledger_store as store_module

DELTA = 1e-5
HOLDER = "client-3"


def _open(store: LedgerStore, holder: str = HOLDER, **kwargs: float) -> PrivacyLedger:
    return store.open(holder, accountant="rdp", delta=DELTA, **kwargs)


def _spend(store: LedgerStore, rounds: list[tuple[float, float, int]]) -> PrivacyLedger:
    """Open, record and save one round at a time, as a client would."""
    ledger = _open(store)
    for sigma, q, steps in rounds:
        ledger = _open(store)
        ledger.record(noise_multiplier=sigma, sample_rate=q, steps=steps)
        store.save(HOLDER, ledger)
    return ledger


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> LedgerStore:
    return LedgerStore(tmp_path / "ledgers")


ROUNDS = [(1.0, 0.1, 30), (1.0, 0.1, 20), (1.5, 0.05, 40)]


def test_round_trip_and_epsilon_survive_reopening(store: LedgerStore) -> None:
    spent = _spend(store, ROUNDS)
    again = _open(LedgerStore(store.directory))  # a new process
    assert again.entries == spent.entries == [(1.0, 0.1, 50), (1.5, 0.05, 40)]
    assert again.epsilon() == spent.epsilon() > 0
    assert again.epsilon() == epsilon_of(again.entries, delta=DELTA, accountant="rdp")
    assert (again.accountant, again.delta, again.max_epsilon) == ("rdp", DELTA, math.inf)


def test_a_new_holder_starts_empty_and_the_key_is_private(store: LedgerStore) -> None:
    _spend(store, ROUNDS)
    other = _open(store, "client-4", max_epsilon=3.0)
    assert other.entries == [] and other.max_epsilon == 3.0
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o600
    assert len(store.key_path.read_bytes()) == 32
    names = sorted(p.name for p in store.directory.iterdir())
    assert names == [".lock", "client-3.ledger", "client-4.ledger", "heads", "ledger.key"]


def test_two_stores_have_different_keys(tmp_path: Path) -> None:
    a, b = LedgerStore(tmp_path / "a"), LedgerStore(tmp_path / "b")
    _open(a), _open(b)
    assert a.key_path.read_bytes() != b.key_path.read_bytes()


def test_budget_only_tightens(store: LedgerStore) -> None:
    ledger = _open(store, max_epsilon=8.0)
    ledger.record(noise_multiplier=1.0, sample_rate=0.1, steps=10)
    store.save(HOLDER, ledger)
    assert _open(store, max_epsilon=20.0).max_epsilon == 8.0
    assert _open(store).max_epsilon == 8.0
    assert _open(store, max_epsilon=5.0).max_epsilon == 5.0  # recorded without a save
    assert _open(LedgerStore(store.directory), max_epsilon=20.0).max_epsilon == 5.0
    looser = _open(store)
    looser.max_epsilon = math.inf
    looser.record(noise_multiplier=1.0, sample_rate=0.1, steps=1)
    store.save(HOLDER, looser)
    assert looser.max_epsilon == 5.0  # lowered in memory too
    assert _open(store).max_epsilon == 5.0
    assert _open(store).steps == 11


def test_a_shrinking_history_is_refused(store: LedgerStore) -> None:
    _spend(store, ROUNDS)
    stored = _open(store).entries
    for history in [
        [(1.0, 0.1, 49), (1.5, 0.05, 40)],  # one step fewer
        [(1.0, 0.1, 50)],  # a round dropped
        [(1.5, 0.05, 40), (1.0, 0.1, 50)],  # reordered
        [(1.0, 0.1, 50), (1.2, 0.05, 40)],  # another mechanism
        [],
    ]:
        with pytest.raises(ValueError, match="not an extension of the stored one"):
            store.save(HOLDER, PrivacyLedger(accountant="rdp", delta=DELTA, history=history))
    assert _open(store).entries == stored
    grown = PrivacyLedger(accountant="rdp", delta=DELTA, history=[*stored, (2.0, 0.1, 1)])
    store.save(HOLDER, grown)  # an extension is fine, merged or not
    store.save(
        HOLDER,
        PrivacyLedger(accountant="rdp", delta=DELTA, history=[*grown.entries[:-1], (2.0, 0.1, 3)]),
    )
    assert _open(store).entries == [*stored, (2.0, 0.1, 3)]


def test_accounting_settings_must_match_the_record(store: LedgerStore) -> None:
    _spend(store, ROUNDS)
    with pytest.raises(
        LedgerIntegrityError, match=r"client-3\.ledger.*accountant=rdp, delta=1e-05"
    ):
        store.open(HOLDER, accountant="prv", delta=DELTA)
    with pytest.raises(LedgerIntegrityError, match="delta=1e-06"):
        store.open(HOLDER, accountant="rdp", delta=1e-6)
    with pytest.raises(ValueError, match="cannot save a ledger with accountant=prv"):
        store.save(HOLDER, PrivacyLedger(accountant="prv", delta=DELTA))


def test_a_concurrent_save_is_not_overwritten(store: LedgerStore) -> None:
    _spend(store, ROUNDS[:1])
    a, b = LedgerStore(store.directory), LedgerStore(store.directory)
    ledger_a, ledger_b = _open(a), _open(b)
    ledger_a.record(noise_multiplier=1.0, sample_rate=0.1, steps=5)
    a.save(HOLDER, ledger_a)
    ledger_b.record(noise_multiplier=1.0, sample_rate=0.1, steps=7)  # an "extension" that loses 5
    with pytest.raises(LedgerIntegrityError, match="changed on disk since this store read it"):
        b.save(HOLDER, ledger_b)
    assert _open(store).steps == 35


@pytest.mark.parametrize("holder", ["", "../x", "a/b", ".hidden", "client 3", "x" * 129, 3])
def test_holder_names_are_plain_file_names(store: LedgerStore, holder: object) -> None:
    with pytest.raises(ValueError, match="expected a holder name"):
        store.open(holder, accountant="rdp", delta=DELTA)  # type: ignore[arg-type]


# ---- failing closed ------------------------------------------------------------------------------


def _edit_history_byte(store: LedgerStore) -> None:
    path = store.path_of(HOLDER)
    data = path.read_bytes()
    i = data.rindex(b",40]]")  # the steps of the last round, in the last entry
    path.write_bytes(data[: i + 1] + b"9" + data[i + 2 :])  # 40 -> 90: one byte


def _truncate_last_entry(store: LedgerStore) -> None:
    path = store.path_of(HOLDER)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))


def _cut_mid_entry(store: LedgerStore) -> None:
    path = store.path_of(HOLDER)
    path.write_bytes(path.read_bytes()[:-10])


def _replace_key(store: LedgerStore) -> None:
    store.key_path.write_bytes(os.urandom(32))


def _swap_in_another_holder(store: LedgerStore) -> None:
    other = _open(store, "client-4")
    other.record(noise_multiplier=1.0, sample_rate=0.1, steps=1)
    store.save("client-4", other)
    store.path_of(HOLDER).write_bytes(store.path_of("client-4").read_bytes())


TAMPERING: list[tuple[str, Callable[[LedgerStore], None], str]] = [
    ("edit one history byte", _edit_history_byte, r"client-3\.ledger: entry 3 does not auth"),
    ("truncate the last entry", _truncate_last_entry, r"client-3\.ledger has 3 entries .*trunc"),
    ("cut mid-entry", _cut_mid_entry, r"client-3\.ledger does not end with a complete entry"),
    ("empty the file", lambda s: s.path_of(HOLDER).write_bytes(b""), r"client-3\.ledger is empty"),
    ("delete the file", lambda s: s.path_of(HOLDER).unlink(), r"client-3\.ledger is missing"),
    ("replace the key", _replace_key, r"heads does not authenticate .*key was replaced"),
    ("delete the key", lambda s: s.key_path.unlink(), r"ledger\.key is missing"),
    ("delete the heads", lambda s: s.heads_path.unlink(), r"heads is missing"),
    ("short key", lambda s: s.key_path.write_bytes(b"k" * 16), r"ledger\.key holds 16 bytes"),
    (
        "swap in another holder",
        _swap_in_another_holder,
        r"client-3\.ledger.* not auth|out of place",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "message"), [t[1:] for t in TAMPERING], ids=[t[0] for t in TAMPERING]
)
def test_tampering_fails_closed(
    store: LedgerStore, tamper: Callable[[LedgerStore], None], message: str
) -> None:
    _spend(store, ROUNDS)
    tamper(store)
    for attempt in (store, LedgerStore(store.directory)):
        with pytest.raises(LedgerIntegrityError, match=message) as info:
            _open(attempt)
        assert "fails closed" in str(info.value)
        with pytest.raises(LedgerIntegrityError):
            attempt.save(
                HOLDER, PrivacyLedger(accountant="rdp", delta=DELTA, history=[(9.0, 0.1, 999)])
            )


def test_a_rolled_back_holder_file_is_detected(store: LedgerStore) -> None:
    _spend(store, ROUNDS[:2])
    older = store.path_of(HOLDER).read_bytes()
    _spend(store, ROUNDS[2:])
    store.path_of(HOLDER).write_bytes(older)  # authentic, but older than the head
    with pytest.raises(LedgerIntegrityError, match="truncated or replaced by an older copy"):
        _open(store)


def test_edited_heads_are_detected(store: LedgerStore) -> None:
    _spend(store, ROUNDS)
    data = store.heads_path.read_bytes()
    store.heads_path.write_bytes(data.replace(b'"count":4', b'"count":3'))
    assert store.heads_path.read_bytes() != data
    with pytest.raises(LedgerIntegrityError, match=r"heads does not authenticate"):
        _open(store)


# ---- atomic writes and interrupted saves ---------------------------------------------------------


def test_every_file_is_written_atomically_through_fedprune_io(
    store: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    real = fedprune.io.atomic_write

    def spy(path: str | Path, write: Callable, *, mode: int = 0o644) -> None:  # type: ignore[type-arg]
        written.append(Path(path).name)
        assert mode == 0o600
        real(path, write, mode=mode)

    monkeypatch.setattr(store_module, "atomic_write", spy)
    _spend(store, ROUNDS)
    on_disk = {p.name for p in store.directory.iterdir()} - {".lock"}
    assert on_disk == set(written) == {"ledger.key", "heads", "client-3.ledger"}


def test_a_failed_write_leaves_the_previous_state(
    store: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _spend(store, ROUNDS).entries

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fedprune.io.os, "replace", crash)
    ledger = _open(store)
    ledger.record(noise_multiplier=3.0, sample_rate=0.1, steps=5)
    with pytest.raises(OSError, match="disk full"):
        store.save(HOLDER, ledger)
    monkeypatch.undo()
    assert _open(LedgerStore(store.directory)).entries == before
    assert {p.name for p in store.directory.iterdir()} == {
        ".lock",
        "client-3.ledger",
        "heads",
        "ledger.key",
    }  # no temporary file left


def test_a_crash_between_holder_file_and_heads_keeps_the_new_steps(
    store: LedgerStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _spend(store, ROUNDS)
    real = fedprune.io.os.replace

    def crash_on_heads(src: str, dst: str) -> None:
        if Path(dst).name == "heads":
            raise OSError("power cut")
        real(src, dst)

    monkeypatch.setattr(fedprune.io.os, "replace", crash_on_heads)
    ledger = _open(store)
    ledger.record(noise_multiplier=3.0, sample_rate=0.1, steps=5)
    with pytest.raises(OSError, match="power cut"):
        store.save(HOLDER, ledger)
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger=store_module.__name__):
        reopened = _open(LedgerStore(store.directory))
    assert reopened.entries == ledger.entries  # the authentic newer entry counts (more spent)
    assert "an interrupted save" in caplog.text
    reopened.record(noise_multiplier=3.0, sample_rate=0.1, steps=1)
    store.save(HOLDER, reopened)  # repairs the head
    assert _open(LedgerStore(store.directory)).steps == 96
