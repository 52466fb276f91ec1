"""One writer per journal: the lock, a forked child, the schema version, errors that name the file, 0600 files.

Real SQLite files under tmp_path and real processes (subprocesses running a
small script, multiprocessing with "fork"); no mocks.
"""
from __future__ import annotations

import gc
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

import kit.store.journal
from kit.core.market import today_ist
from kit.store.journal import SCHEMA_VERSION, Journal, JournalError, JournalLocked, JournalSchemaError

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
ORDER = {"client_id": "c1", "broker_order_id": None, "status": "PENDING"}


def python(script: str, *args, **env) -> subprocess.Popen:
    """A subprocess running ``script`` with the kit importable and ``env`` added; stdin, stdout, stderr piped."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                            env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


HOLDER = """
    import sys
    from kit.store.journal import Journal
    journal = Journal(sys.argv[1], owner="holder")
    journal.record("intent", order={"client_id": "c1", "broker_order_id": None, "status": "PENDING"})
    print("READY", flush=True)
    sys.stdin.readline()
    journal.close()
    print("CLOSED", flush=True)
    sys.stdin.readline()
"""

OPENER = """
    import json, sys
    from kit.store.journal import Journal, JournalLocked
    try:
        journal = Journal(sys.argv[1], owner="opener")
    except JournalLocked as exc:
        print(json.dumps({"locked": str(exc), "holder": exc.holder}))
    else:
        print(json.dumps({"orders": journal.orders()}))
        journal.close()
"""


def ready(proc: subprocess.Popen, word: str = "READY") -> None:
    line = proc.stdout.readline()
    assert line.strip() == word, (line, proc.stderr.read() if proc.poll() is not None else "")


def open_elsewhere(path: Path) -> dict:
    out, err = python(OPENER, path).communicate(timeout=60)
    assert out, err
    return json.loads(out)


# ---------------------------------------------------------------------------- (a) the same process
def test_a_second_journal_in_the_same_process_is_refused_naming_the_file_and_the_holder(tmp_path):
    path = tmp_path / "j.sqlite"
    first = Journal(path, owner="alpha")
    first.record("intent", order=ORDER)
    with pytest.raises(JournalLocked) as refused:
        Journal(path, owner="beta")
    message = str(refused.value)
    assert str(path) in message and f"pid {os.getpid()}" in message and "'alpha'" in message
    assert refused.value.path == path
    assert refused.value.holder["pid"] == os.getpid() and refused.value.holder["owner"] == "alpha"
    assert refused.value.holder["host"] == socket.gethostname()

    # Another spelling of the same file is the same file.
    (tmp_path / "link.sqlite").symlink_to(path)
    for other in (tmp_path / "link.sqlite", tmp_path / "." / "j.sqlite"):
        with pytest.raises(JournalLocked):
            Journal(other)

    # The holder is unaffected; after its close() the file opens again, with what it wrote.
    first.record("ack", order=dict(ORDER, broker_order_id="B1", status="OPEN"))
    first.close()
    first.close()                                   # idempotent
    with pytest.raises(JournalError, match=f"{path} is closed"):
        first.record("late", client_id="c1")
    second = Journal(path, owner="beta")
    assert [o["status"] for o in second.orders()] == ["OPEN"]
    assert json.loads(second.lock_path.read_text())["owner"] == "beta"
    second.close()
    assert second.lock_path.read_text() == ""       # stays, emptied: nobody holds it


def test_a_journal_dropped_without_close_frees_the_file_when_collected(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).record("intent", order=ORDER)      # the habit of reading a journal in one expression
    assert Journal(path).orders() == [ORDER]
    dropped = Journal(path)
    del dropped
    gc.collect()
    Journal(path).close()


# ---------------------------------------------------------------------------- (b) another process
def test_another_process_is_refused_while_the_holder_has_it_and_opens_it_after_close(tmp_path):
    path = tmp_path / "j.sqlite"
    holder = python(HOLDER, path)
    try:
        ready(holder)
        with pytest.raises(JournalLocked) as refused:
            Journal(path, owner="here")
        message = str(refused.value)
        assert str(path) in message and f"pid {holder.pid} on {socket.gethostname()}" in message
        assert "'holder'" in message and "started " in message
        holder.stdin.write("\n")
        holder.stdin.flush()
        ready(holder, "CLOSED")
        journal = Journal(path, owner="here")          # the holder process is still alive
        assert journal.orders() == [ORDER]
        # ... and now the other direction: this process holds it, a new process is refused.
        seen = open_elsewhere(path)
        assert str(path) in seen["locked"] and f"pid {os.getpid()}" in seen["locked"] and "'here'" in seen["locked"]
        assert seen["holder"]["pid"] == os.getpid()
        journal.close()
        assert open_elsewhere(path) == {"orders": [ORDER]}
    finally:
        holder.kill()
        holder.communicate(timeout=30)


# ---------------------------------------------------------------------------- (c) a killed holder
def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "j.sqlite"
    holder = python(HOLDER, path)
    try:
        ready(holder)
        assert "locked" in open_elsewhere(path)
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait(30) == -signal.SIGKILL
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert json.loads(Path(f"{path}.lock").read_text())["pid"] == holder.pid   # what it left says who it was
    journal = Journal(path, owner="after")                                     # but the kernel freed the lock
    assert journal.orders() == [ORDER]
    assert json.loads(journal.lock_path.read_text())["pid"] == os.getpid()
    journal.close()


# ---------------------------------------------------------------------------- (d) a forked child
def _forked_child(journal: Journal, path: Path, conn, proceed) -> None:
    outcomes = {}
    for what, attempt in (("record", lambda: journal.record("intent", order=dict(ORDER, client_id="child"))),
                          ("read", journal.orders), ("open", lambda: Journal(path, owner="child"))):
        try:
            attempt()
            outcomes[what] = "done"
        except JournalError as exc:
            outcomes[what] = f"{type(exc).__name__}: {exc}"
    journal.close()                                   # a no-op here: the parent's file is not the child's
    conn.send(outcomes)
    proceed.wait(60)                                  # stays alive while the parent closes and reopens


def test_a_forked_child_cannot_write_and_does_not_keep_the_file_locked(tmp_path):
    path = tmp_path / "j.sqlite"
    journal = Journal(path, owner="parent")
    journal.record("intent", order=ORDER)
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    proceed = fork.Event()
    child = fork.Process(target=_forked_child, args=(journal, path, send, proceed))
    child.start()
    try:
        assert receive.poll(60), "the child said nothing"
        outcomes = receive.recv()
        for what in ("record", "read"):
            assert outcomes[what].startswith("JournalError: ") and str(path) in outcomes[what]
            assert f"belongs to process {os.getpid()} (trader 'parent')" in outcomes[what]
            assert f"this process ({child.pid}) was forked from it" in outcomes[what]
        assert outcomes["open"].startswith("JournalLocked: ") and f"pid {os.getpid()}" in outcomes["open"]

        # The parent's journal is unaffected, and closing it frees the file though the child lives on.
        journal.record("ack", order=dict(ORDER, broker_order_id="B1", status="OPEN"))
        assert [o["client_id"] for o in journal.orders()] == ["c1"]
        journal.close()
        assert child.is_alive()
        again = Journal(path, owner="parent again")
        assert again.orders() == [dict(ORDER, broker_order_id="B1", status="OPEN")]
        assert again._held.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        again.close()
    finally:
        proceed.set()
        child.join(30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


# ---------------------------------------------------------------------------- (e) not this schema, not SQLite
def _set_meta(path: Path, version: str | None) -> None:
    with sqlite3.connect(path) as db:
        if version is None:
            db.execute("DELETE FROM meta WHERE key = 'schema_version'")
        else:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (version,))
    db.close()


def test_another_schema_version_is_refused_naming_the_file_and_both_versions(tmp_path):
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.record("intent", order=ORDER)
    journal.close()
    for version, shown in (("2", "2"), ("0", "0"), (None, "unknown")):
        _set_meta(path, version)
        before = path.read_bytes()
        for _ in range(2):                             # a refusal leaves the file unlocked, so the second says the same
            with pytest.raises(JournalSchemaError) as refused:
                Journal(path)
            assert str(refused.value).startswith(f"{path} has journal schema version {shown}; this kit reads "
                                                 f"version {SCHEMA_VERSION}")
        assert path.read_bytes() == before             # untouched
    _set_meta(path, str(SCHEMA_VERSION))
    assert Journal(path).orders() == [ORDER]


def test_a_file_that_is_not_a_journal_is_refused_naming_it_and_left_untouched(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(8192))
    before = junk.read_bytes()
    with pytest.raises(JournalSchemaError, match=f"^{junk} is not a journal: it is not an SQLite database$"):
        Journal(junk)
    assert junk.read_bytes() == before

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE quotes (x)")
    db.close()
    with pytest.raises(JournalSchemaError, match=f"^{other} is not a journal: an SQLite database without a meta"):
        Journal(other)

    (tmp_path / "a-directory.sqlite").mkdir()
    with pytest.raises(JournalError, match="a-directory.sqlite: cannot open it for writing: Is a directory"):
        Journal(tmp_path / "a-directory.sqlite")


# ---------------------------------------------------------------------------- (f) owner-only files
MODES = """
    import json, os, sys
    from datetime import date
    os.umask(0)                                       # the worst case: everything would be world-writable
    from kit.store.journal import Journal, data_dir
    path = Journal.default_path("perm test", date(2025, 1, 2), client_code="A123")
    journal = Journal(path)
    journal.record("intent", order={"client_id": "c1", "status": "PENDING"})
    files = [path, f"{path}-wal", f"{path}-shm", f"{path}.lock", path.parent, path.parent.parent, data_dir()]
    print(json.dumps({str(f): oct(os.stat(f).st_mode & 0o777) for f in files}))
"""


def test_journal_files_are_owner_only_whatever_the_umask(tmp_path):
    data = tmp_path / "data"                           # does not exist yet: the journal creates it
    out, err = python(MODES, SMARTAPI_KIT_DATA=str(data)).communicate(timeout=60)
    assert out, err
    modes = json.loads(out)
    db = data / "journals" / "A123" / "perm_test-2025-01-02.sqlite"
    assert modes == {str(db): "0o600", f"{db}-wal": "0o600", f"{db}-shm": "0o600", f"{db}.lock": "0o600",
                     str(db.parent): "0o700", str(db.parent.parent): "0o700", str(data): "0o700"}


def test_an_older_journals_loose_mode_is_tightened(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    for f in (path, Path(f"{path}.lock")):
        os.chmod(f, 0o644)
    journal = Journal(path)
    journal.record("intent", order=ORDER)
    for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), journal.lock_path):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    journal.close()


# ---------------------------------------------------------------------------- (g) a full disk
FILLER = """
    import json, resource, signal, sys
    from kit.store.journal import Journal, JournalError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # a write past the limit fails with EFBIG instead
    journal = Journal(sys.argv[1], owner="filler")
    record = lambda i: journal.record("intent", payload={"i": i},
                                      order={"client_id": f"c{i:05d}", "status": "PENDING", "pad": "x" * 3000})
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
    done, errors = 0, []
    while len(errors) < 2 and done < 10_000:
        try:
            record(done)
            done += 1
        except JournalError as exc:
            errors.append(str(exc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    try:                                              # space again: the same journal goes on
        record(done)
        done += 1
        recovered = True
    except JournalError as exc:
        recovered = str(exc)
    journal.close()
    print(json.dumps({"done": done, "errors": errors, "recovered": recovered}))
"""


def test_a_full_disk_is_a_journal_error_naming_the_file_and_leaves_whole_records(tmp_path):
    path = tmp_path / "j.sqlite"
    out, err = python(FILLER, path).communicate(timeout=60)
    assert out, err
    result = json.loads(out)
    assert 3 <= result["done"] < 10_000, result
    assert len(result["errors"]) == 2
    for message in result["errors"]:
        assert message.startswith(f"{path}: could not record 'intent': "), message
        assert "SQLITE_FULL" in message or "SQLITE_IOERR" in message, message
    assert result["recovered"] is True, result

    journal = Journal(path)
    events, orders = journal.events(), journal.orders()
    assert [e["payload"]["i"] for e in events] == list(range(result["done"]))
    assert [o["client_id"] for o in orders] == [f"c{i:05d}" for i in range(result["done"])]
    assert journal._held.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    journal.close()


def test_a_record_missing_a_field_is_refused_before_anything_is_written(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    with pytest.raises(ValueError, match=f"^{tmp_path / 'j.sqlite'}: a 'intent' record lacks 'status'$"):
        journal.record("intent", order={"client_id": "c1"})
    assert journal.events() == [] and journal.orders() == []
    journal.close()


# ---------------------------------------------------------------------------- (h) paths, day and owner
def test_default_path_puts_each_client_code_in_its_own_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(kit.store.journal.DATA_DIR_ENV, str(tmp_path))
    day = date(2025, 1, 2)
    assert Journal.default_path("nifty scalper", day) == tmp_path / "journals" / "nifty_scalper-2025-01-02.sqlite"
    assert Journal.default_path("nifty scalper", day, "A123") == \
        tmp_path / "journals" / "A123" / "nifty_scalper-2025-01-02.sqlite"
    escaped = Journal.default_path("x", day, client_code="../../etc")
    assert escaped == tmp_path / "journals" / "etc" / "x-2025-01-02.sqlite"
    assert Journal.default_path("x") == tmp_path / "journals" / f"x-{today_ist().isoformat()}.sqlite"
    assert Journal.default_path("x", client_code="") == Journal.default_path("x")


def test_the_trading_day_is_the_one_the_journal_was_created_for(tmp_path, monkeypatch):
    path = tmp_path / "j.sqlite"
    journal = Journal(path, owner="nifty")
    assert journal.trading_day == today_ist() and journal.owner == "nifty"
    journal.close()
    monkeypatch.setattr(kit.store.journal, "today_ist", lambda: date(2099, 1, 1))     # restored on a later day
    reopened = Journal(path)
    assert reopened.trading_day == today_ist() != date(2099, 1, 1) and reopened.owner == ""
    reopened.close()

    # A journal written before the day was recorded: its creation stamp tells the day.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta WHERE key = 'trading_day'")
        db.execute("UPDATE meta SET value = '2025-01-02T22:00:00+0000' WHERE key = 'created'")   # 03:30 IST
    db.close()
    older = Journal(path)
    assert older.trading_day == date(2025, 1, 3)
    older.close()


def test_intents_wait_for_the_fsync_and_what_the_exchange_can_retell_does_not(tmp_path):
    """A place/modify/cancel intent commits at synchronous=FULL even right after a NORMAL-level record."""
    j = Journal(tmp_path / "j.sqlite")
    statements = []
    j._held.db.set_trace_callback(statements.append)
    order = {"client_id": "L1", "broker_order_id": "", "status": "PENDING"}
    j.record("intent", order=order)
    j.record("update", order=dict(order, status="OPEN"), durable=False)
    j.record("cancel_intent", client_id="L1")
    j.close()

    def level_at_each_commit():
        level, levels = "FULL", []
        for s in statements:
            if s.startswith("PRAGMA synchronous="):
                level = s.split("=")[1]
            elif s == "COMMIT":
                levels.append(level)
        return levels

    assert level_at_each_commit() == ["FULL", "NORMAL", "FULL"]
    reopened = Journal(tmp_path / "j.sqlite")
    assert [e["kind"] for e in reopened.events()] == ["intent", "update", "cancel_intent"]
    reopened.close()
