"""The instrument master: download once per day into the cache directory, lookups, near-the-money search."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest

from kit.angel.instruments import InstrumentMaster, InstrumentMasterError, cache_dir, tokens_of
from kit.core.market import EXCHANGE_TYPES, today_ist
from kit.sim.server import DEFAULT_TOKENS
from kit.sim.exchange import MASTER_PATH


def master_requests(sim) -> int:
    return sim.rest.requests.get(MASTER_PATH, 0)


def test_downloaded_once_then_read_from_the_cache_outside_the_cwd(sim, in_tmp_cwd):
    first = InstrumentMaster.load(sim.orders.master_url)
    assert master_requests(sim) == 1 and not first.stale
    cached = list(cache_dir().glob("OpenAPIScripMaster-*.json"))
    assert len(cached) == 1 and in_tmp_cwd not in cached[0].parents
    again = InstrumentMaster.load(sim.orders.master_url)
    assert master_requests(sim) == 1                # today's copy: no second download
    assert len(again) == len(first)
    InstrumentMaster.load(sim.orders.master_url, refresh=True)
    assert master_requests(sim) == 2


def test_a_copy_from_an_earlier_day_is_refreshed(sim):
    InstrumentMaster.load(sim.orders.master_url)
    path = next(cache_dir().glob("OpenAPIScripMaster-*.json"))
    yesterday = (path.stat().st_mtime - 86_400 * 2)
    os.utime(path, (yesterday, yesterday))
    InstrumentMaster.load(sim.orders.master_url)
    assert master_requests(sim) == 2


def test_an_unreachable_source_falls_back_to_the_cache_or_says_why(sim):
    url = sim.orders.master_url
    InstrumentMaster.load(url)
    path = next(cache_dir().glob("OpenAPIScripMaster-*.json"))
    old = path.stat().st_mtime - 86_400 * 2
    os.utime(path, (old, old))
    sim.stop()
    stale = InstrumentMaster.load(url, timeout=5)
    assert stale.stale and len(stale) > 0
    path.unlink()
    with pytest.raises(InstrumentMasterError, match="download of .* failed"):
        InstrumentMaster.load(url, timeout=5)


def test_a_file_that_is_not_a_master_is_refused(tmp_path):
    bad = tmp_path / "master.json"
    bad.write_text("<html>maintenance</html>")
    with pytest.raises(InstrumentMasterError, match="cannot read"):
        InstrumentMaster.from_file(bad)
    bad.write_text('[{"name": "x"}]')
    with pytest.raises(InstrumentMasterError, match="rows need token"):
        InstrumentMaster.from_file(bad)


def test_the_simulated_master_matches_the_simulator_tokens_and_units(sim):
    master = InstrumentMaster.load(sim.orders.master_url)
    nifty = master.get("99926000", 1)
    assert nifty.name == "NIFTY" and nifty.instrument_type == "AMXIDX"
    for token in DEFAULT_TOKENS[2]:
        option = master[token, 2]
        assert option.name == "NIFTY" and option.lot_size == 65 and option.tick_size == pytest.approx(0.05)
        assert option.option_type in ("CE", "PE") and option.symbol.endswith(option.option_type)
        assert 23_900 <= option.strike <= 24_100               # the file stores strike x 100
        assert option.expiry >= today_ist() and option.expiry.weekday() == 1
        assert master.by_symbol(option.symbol, "NFO") == option
    assert master.lot_size("43650", 2) == 65
    assert master.get("43650", 1) is None and master.get("nope") is None
    with pytest.raises(KeyError):
        master["nope", 2]
    assert EXCHANGE_TYPES["NFO"] == 2


def test_options_near_the_money(sim):
    master = InstrumentMaster.load(sim.orders.master_url)
    chain = master.options("NIFTY", spot=24_012, width=1)
    assert [(o.strike, o.option_type) for o in chain] == [
        (23_950, "CE"), (23_950, "PE"), (24_000, "CE"), (24_000, "PE"), (24_050, "CE"), (24_050, "PE")]
    assert {o.expiry for o in chain} == {master.expiries("NIFTY")[0]}
    assert tokens_of(chain) == {2: ["43651", "43656", "43652", "43657", "43653", "43658"]}
    later = master.options("NIFTY", spot=24_012, width=0, expiry="next", option_type="PE")
    assert len(later) == 1 and later[0].expiry == chain[0].expiry + timedelta(days=7)
    assert later[0].token == "43667"
    with pytest.raises(LookupError):
        master.options("FINNIFTY", spot=20_000)
    found = master.search("banknifty", exchange="NFO")
    assert len(found) == 2 and set(found["lot_size"]) == {30}
