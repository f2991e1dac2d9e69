"""One rank of the 2-process DDP test (run under torchrun): train briefly, then record this rank's
parameter checksum, its initial-weights checksum and its training losses in ``<out>/rank<R>.json``."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from shmoareg.models import build_model
from shmoareg.training.config import load_config
from shmoareg.training.trainer import train


def checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(config_path: str, report_dir: str) -> None:
    config = load_config(config_path)
    torch.manual_seed(config.seed)
    initial = checksum(build_model(config.model.name, config.model.config))
    result = train(config)
    report = {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"]),
              "initial": initial, "final": checksum(result.model), "losses": result.losses, "step": result.step}
    Path(report_dir, f"rank{report['rank']}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
