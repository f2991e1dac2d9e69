"""Distributed training: two CPU processes under torchrun (gloo) keep equal parameters while seeing
different data; only rank 0 writes; sharding deals every item to exactly one rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from shmoareg.training.config import TrainingConfig
from shmoareg.training.data import TrainingData
from shmoareg.training.distributed import shard
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread

WORKER = Path(__file__).with_name("ddp_worker.py")
CONFIG = """
model: {name: shmoareg, config: {channels: [4, 8, 8], attention_levels: [3], head_dim: 8}}
data: {shape: [32, 32, 32], synthetic: {num_labels: 4, max_displacement: 4.0}}
loss: {window: 5, dice_weight: 1.0}
optimiser: {lr: 0.01, steps: 2, batch_size: 1}
validation: {every: 2, pairs: 1}
checkpoint_every: 2
log_every: 1
device: cpu
"""


def test_two_processes_keep_parameters_equal_and_see_different_data(tmp_path):
    (tmp_path / "train.yaml").write_text(CONFIG + f"output_dir: {tmp_path / 'run'}\n")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(WORKER),
         str(tmp_path / "train.yaml"), str(tmp_path)], capture_output=True, text=True, timeout=300, env=environment)
    assert launched.returncode == 0, launched.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [2, 2]
    assert ranks[0]["initial"] == ranks[1]["initial"]
    assert ranks[0]["final"] == ranks[1]["final"] != ranks[0]["initial"]
    assert ranks[0]["losses"][0] != ranks[1]["losses"][0]  # each rank trained on its own pairs
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["phase"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2]  # written once, by rank 0
    assert [r["loss"] for r in train_records] == ranks[0]["losses"]
    metadata = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert metadata["hardware"]["world_size"] == 2
    assert metadata["data"]["world_size"] == 2 and metadata["data"]["pairs_seen"] == 4


def test_training_data_is_sharded_by_rank_and_validation_is_shared():
    spec = TrainingConfig.from_dict({"data": {"shape": [32, 32, 32], "synthetic": {"num_labels": 4}}}).data
    rank0, rank1, again = TrainingData(spec, 5, 0, 2), TrainingData(spec, 5, 1, 2), TrainingData(spec, 5, 0, 2)
    assert not torch.equal(rank0.batch(0, 1).moving, rank1.batch(0, 1).moving)
    assert not torch.equal(rank0.batch(0, 1).moving, rank0.batch(1, 1).moving)
    assert torch.equal(rank0.batch(1, 1).moving, again.batch(1, 1).moving)
    assert torch.equal(rank0.validation(1)[0].fixed, rank1.validation(1)[0].fixed)


def test_shard_deals_every_item_to_exactly_one_rank():
    items = list(range(11))
    shards = [shard(items, rank, 3) for rank in range(3)]
    assert sorted(sum(shards, [])) == items and [len(s) for s in shards] == [4, 4, 3]
    assert shard(items, 0, 1) == items
