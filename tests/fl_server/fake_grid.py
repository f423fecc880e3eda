"""A Grid without Flower's processes: each node answers in this process with the real
ClientApp handlers (a simulated partition), or with a behaviour a test gives it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fl_client import app as client_app


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """Messages made in this process need the identity Flower gives a task (import this
    fixture into a test module to use it there)."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    torch.set_num_threads(1)
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


# A small, fast federation: breast cancer (30 features, 2 classes) and an MLP whose layers
# are net.0 (30x16) and net.3; short waits, since every node answers in this process.
FAST = {
    "dataset": "breast-cancer",
    "model": "mlp",
    "hidden-sizes": "16",
    "local-epochs": 1,
    "learning-rate": 0.01,
    "export-int8": False,
    "node-wait-timeout": 5.0,
    "round-timeout": 5.0,
    "early-stopping-patience": 10,
}

Behaviour = Callable[[Message, Context], Message | None]  # None: no reply (a timeout)


def honest(msg: Message, context: Context) -> Message:
    handler = {
        "query": client_app.query,
        "train": client_app.train,
        "evaluate": client_app.evaluate_global,
    }[msg.metadata.message_type.split(".")[0]]
    return handler(msg, context)


def failing(reason: str = "node lost") -> Behaviour:
    def answer(msg: Message, context: Context) -> Message:
        return Message(Error(code=0, reason=reason), reply_to=msg)

    return answer


def silent(msg: Message, context: Context) -> None:
    return None


class FakeGrid:
    """``behaviours[node_id](round)`` picks how a node answers in a round (default:
    honest). Every pushed message is kept in ``pushed``, in order, per push call."""

    def __init__(
        self,
        num_nodes: int,
        run_config: dict[str, Any],
        behaviours: dict[int, Callable[[int], Behaviour]] | None = None,
    ) -> None:
        self.node_ids = list(range(101, 101 + num_nodes))
        self.run_config = run_config
        self.behaviours = behaviours or {}
        self.pushed: list[list[Message]] = []
        self.replies: dict[str, Message] = {}
        self.answered: list[tuple[Message, Message]] = []  # (message, reply), in order
        self.contexts = {
            n: Context(
                run_id=1,
                node_id=n,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, n in enumerate(self.node_ids)
        }

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        batch = list(messages)
        self.pushed.append(batch)
        ids = []
        for msg in batch:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            node = msg.metadata.dst_node_id
            server_round = int(msg.content["config"].get("server-round", 0))
            behaviour = self.behaviours.get(node, lambda r: honest)(server_round)
            reply = behaviour(msg, self.contexts[node])
            if reply is not None:
                self.replies[msg.metadata.message_id] = reply
                self.answered.append((msg, reply))
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]
