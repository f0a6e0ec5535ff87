"""Zero-config attribution against Inngest's real server: the exporter reads the functions' definitions from Inngest.

The exporter is told nothing of the shop's functions (its config has no `functions:`
section); it reads them from the server's REST API and subscribes its own Inngest
app to their cancel signals and singleton triggers. While it runs, the shop is
redeployed with a function it has never seen, with a `cancelOn` rule, and synced;
the exporter learns of the new rule and registers its new trigger with the server,
without a restart. Then runs of every function are cancelled by every path: each
gets its true source, the new rule's signals reaching the exporter through Inngest.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Callable, Iterator

import inngest
import pytest

from tests.conftest import ServeProcess
from tests.support import inngest_test_app as shop
from tests.support.waiting import eventually
from tests.test_real_inngest import (
    EXPORTER_APP_ID, RECORD_ENV, REAL_SERVER_FIXTURES, CancelledRun, Stack, _cancel_by_every_path,
    _counted_once_and_never_wrong, _first_run, _shape, _stack,
)

REFUND = "wait-for-refund-cancel"
"""The function the shop's second deploy adds: the exporter has never been told about it."""
REFUND_TRIGGER = "shop/refund.requested"
REFUND_SIGNAL = "shop/refund.cancelled"
DISCOVERY_ENV = {"EXPORTER_DISCOVERY": "on", "EXPORTER_DISCOVERY_INTERVAL": "2s"}
FIXTURES = {"app-functions-v1.json": f"/v1/apps/{shop.APP_ID}/functions", "apps-v2.json": "/v2/apps"}


@pytest.fixture(params=["start", "dev"], ids=["inngest-start", "inngest-dev"])
def undeclared_stack(request: pytest.FixtureRequest, serve: Callable[..., ServeProcess], tmp_path: Any) -> Iterator[Stack]:
    """A real server, the exporter's config declaring no function (only that the server has no bulk cancellation);
    discovery is on in dev mode too, where it is off by default."""
    with _stack(request.param, {"bulk_cancellations": {"available": False}}, serve, tmp_path, DISCOVERY_ENV) as running:
        yield running


def _with_refunds(client: inngest.Inngest, started: dict[str, str], outcomes: list[dict[str, Any]]) -> list[inngest.Function[Any]]:
    """The shop's second deploy: its functions, and one more with a cancelOn rule."""

    def wait(ctx: inngest.ContextSync) -> None:
        started.setdefault(ctx.run_id, ctx.event.name)
        ctx.step.sleep("wait-to-be-cancelled", shop.HOLD)

    refunds = client.create_function(
        fn_id=REFUND, retries=0, trigger=inngest.TriggerEvent(event=REFUND_TRIGGER),
        cancel=[inngest.Cancel(event=REFUND_SIGNAL, if_exp="async.data.refund == event.data.refund", timeout=datetime.timedelta(hours=1))],
    )(wait)
    return [*shop.build_functions(client, started, outcomes), refunds]


def _rest(stack: Stack, path: str) -> Any:
    server = stack.inngest
    response = server.session.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {server.signing_key}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def _subscribed(stack: Stack) -> set[str]:
    """The events the exporter's Inngest app is registered with, as the server holds them."""
    functions = _rest(stack, f"/v1/apps/{EXPORTER_APP_ID}/functions")
    return {trigger.get("event") for function in functions for trigger in function["config"]["triggers"]}


def _discovered(stack: Stack) -> float:
    return stack.exporter.metric("inngest_cancellation_exporter_discovered_functions") or 0


def test_undeclared_functions_and_a_rule_added_while_running_get_their_true_sources(undeclared_stack: Stack) -> None:
    stack, app = undeclared_stack, undeclared_stack.app
    # the stack is up once the exporter's app subscribes to the shop's cancel signal and singleton trigger: read from
    # Inngest, never declared
    assert {shop.CANCEL_SIGNAL, shop.TRIGGERS[shop.SINGLETON]} <= _subscribed(stack)
    assert _discovered(stack) == len(shop.TRIGGERS) + 1  # the recorder too; the exporter's own app is not read

    app.redeploy(lambda client: _with_refunds(client, app.started, app.outcomes))
    eventually(lambda: REFUND_SIGNAL in _subscribed(stack), timeout=60)
    assert _discovered(stack) == len(shop.TRIGGERS) + 2
    assert f"function definitions: added {shop.APP_ID}-{REFUND}" in stack.exporter.log()

    server = stack.inngest
    refunds = server.send(*({"name": REFUND_TRIGGER, "data": {"refund": i}} for i in range(3)))
    refund_runs = [_first_run(server, event) for event in refunds]
    runs, not_cancelled = _cancel_by_every_path(stack)
    eventually(lambda: all(run in app.started for run in refund_runs), timeout=60)
    signals_before = _signals_received(stack.exporter)
    server.send(*({"name": REFUND_SIGNAL, "data": {"refund": i}} for i in range(3)))
    runs += [CancelledRun(run, REFUND, "cancelOn event (added function)", "event") for run in refund_runs]

    sources = _counted_once_and_never_wrong(stack, runs, not_cancelled)
    # every run's evidence reached the exporter through Inngest: none is left unknown
    assert [run for run in runs if sources[run.run_id] != [run.true_source]] == []
    # the new rule's signals came through the exporter's Inngest app, registered again without a restart
    assert _signals_received(stack.exporter) >= signals_before + 3
    _check_fixtures(stack)


def _signals_received(exporter: ServeProcess) -> float:
    return exporter.metric("inngest_cancellation_exporter_events_received_total", {"ingress": "inngest", "outcome": "signal"}) or 0


def _shapes_by_id(body: Any) -> dict[str, Any]:
    """Each listed item's structure, by its id (the list's order varies from one answer to the next)."""
    items = body["data"] if isinstance(body, dict) else body
    return {item["id"]: _shape(item) for item in items}


def _check_fixtures(stack: Stack) -> None:
    """The definitions the real server answered have the recorded fixtures' structure (RECORD_REAL_SERVER_FIXTURES=1
    rewrites them)."""
    for name, path in FIXTURES.items():
        body = _rest(stack, path)
        fixture = REAL_SERVER_FIXTURES / name
        if os.environ.get(RECORD_ENV):
            fixture.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        live, recorded = _shapes_by_id(body), _shapes_by_id(json.loads(fixture.read_text()))
        both = live.keys() & recorded.keys()
        assert both, f"{name}: none of the recorded items is listed"
        assert {key: live[key] for key in both} == {key: recorded[key] for key in both}, f"{name}: the real server's answer changed shape"
