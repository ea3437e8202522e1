"""Checkpoints of agent learners: a zip of JSON hyper-parameters, ``state_dict`` files and numpy arrays.

Stable-Baselines3's layout: ``hyperparameters.json`` (the config, the algorithm's name, the library
versions), one ``.pth`` per torch ``state_dict`` (online network, target network, optimizer), the
replay ring as ``.npz``, and ``state.json`` with the counters and the RNG's state. Everything a
learner needs to continue exactly as if it had not stopped: a resumed learner fed the same
transitions ends with the same weights. ``extra`` carries the host's own state (the trainer's
stream position, the published version) in the same file, so both are saved at one instant.

Loading never unpickles arbitrary objects: ``torch.load(weights_only=True)`` and
``np.load(allow_pickle=False)``.

>>> from rewardloop.learning.agents.tabular import QLearning, QLearningConfig
>>> agent = QLearning(QLearningConfig(n_states=3, n_actions=2, seed=1))
>>> agent.update(0, 1, 1.0, 2, False)
>>> data = dumps(agent, extra={"stream_id": "17-0"})
>>> again, extra = loads(data)
>>> bool((again.q == agent.q).all()), extra
(True, {'stream_id': '17-0'})
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import torch

from rewardloop.learning.agents.config import DQNConfig, config_from_dict, config_to_dict
from rewardloop.learning.agents.dqn import DQN
from rewardloop.learning.agents.replay import ReplayBuffer
from rewardloop.learning.agents.tabular import QLearning

FORMAT = 1
Agent = DQN | QLearning


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **arrays)
    return out.getvalue()


def _torch_bytes(state: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue()


def dumps(agent: Agent, extra: dict[str, Any] | None = None) -> bytes:
    """The learner (and the host's ``extra`` JSON) as the bytes of a zip."""
    algorithm = "dqn" if isinstance(agent, DQN) else "q_learning"
    meta = {
        "format": FORMAT,
        "algorithm": algorithm,
        "config": config_to_dict(agent.config),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("hyperparameters.json", json.dumps(meta, indent=1))
        if isinstance(agent, DQN):
            z.writestr("q_network.pth", _torch_bytes(agent.q_network.state_dict()))
            z.writestr("target_network.pth", _torch_bytes(agent.target_network.state_dict()))
            z.writestr("optimizer.pth", _torch_bytes(agent.optimizer.state_dict()))
            z.writestr("replay.npz", _npz(agent.buffer.state()))
            counters = {"transitions": agent.transitions, "gradient_steps": agent.gradient_steps}
        else:
            ring = {"ring": agent.ring, "ring_rewards": agent.ring_rewards}
            z.writestr("q_table.npz", _npz({"q": agent.q, "visits": agent.visits, **ring}))
            counters = {"steps": agent.steps, "ring_pos": agent.ring_pos, "ring_full": agent.ring_full}
        state = {**counters, "rng": agent.rng.bit_generator.state, "extra": extra or {}}
        z.writestr("state.json", json.dumps(state))
    return out.getvalue()


def loads(data: bytes) -> tuple[Agent, dict[str, Any]]:
    """The learner a checkpoint holds, and the host's ``extra``."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        meta = json.loads(z.read("hyperparameters.json"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"checkpoint format {meta.get('format')} is not {FORMAT}")
        config = config_from_dict(meta["algorithm"], meta["config"])
        state = json.loads(z.read("state.json"))
        agent: Agent
        if isinstance(config, DQNConfig):
            agent = DQN(config)

            def load(name: str) -> Any:
                return torch.load(io.BytesIO(z.read(name)), weights_only=True)

            agent.q_network.load_state_dict(load("q_network.pth"))
            agent.target_network.load_state_dict(load("target_network.pth"))
            agent.optimizer.load_state_dict(load("optimizer.pth"))
            with np.load(io.BytesIO(z.read("replay.npz")), allow_pickle=False) as replay:
                agent.buffer = ReplayBuffer.from_state(config.buffer_size, dict(replay))
            agent.transitions = int(state["transitions"])
            agent.gradient_steps = int(state["gradient_steps"])
        else:
            agent = QLearning(config)
            with np.load(io.BytesIO(z.read("q_table.npz")), allow_pickle=False) as table:
                agent.q[:] = table["q"]
                agent.visits[:] = table["visits"]
                agent.ring[:] = table["ring"]
                agent.ring_rewards[:] = table["ring_rewards"]
            agent.steps = int(state["steps"])
            agent.ring_pos = int(state["ring_pos"])
            agent.ring_full = bool(state["ring_full"])
        agent.rng.bit_generator.state = state["rng"]
        return agent, dict(state["extra"])
