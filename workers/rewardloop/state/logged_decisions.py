"""Reading logged bandit data back out of Redis for off-policy evaluation.

Every user's decision log (``rl:{p}:dec``) and feedback log (``rl:{p}:fb``) is scanned; each
decision of the surface becomes one logged sample: its feature vector, the item in its first
slot and that slot's propensity, and the reward -- the fused reward of the feedback events
for that item of that decision under the surface's reward rules (``rewards/fusion.py``; flagged
events left out), or the surface's ``default_reward`` when there were none.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import redis

from rewardloop.learning.evaluation.logged import LoggedDecisions
from rewardloop.learning.rewards import Event, EventConflict, fuse
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state.keys import DECISION_LOGS, UserKeys, pseudonym_of
from rewardloop.state.records import DecisionRecord, FeedbackRecord

SCAN_BATCH = 1000


def read_logged_decisions(client: redis.Redis, surface: SurfaceConfig, max_decisions: int) -> LoggedDecisions:
    rows: list[tuple[int, tuple[float, ...], int, float, float]] = []
    for decisions_key in client.scan_iter(match=DECISION_LOGS, count=SCAN_BATCH):
        pseudonym = pseudonym_of(decisions_key.decode())
        events = _events_by_decision(client, pseudonym, surface.name)
        decisions: Any = client.xrange(decisions_key)
        for _, fields in decisions:
            record = DecisionRecord.from_json(pseudonym, fields[b"j"])
            if record.surface != surface.name or not record.items:
                continue
            item = record.items[0]
            arm = surface.index.get(item)
            if arm is None:
                continue
            try:
                reward = fuse(events.get((record.decision_id, item), ()), surface.reward, record.decided_at_ms)
            except EventConflict:
                continue  # an event id reused for another fact: no trustworthy reward
            features = record.features or (1.0,)
            rows.append((record.decided_at_ms, features, arm, record.propensities[0], reward))
    rows.sort(key=lambda row: row[0])
    rows = rows[-max_decisions:]
    width = max((len(r[1]) for r in rows), default=1)
    return LoggedDecisions(
        contexts=np.array([r[1] for r in rows], dtype=np.float64).reshape(len(rows), width),
        actions=np.array([r[2] for r in rows], dtype=np.intp),
        propensities=np.array([r[3] for r in rows], dtype=np.float64),
        rewards=np.array([r[4] for r in rows], dtype=np.float64),
        decided_at_ms=np.array([r[0] for r in rows], dtype=np.int64),
    )


def _events_by_decision(client: redis.Redis, pseudonym: str, surface: str) -> dict[tuple[str, str], list[Event]]:
    """The training events (not flagged) of each (decision_id, item_id) of ``surface`` in the user's feedback log."""
    events: dict[tuple[str, str], list[Event]] = defaultdict(list)
    logged: Any = client.xrange(UserKeys(pseudonym).feedback_log)
    for stream_id, fields in logged:
        r = FeedbackRecord.from_fields(pseudonym, stream_id.decode(), fields)
        # Flagged events train nothing; a window-close entry is what no feedback means: the default.
        if not r.decision_id or r.surface != surface or r.flag or r.window_close:
            continue
        events[(r.decision_id, r.item_id)].append(r.event())
    return events
