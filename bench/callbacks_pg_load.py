"""Load generator for ``bench.callbacks_pg``: one closed loop spread over several servers.

It runs as its own process (``python -m bench.callbacks_pg_load SPEC.json``), started by
``bench.callbacks_pg``. ``bench.loadgen`` drives one URL; this one drives P servers at
once from one process, reusing ``bench.loadgen``'s HTTP/1.1 connection and request
shape. SPEC names, per server, its host and port, how many keep-alive connections it
gets (the 50 connections are split evenly), and the (path, body) pairs of its warm-up and
measured callbacks (the measured ones split evenly too). Each server's connections share
that server's list, so no callback is sent twice and none goes to another server.

It prints ``bench.loadgen``'s two markers around the measured phase and then one JSON
object, the same fields as ``bench.loadgen`` plus the number of callbacks per server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.loadgen import MSISDN, Outcome, order_total

# Receipts are 10 characters: a 3-character prefix and 7 digits (as bench.loadgen's).
RECEIPT_DIGITS = 7


def callback_body(group: str, receipt_prefix: str, index: int) -> bytes:
    """``bench.loadgen.callback_body`` with a receipt prefix of the caller's choosing, so
    each round of ``bench.callbacks_pg`` has receipts and CheckoutRequestIDs of its own."""
    if len(receipt_prefix) != 3:
        raise ValueError("the receipt prefix must be 3 characters (receipts are 10)")
    receipt = f"{receipt_prefix}{index:0{RECEIPT_DIGITS}d}"
    return (
        '{"Body":{"stkCallback":{'
        f'"MerchantRequestID":"29115-34620561-{index}",'
        f'"CheckoutRequestID":"{loadgen.checkout_request_id(group, index)}",'
        '"ResultCode":0,"ResultDesc":"The service request is processed successfully.",'
        '"CallbackMetadata":{"Item":['
        f'{{"Name":"Amount","Value":{order_total(index)}.00}},'
        f'{{"Name":"MpesaReceiptNumber","Value":"{receipt}"}},'
        '{"Name":"Balance"},'
        '{"Name":"TransactionDate","Value":20261126102115},'
        f'{{"Name":"PhoneNumber","Value":{MSISDN}}}'
        "]}}}}"
    ).encode()


@dataclass
class Target:
    host: str
    port: int
    concurrency: int
    warm: list[tuple[str, bytes]]
    work: list[tuple[str, bytes]]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        return cls(
            host=data["host"],
            port=int(data["port"]),
            concurrency=int(data["concurrency"]),
            warm=[(path, body.encode()) for path, body in data["warm"]],
            work=[(path, body.encode()) for path, body in data["work"]],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "concurrency": self.concurrency,
            "warm": [[path, body.decode()] for path, body in self.warm],
            "work": [[path, body.decode()] for path, body in self.work],
        }


def write_spec(path: Path, targets: list[Target]) -> None:
    path.write_text(json.dumps([t.to_json() for t in targets]))


async def _phase(
    targets: list[Target],
    connections: list[list[loadgen._Connection]],
    measured: bool,
) -> tuple[Outcome, float]:
    outcome = Outcome()
    workers = []
    for target, conns in zip(targets, connections, strict=True):
        shared = iter(target.work if measured else target.warm)
        workers += [loadgen._worker(c, shared, outcome) for c in conns]
    started = time.perf_counter()
    await asyncio.gather(*workers)
    return outcome, time.perf_counter() - started


async def run(targets: list[Target]) -> dict[str, object]:
    connections = [
        [loadgen._Connection(t.host, t.port) for _ in range(t.concurrency)] for t in targets
    ]
    everyone = [c for conns in connections for c in conns]
    try:
        warm, _ = await _phase(targets, connections, measured=False)
        loadgen._marker(loadgen.MEASURE_START)
        cpu_before = time.process_time()
        outcome, wall = await _phase(targets, connections, measured=True)
        cpu = time.process_time() - cpu_before
        loadgen._marker(loadgen.MEASURE_END)
    finally:
        await asyncio.gather(*(c.close() for c in everyone))
    count = sum(len(t.work) for t in targets)
    return {
        "per_target": [len(t.work) for t in targets],
        "concurrency": len(everyone),
        **loadgen.summary(count, outcome, warm, wall, cpu),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", type=Path, help="JSON file written by write_spec")
    args = parser.parse_args(argv)
    targets = [Target.from_json(t) for t in json.loads(args.spec.read_text())]
    result = asyncio.run(run(targets))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
