"""``streamcl export --checkpoint DIR --out model.safetensors``: the daemon's model for another
service, with a JSON sidecar saying how to load it (stream/runs/served_model.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from stream.cli.output_path import not_inside, replaceable_file
from stream.runs.served_model import export, from_checkpoint, read_key


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="write a checkpoint's model as safetensors plus a JSON sidecar",
        description="Write the model of the newest valid checkpoint in DIR as safetensors, "
        "and next to it a JSON sidecar (same name, .json) with the learner, its config, the "
        "problem, the classes seen and how to load it (docs/serving.md). With the checkpoint "
        "key the sidecar carries an HMAC of the model file; a river model is exported only so.",
    )
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="a checkpoint.dir")
    parser.add_argument("--out", required=True, help="the model file, e.g. model.safetensors")
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        help="the checkpoint key (or env STREAMCL_CHECKPOINT_KEY): needed for a river model, "
        "which is exported signed with it and loaded again only with it",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    wanted = Path(args.out)
    for path, flag in ((wanted, "--out"), (wanted.with_suffix(".json"), "--out's sidecar")):
        not_inside(path, args.checkpoint, "the checkpoint directory", flag)
    out = replaceable_file(wanted)
    replaceable_file(out.with_suffix(".json"), "--out's sidecar")
    key = read_key(args.key_file, os.environ)
    model = from_checkpoint(args.checkpoint, key)
    path, sidecar = export(model, out, key)
    print(
        f"wrote {model.learner_name} after {model.samples} samples to {path} "
        f"(how to load it: {sidecar})"
    )
    return 0
