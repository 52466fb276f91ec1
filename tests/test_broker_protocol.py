"""One broker contract: the paper and the live broker both satisfy ``kit.broker.base.Broker``, signatures included."""
from __future__ import annotations

import inspect

import pytest

from kit.broker.base import Broker
from kit.broker.live import SmartApiBroker
from kit.broker.paper import PaperBroker
from kit.broker.risk import RiskManager
from kit.store.journal import Journal

# The contract, spelled out: adding or dropping a member is a decision, and this list changes with it.
DATA = {"live": bool, "name": str, "instruments": object, "bad_marks": int, "gtt": object}
METHODS = {"on_tick", "submit", "cancel", "modify", "cancel_all", "flatten", "open_orders", "position", "exposure", "pnl",
           "last_price", "lot_size", "add_fill_listener", "remove_fill_listener", "orders_df", "fills_df",
           "positions_df", "close"}
PROPERTIES = {"positions"}


def protocol_members(protocol) -> tuple[set[str], set[str], set[str]]:
    """(data members, methods, properties) a protocol declares, its own public names only."""
    data = set(protocol.__annotations__)
    methods = {n for n, v in vars(protocol).items() if not n.startswith("_") and inspect.isfunction(v)}
    properties = {n for n, v in vars(protocol).items() if not n.startswith("_") and isinstance(v, property)}
    return data, methods, properties


def drift(cls) -> list[str]:
    """Every way ``cls`` differs from ``Broker``'s declared shape: parameter names, kinds and defaults."""
    problems = []
    data, methods, properties = protocol_members(Broker)
    for name in sorted(methods):
        implementation = getattr(cls, name, None)
        if not callable(implementation):
            problems.append(f"{name}: missing")
            continue
        want = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(Broker, name)).parameters.values()]
        got = [(p.name, p.kind, p.default) for p in inspect.signature(implementation).parameters.values()]
        if got != want:
            problems.append(f"{name}: {got} != {want}")
    for name in sorted(properties):
        if not isinstance(inspect.getattr_static(cls, name, None), property):
            problems.append(f"{name}: not a property")
    return problems


@pytest.fixture
def live_broker(tmp_path):
    broker = SmartApiBroker(Journal(tmp_path / "journal.sqlite"))
    yield broker
    broker.close()


@pytest.fixture
def paper_broker():
    broker = PaperBroker()
    yield broker
    broker.close()


def test_the_contract_is_the_agreed_one():
    assert protocol_members(Broker) == (set(DATA), METHODS, PROPERTIES)


@pytest.mark.parametrize("which", ["paper_broker", "live_broker"])
def test_both_brokers_satisfy_the_protocol(which, request):
    broker = request.getfixturevalue(which)
    assert isinstance(broker, Broker)
    for name, kind in DATA.items():
        assert isinstance(getattr(broker, name), kind), name
    assert broker.live is (which == "live_broker")


@pytest.mark.parametrize("cls", [PaperBroker, SmartApiBroker])
def test_every_method_has_the_protocols_signature(cls):
    assert drift(cls) == []


def test_a_drifted_signature_is_caught_though_isinstance_passes():
    class Drifted(PaperBroker):
        def submit(self, signal, when=None):          # renamed parameter
            return super().submit(signal, when)

        def flatten(self, reason: str = "close out"):  # another default
            return super().flatten(reason)

    assert isinstance(Drifted(), Broker)               # runtime_checkable looks at names only
    problems = drift(Drifted)
    assert [p.split(":")[0] for p in problems] == ["flatten", "submit"]


def test_risk_takes_a_broker():
    assert inspect.signature(RiskManager.check).parameters["broker"].annotation == "Broker"
