"""Late labels on the wire: decoding cost per label as JSON messages, binary messages of one, and
one binary batch (docs/serving.md).

The serving daemon decodes every message of its topic with
:class:`~stream.sources.serving_wire.ServingDecoder`; a label is a few bytes, so its cost is the
per-message work. Timed: ``--labels`` labels for requests with 10-digit ids, 10 classes, decoded
as ``--labels`` JSON messages, as ``--labels`` binary messages of one label, and as one binary
batch; best of ``--repeats`` rounds, and the ratio to JSON in the same run.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.output import write
from learners.base import Problem
from stream.sources.serving_wire import ServingDecoder, encode_label_json, encode_labels
from stream.sources.wire import Decoder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.label_wire")
    parser.add_argument("--labels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=300, help="decodes of the set per repeat")
    args = parser.parse_args(argv)
    decoder = ServingDecoder(Decoder(Problem(input_shape=(64,), num_classes=(10,))))
    ids = np.arange(10**9, 10**9 + args.labels)
    y = ids % 10
    forms = {
        "json": [encode_label_json(int(i), int(c)) for i, c in zip(ids, y, strict=True)],
        "binary_one_per_message": [
            encode_labels(ids[i : i + 1], y[i : i + 1]) for i in range(args.labels)
        ],
        "binary_batch": [encode_labels(ids, y)],
    }
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, messages in forms.items():  # interleaved: a slow phase hits every form
            started = time.perf_counter()
            for _ in range(args.rounds):
                for message in messages:
                    decoder.decode(message)
            seconds = (time.perf_counter() - started) / args.rounds
            best[name] = min(best.get(name, seconds), seconds)
    rows = [
        {
            "form": name,
            "messages": len(forms[name]),
            "bytes": sum(len(m) for m in forms[name]),
            "microseconds": best[name] * 1e6,
            "labels_per_second": args.labels / best[name],
            "json_time_ratio": best[name] / best["json"],
        }
        for name in forms
    ]
    print(f"{args.labels} labels, decoded by the serving decoder")
    print("| form | messages | bytes | µs | labels/s | time / JSON's |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['form']} | {r['messages']} | {r['bytes']} | {r['microseconds']:.1f} "
            f"| {r['labels_per_second']:,.0f} | {r['json_time_ratio']:.3f} |"
        )
    results = {"labels": args.labels, "rows": rows}
    write("label_wire", results)
    return results


if __name__ == "__main__":
    main()
