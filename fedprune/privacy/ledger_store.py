"""``LedgerStore``: node-local, tamper-evident, fail-closed persistence of privacy ledgers.

Layout of a store directory (one per node; never shared between nodes):

``ledger.key``
    32 random bytes (``os.urandom``), mode 0600, created on first use: the HMAC-SHA256 key.
``heads``
    The authenticated head of every holder: its entry count and the MAC of its last entry, so
    a truncated or rolled-back holder file is detected.
``<holder>.ledger``
    The holder's append-only record: one line per change, ``<mac> <json>``. Each JSON body holds
    the full state after the change (accountant, delta, budget, history), its sequence number
    and the SHA-256 of the previous line; the MAC is HMAC-SHA256 of the body under the key.

Every file is written atomically (:func:`fedprune.io.atomic_write`): the holder file first, then
the heads. A crash in between leaves a holder file one authentic entry ahead of its head, which
is accepted (it only records more spending) and repaired on the next write.

Not detected: rolling the store back to an earlier state of itself -- an older copy of the whole
directory, or an older ``heads`` together with deleting the holder files created since -- and
anything done by someone who can read the key. Keep the directory on the node, readable by the
node's user only, and back it up as a whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fedprune.io import atomic_write
from fedprune.privacy.accounting import AccountantName, HistoryEntry
from fedprune.privacy.ledger import PrivacyLedger

__all__ = ["LedgerIntegrityError", "LedgerStore"]

logger = logging.getLogger(__name__)

KEY_FILE = "ledger.key"
HEADS_FILE = "heads"
LOCK_FILE = ".lock"
LEDGER_SUFFIX = ".ledger"

_VERSION = 1
_KEY_BYTES = 32
_GENESIS = "0" * 64
_ENTRY_DOMAIN = b"fedprune-ledger-entry\x00"
_HEADS_DOMAIN = b"fedprune-ledger-heads\x00"
_ENTRY_FIELDS = {
    "version",
    "holder",
    "seq",
    "prev",
    "accountant",
    "delta",
    "max_epsilon",
    "history",
}
_HOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_OPERATOR_ADVICE = (
    "The ledger store fails closed: it will not let this holder start again from zero. Restore "
    "the store directory from a backup (the key, heads and holder files together); do not delete "
    "files to get past this error, since that would forget privacy budget already spent."
)


class LedgerIntegrityError(RuntimeError):
    """A ledger store on disk is missing, edited, truncated, or does not match the request."""


@dataclass(frozen=True)
class _Entry:
    body: dict[str, Any]
    mac: str
    line: bytes  # without the newline


@dataclass(frozen=True)
class _Head:
    count: int
    last_mac: str


class LedgerStore:
    """Privacy ledgers of the data holders on one node, kept in ``directory``.

    :meth:`open` returns a holder's :class:`PrivacyLedger` (empty for a holder never seen
    before); :meth:`save` appends its new state. Anything on disk that does not verify raises
    :class:`LedgerIntegrityError` naming the file: the store never silently starts a holder
    from zero. Operations on one directory are serialised with an exclusive ``flock``, so
    several processes on a node may share it.

    Budget: the ledger's ``max_epsilon`` is the tighter of the stored budget and the one asked
    for; a caller can lower a holder's budget (permanently), never raise it.

    Formal guarantees
    -----------------
    Without the key, no change to a holder's record -- editing, reordering, truncating or
    deleting it, or swapping in another holder's file -- goes undetected, except rolling the
    store back to an earlier state of itself (see the module docstring). A saved history can
    only grow: a history that drops steps is refused. Epsilon reported for a holder is
    therefore never lower than what the store last recorded for it.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._seen: dict[str, _Head] = {}

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def heads_path(self) -> Path:
        return self.directory / HEADS_FILE

    def path_of(self, holder: str) -> Path:
        """The file holding ``holder``'s record."""
        return self.directory / f"{_checked_holder(holder)}{LEDGER_SUFFIX}"

    def open(
        self,
        holder: str,
        *,
        accountant: AccountantName,
        delta: float,
        max_epsilon: float = math.inf,
    ) -> PrivacyLedger:
        """``holder``'s ledger, with budget ``min(stored, max_epsilon)``.

        A holder never seen before gets an empty ledger, recorded at once (so that deleting its
        file later is detected). A tighter budget than the stored one is recorded too.

        Raises
        ------
        LedgerIntegrityError
            The store or the holder's record does not verify, or it was recorded with another
            ``accountant`` or ``delta``.
        ValueError
            An invalid holder name, accountant, delta or budget.
        """
        requested = PrivacyLedger(accountant=accountant, delta=delta, max_epsilon=max_epsilon)
        path = self.path_of(holder)
        with self._locked():
            key, heads = self._load_store()
            entries = self._entries(holder, key, heads)
            if not entries:
                self._append(holder, key, heads, entries, requested)
                return requested
            stored = _ledger_of(entries[-1])
            if (stored.accountant, stored.delta) != (accountant, delta):
                raise LedgerIntegrityError(
                    f"{path}: holder {holder!r} was recorded with accountant={stored.accountant}, "
                    f"delta={stored.delta:g}, but is opened with accountant={accountant}, "
                    f"delta={delta:g}. Its spent budget cannot be carried over to other "
                    "accounting settings; use the recorded ones (or a new holder name)."
                )
            if max_epsilon < stored.max_epsilon:
                stored.max_epsilon = max_epsilon
                self._append(holder, key, heads, entries, stored)
            else:
                self._seen[holder] = _head_of(entries)
            return stored

    def save(self, holder: str, ledger: PrivacyLedger) -> None:
        """Append ``ledger``'s state to ``holder``'s record (nothing if it is unchanged).

        The stored budget stays the tighter of the two, and ``ledger.max_epsilon`` is lowered to
        it if needed.

        Raises
        ------
        ValueError
            ``ledger``'s history is not an extension of the stored one (it would remove steps),
            or its accountant or delta differ from the stored ones.
        LedgerIntegrityError
            The store or the holder's record does not verify, or the record changed on disk
            since this store last opened or saved it (another process wrote it).
        """
        path = self.path_of(holder)
        with self._locked():
            key, heads = self._load_store()
            entries = self._entries(holder, key, heads)
            if entries:
                seen = self._seen.get(holder)
                if seen is not None and seen != _head_of(entries):
                    raise LedgerIntegrityError(
                        f"{path}: the record of holder {holder!r} changed on disk since this "
                        "store read it (another process saved it): refusing to overwrite steps "
                        "that process recorded. Open the ledger again and retry."
                    )
                stored = _ledger_of(entries[-1])
                if (stored.accountant, stored.delta) != (ledger.accountant, ledger.delta):
                    raise ValueError(
                        f"{path}: holder {holder!r} is recorded with accountant="
                        f"{stored.accountant}, delta={stored.delta:g}; cannot save a ledger with "
                        f"accountant={ledger.accountant}, delta={ledger.delta:g}"
                    )
                if not _extends(ledger.entries, stored.entries):
                    raise ValueError(
                        f"{path}: refusing to save holder {holder!r}: its history "
                        f"{ledger.entries} is not an extension of the stored one "
                        f"{stored.entries} (steps can be added, never removed)"
                    )
                ledger.max_epsilon = min(ledger.max_epsilon, stored.max_epsilon)
                unchanged = _runs(ledger.entries) == _runs(stored.entries)
                if unchanged and ledger.max_epsilon == stored.max_epsilon:
                    return
            self._append(holder, key, heads, entries, ledger)

    # ---- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _load_store(self) -> tuple[bytes, dict[str, _Head]]:
        """The key and the verified heads; a store without either is created if it is empty."""
        if not self.key_path.exists():
            others = sorted(p.name for p in self.directory.glob(f"*{LEDGER_SUFFIX}"))
            if self.heads_path.exists() or others:
                raise LedgerIntegrityError(
                    f"{self.key_path} is missing, but the store holds "
                    f"{[HEADS_FILE, *others] if self.heads_path.exists() else others}: the key "
                    f"was deleted or moved, so no ledger here can be verified. {_OPERATOR_ADVICE}"
                )
            key = os.urandom(_KEY_BYTES)
            _write_private(self.key_path, key)
            self._write_heads(key, {})
            return key, {}
        key = self.key_path.read_bytes()
        if len(key) != _KEY_BYTES:
            raise LedgerIntegrityError(
                f"{self.key_path} holds {len(key)} bytes, not a {_KEY_BYTES}-byte key: it was "
                f"replaced or damaged. {_OPERATOR_ADVICE}"
            )
        if stat.S_IMODE(self.key_path.stat().st_mode) & 0o077:
            logger.warning("%s is readable by other users; it should be mode 0600", self.key_path)
        return key, self._read_heads(key)

    def _read_heads(self, key: bytes) -> dict[str, _Head]:
        path = self.heads_path
        if not path.exists():
            raise LedgerIntegrityError(
                f"{path} is missing (the key {self.key_path} exists): the record of which holders "
                f"this node has and how long their records are was deleted. {_OPERATOR_ADVICE}"
            )
        body = _verified_line(path, path.read_bytes(), key, _HEADS_DOMAIN, self.key_path)
        try:
            holders = body["holders"]
            heads = {
                h: _Head(count=int(v["count"]), last_mac=str(v["last_mac"]))
                for h, v in holders.items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise LedgerIntegrityError(
                f"{path} authenticates but is not a heads record ({err}). {_OPERATOR_ADVICE}"
            ) from err
        return heads

    def _write_heads(self, key: bytes, heads: dict[str, _Head]) -> None:
        body = {
            "version": _VERSION,
            "holders": {
                h: {"count": head.count, "last_mac": head.last_mac}
                for h, head in sorted(heads.items())
            },
        }
        line = _signed_line(key, _HEADS_DOMAIN, body)
        _write_private(self.heads_path, line + b"\n")

    def _entries(self, holder: str, key: bytes, heads: dict[str, _Head]) -> list[_Entry]:
        """``holder``'s verified entries ([] for a holder never seen), checked against its head."""
        path = self.path_of(holder)
        head = heads.get(holder)
        if not path.exists():
            if head is not None:
                raise LedgerIntegrityError(
                    f"{path} is missing, but {self.heads_path} records {head.count} entries for "
                    f"holder {holder!r}: the file was deleted or moved. {_OPERATOR_ADVICE}"
                )
            return []
        data = path.read_bytes()
        if not data:
            raise LedgerIntegrityError(
                f"{path} is empty: its record was erased. {_OPERATOR_ADVICE}"
            )
        if not data.endswith(b"\n"):
            raise LedgerIntegrityError(
                f"{path} does not end with a complete entry: it was truncated or edited. "
                f"{_OPERATOR_ADVICE}"
            )
        entries: list[_Entry] = []
        prev = _GENESIS
        for seq, line in enumerate(data[:-1].split(b"\n")):
            body = _verified_line(path, line, key, _ENTRY_DOMAIN, self.key_path, entry=seq)
            expected = {"version": _VERSION, "holder": holder, "seq": seq, "prev": prev}
            if set(body) != _ENTRY_FIELDS or any(body[k] != v for k, v in expected.items()):
                raise LedgerIntegrityError(
                    f"{path}: entry {seq} authenticates but is out of place (expected "
                    f"{expected}, got { {k: body.get(k) for k in expected} }): entries were "
                    f"reordered, or copied from another holder's file. {_OPERATOR_ADVICE}"
                )
            entries.append(_Entry(body=body, mac=line[:64].decode(), line=line))
            prev = hashlib.sha256(line).hexdigest()
        if head is not None and (
            len(entries) < head.count or entries[head.count - 1].mac != head.last_mac
        ):
            raise LedgerIntegrityError(
                f"{path} has {len(entries)} entries that do not end in the head "
                f"{self.heads_path} recorded ({head.count} entries): the file was truncated "
                f"or replaced by an older copy. {_OPERATOR_ADVICE}"
            )
        if head is None or len(entries) > head.count:
            logger.warning(
                "%s is ahead of %s (an interrupted save): using its %d authentic entries",
                path,
                self.heads_path,
                len(entries),
            )
        return entries

    def _append(
        self,
        holder: str,
        key: bytes,
        heads: dict[str, _Head],
        entries: list[_Entry],
        ledger: PrivacyLedger,
    ) -> None:
        body = {
            "version": _VERSION,
            "holder": holder,
            "seq": len(entries),
            "prev": hashlib.sha256(entries[-1].line).hexdigest() if entries else _GENESIS,
            "accountant": ledger.accountant,
            "delta": ledger.delta,
            "max_epsilon": ledger.max_epsilon if math.isfinite(ledger.max_epsilon) else None,
            "history": [list(e) for e in ledger.entries],
        }
        line = _signed_line(key, _ENTRY_DOMAIN, body)
        content = b"".join(e.line + b"\n" for e in entries) + line + b"\n"
        _write_private(self.path_of(holder), content)
        head = _Head(count=len(entries) + 1, last_mac=line[:64].decode())
        self._seen[holder] = head  # before the heads: the holder file is what was written
        self._write_heads(key, {**heads, holder: head})


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by the owner only."""

    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, write, mode=0o600)


def _checked_holder(holder: str) -> str:
    if not isinstance(holder, str) or not _HOLDER.fullmatch(holder):
        raise ValueError(
            f"expected a holder name of 1-128 letters, digits, '.', '_' or '-' (starting with a "
            f"letter or digit), got {holder!r}"
        )
    return holder


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _mac(key: bytes, domain: bytes, payload: bytes) -> str:
    return hmac.new(key, domain + payload, hashlib.sha256).hexdigest()


def _signed_line(key: bytes, domain: bytes, body: dict[str, Any]) -> bytes:
    payload = _canonical(body)
    return _mac(key, domain, payload).encode() + b" " + payload


def _verified_line(
    path: Path,
    line: bytes,
    key: bytes,
    domain: bytes,
    key_path: Path,
    *,
    entry: int | None = None,
) -> dict[str, Any]:
    """The JSON body of one ``<mac> <json>`` line, if its MAC verifies under ``key``."""
    where = f"{path}" if entry is None else f"{path}: entry {entry}"
    line = line.rstrip(b"\n") if entry is None else line
    mac, _, payload = line.partition(b" ")
    expected = _mac(key, domain, payload).encode()
    if len(mac) != 64 or not hmac.compare_digest(mac, expected):
        raise LedgerIntegrityError(
            f"{where} does not authenticate under the node key {key_path}: the file was edited "
            f"or damaged, or the key was replaced. {_OPERATOR_ADVICE}"
        )
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # authentic yet unparsable
        raise LedgerIntegrityError(f"{where} authenticates but is not JSON: {err}") from err
    if not isinstance(body, dict) or body.get("version") != _VERSION:
        raise LedgerIntegrityError(f"{where} is not a version-{_VERSION} record")
    return body


def _ledger_of(entry: _Entry) -> PrivacyLedger:
    body = entry.body
    try:
        return PrivacyLedger(
            accountant=body["accountant"],
            delta=body["delta"],
            max_epsilon=math.inf if body["max_epsilon"] is None else body["max_epsilon"],
            history=body["history"],
        )
    except (ValueError, TypeError) as err:
        raise LedgerIntegrityError(
            f"entry {body.get('seq')} of holder {body.get('holder')!r} authenticates but holds "
            f"an invalid ledger: {err}"
        ) from err


def _head_of(entries: list[_Entry]) -> _Head:
    return _Head(count=len(entries), last_mac=entries[-1].mac)


def _runs(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """``history`` with zero-step entries dropped and adjacent equal mechanisms merged."""
    runs: list[HistoryEntry] = []
    for nm, sr, steps in history:
        if steps == 0:
            continue
        if runs and runs[-1][:2] == (nm, sr):
            runs[-1] = (nm, sr, runs[-1][2] + steps)
        else:
            runs.append((nm, sr, steps))
    return runs


def _extends(new: list[HistoryEntry], old: list[HistoryEntry]) -> bool:
    """True if the step sequence of ``new`` starts with the step sequence of ``old``."""
    new_runs, old_runs = _runs(new), _runs(old)
    if not old_runs:
        return True
    if len(new_runs) < len(old_runs) or new_runs[: len(old_runs) - 1] != old_runs[:-1]:
        return False
    last_new, last_old = new_runs[len(old_runs) - 1], old_runs[-1]
    return last_new[:2] == last_old[:2] and last_new[2] >= last_old[2]
