"""The faults tests inject into a broker: freeze it (every client sees an outage, nothing is forgotten), kill a node.

Test-only controls on top of the production classes (shared/bus.py, shared/apache_kafka.py):
the suite itself never pauses a broker.
"""

from __future__ import annotations

import signal

from shared.apache_kafka import KafkaCluster
from shared.bus import EmbeddedBroker


class ControlledBroker(EmbeddedBroker):
    """The embedded broker, with `pause` and `resume`."""

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): clients see an outage, nothing is forgotten."""
        assert self.process is not None, "the broker is not running"
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None, "the broker is not running"
        self.process.send_signal(signal.SIGCONT)


class ControlledKafkaCluster(KafkaCluster):
    """Apache Kafka nodes, with `pause`, `resume` and `kill(node)`."""

    def pause(self) -> None:
        """Freeze every node (SIGSTOP): clients see an outage, nothing is forgotten."""
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.send_signal(signal.SIGCONT)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no clean shutdown, no leadership handed over."""
        node = self.node(node_id)
        if node.running and node.process is not None:
            node.process.send_signal(signal.SIGCONT)
            node.process.kill()
            node.process.wait()
        node.process = None


Broker = ControlledBroker | ControlledKafkaCluster
