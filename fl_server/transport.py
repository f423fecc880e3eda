"""Nodes and messages on Flower's Grid: a bounded wait for nodes, seeded sampling, and
one exchange of messages with a timeout.

Flower's own ``sample_nodes`` waits forever for its minimum and ``send_and_receive``
pulls a deployed SuperLink every 3 s; this is the same job with bounds.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Collection
from logging import INFO
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fl_common.settings import RunSettings


class RunStopped(Exception):
    """The federation cannot go on; ``reason`` says why (recorded in the summary)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class OnlyNodes:
    """A view of the Grid that shows only the nodes we sampled, so a strategy's own
    sampling (which waits forever for its minimum) picks exactly these, at once."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid, self._ids = grid, list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class Transport:
    """The connected nodes of a run, and message exchange with them."""

    def __init__(self, grid: Grid, settings: RunSettings, seed: int) -> None:
        self.grid, self.settings, self.seed = grid, settings, seed

    def wait_for_nodes(self) -> list[int]:
        """Connected node ids, waiting at most node-wait-timeout for min-nodes."""
        deadline = time.monotonic() + self.settings.node_wait_timeout
        announced = False
        while True:
            ids = sorted(self.grid.get_node_ids())
            if len(ids) >= self.settings.min_nodes:
                return ids
            if time.monotonic() >= deadline:
                raise RunStopped(
                    "too-few-nodes",
                    f"only {len(ids)} node(s) connected within "
                    f"{self.settings.node_wait_timeout:g}s; min-nodes is {self.settings.min_nodes}",
                )
            if not announced:
                log(INFO, "Waiting for %d node(s); %d connected", self.settings.min_nodes, len(ids))
                announced = True
            time.sleep(0.5)

    def sample(self, server_round: int, eligible: Collection[int]) -> list[int]:
        """``fraction-train`` of the ``eligible`` nodes (at least min-nodes), seeded by
        (seed, round): a resumed run samples as the uninterrupted run would have,
        given the same nodes."""
        ids = sorted(eligible)
        # rounded first, so that 0.07 of 100 nodes is 7, not 8 from 7.000000000000001
        size = max(
            self.settings.min_nodes, math.ceil(round(self.settings.fraction_train * len(ids), 9))
        )
        rng = random.Random(self.seed * 1_000_003 + server_round)
        return sorted(rng.sample(ids, min(size, len(ids))))

    def exchange(self, messages: list[Message]) -> list[Message]:
        """Send ``messages``; the replies that arrive within round-timeout. This pulls
        soon after sending and backs off to once a second."""
        pending = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + self.settings.round_timeout
        replies: list[Message] = []
        pause = 0.05
        while pending:
            got = list(self.grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, 1.0)
        return replies

    def ask(self, messages: list[Message]) -> dict[int, Message | None]:
        """Exchange ``messages`` and file each reply under the node it was sent to
        (None: no reply in time). An error reply the SuperLink makes for a lost node
        comes from the SuperLink itself; the message it answers names the node."""
        replies = self.exchange(messages)  # pushing gives the messages their ids
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        out: dict[int, Message | None] = {m.metadata.dst_node_id: None for m in messages}
        for reply in replies:
            node = sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if node in out:
                out[node] = reply
        return out
