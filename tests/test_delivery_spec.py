"""The state_delivery part of a spec: defaults, validation messages, proto and TOML round trips."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.backoff import Backoff
from supervisor.delivery import (
    DEFAULT_MAX_STATE_BYTES,
    DeliveryRetry,
    ExecDelivery,
    FileDelivery,
    HttpDelivery,
    StateDelivery,
    delivery_from_mapping,
    delivery_from_proto,
    delivery_to_proto,
)
from supervisor.errors import InvalidArgument
from supervisor.v1 import supervisor_pb2 as pb


def test_proto_defaults_are_the_documented_ones() -> None:
    d = delivery_from_proto(pb.StateDelivery(http=pb.HttpDelivery(url="http://127.0.0.1:2019/load")))
    assert d == StateDelivery(HttpDelivery("http://127.0.0.1:2019/load"))
    assert (d.retry.retries, d.retry.budget_seconds, d.max_state_bytes) == (3, 30.0, DEFAULT_MAX_STATE_BYTES)
    assert [d.retry.backoff.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert delivery_from_proto(pb.StateDelivery()) is None


def test_retries_zero_is_kept_apart_from_unset() -> None:
    msg = pb.StateDelivery(exec=pb.ExecDelivery(argv=["true"]), retry=pb.DeliveryRetry(retries=0))
    d = delivery_from_proto(msg)
    assert d is not None and d.retry.retries == 0


@pytest.mark.parametrize(
    "delivery",
    [
        StateDelivery(
            HttpDelivery("https://x/load", "PUT", {"A": "b"}, (200, 204), 3.0, "/run/caddy.sock"),
            DeliveryRetry(5, Backoff(0.1, 2.0, 3.0), 10.0), 1024, 5.0,
        ),
        StateDelivery(FileDelivery("/etc/app.json", 0o640, 1)),
        StateDelivery(ExecDelivery(("app", "load", "-"), 7.0)),
    ],
)
def test_proto_round_trip(delivery: StateDelivery) -> None:
    assert delivery_from_proto(delivery_to_proto(delivery)) == delivery


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (pb.StateDelivery(http=pb.HttpDelivery(url="ftp://x")), "spec.state_delivery.http.url: must be an http://"),
        (pb.StateDelivery(http=pb.HttpDelivery(url="http://x", method="GET")), "http.method: must be one of PATCH"),
        (pb.StateDelivery(http=pb.HttpDelivery(url="http://x", success_codes=[99])), "http.success_codes"),
        (pb.StateDelivery(http=pb.HttpDelivery(url="http://x", headers={"A": "b\nc"})), "http.headers['A']"),
        (pb.StateDelivery(file=pb.FileDelivery(path="relative")), "file.path: must be an absolute path"),
        (pb.StateDelivery(file=pb.FileDelivery(path="/x", signal=999)), "file.signal: must be a valid signal"),
        (pb.StateDelivery(exec=pb.ExecDelivery()), "exec.argv: must name a program"),
        (pb.StateDelivery(exec=pb.ExecDelivery(argv=["x"]), max_state_bytes=65 * 1024 * 1024), "max_state_bytes"),
        (pb.StateDelivery(exec=pb.ExecDelivery(argv=["x"]), retry=pb.DeliveryRetry(retries=101)), "retry.retries"),
        (pb.StateDelivery(max_state_bytes=5), "state_delivery.method: must set one of http, file or exec"),
    ],
)
def test_bad_fields_are_named(msg: pb.StateDelivery, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        delivery_from_proto(msg)
    assert message in err.value.message


def test_toml_table() -> None:
    table: dict[str, Any] = {
        "http": {"url": "http://127.0.0.1:2019/load", "success_codes": [200]},
        "retry": {"retries": 1, "initial_seconds": 0.1},
        "max_state_bytes": 100,
    }
    d = delivery_from_mapping(table)
    assert d.method == HttpDelivery("http://127.0.0.1:2019/load", success_codes=(200,))
    assert d.retry == DeliveryRetry(1, Backoff(initial_seconds=0.1))
    assert delivery_from_mapping({"file": {"path": "/x", "signal": "HUP"}}).method == FileDelivery("/x", signal=1)
    with pytest.raises(InvalidArgument, match="exactly one of the tables http, file or exec"):
        delivery_from_mapping({"http": {"url": "http://x"}, "exec": {"argv": ["x"]}})
    with pytest.raises(InvalidArgument, match=r"retry\.retrys: unknown key"):
        delivery_from_mapping({"exec": {"argv": ["x"]}, "retry": {"retrys": 1}})
