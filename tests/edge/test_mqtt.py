"""MQTT output against a real broker (a separate process on 127.0.0.1, started per test module) and a
real subscriber: topics, payloads, retained flags, Home Assistant discovery, the last will, and a broker
that goes away and comes back (messages dropped and counted, reconnect, retained state again).

The broker is Mosquitto where it is installed, otherwise amqtt (pure Python, from the `dev` extra).
FACEPIPE_TEST_MQTT_BROKER=mosquitto|amqtt forces one. Under CI=true Mosquitto is required (`make test`
installs it), so nothing falls back or skips there.

Events come from the tracker replaying answers recorded from the local stack (tests/edge/data)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml

from edge_client.config import OutputsConfig
from edge_client.metrics import EdgeMetrics, total
from edge_client.outputs import Outputs
from edge_client.tracker import Event
from tests.edge.conftest import TcpProxy, free_port, wait_until
from tests.edge.test_tracker import recorded, replay
from tests.photos import packaged

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)
AMQTT = shutil.which("amqtt", path=str(Path(sys.executable).parent)) or shutil.which("amqtt")


def _broker_kind() -> str | None:
    forced = os.environ.get("FACEPIPE_TEST_MQTT_BROKER")
    if forced not in (None, "", "mosquitto", "amqtt"):
        raise RuntimeError(f"FACEPIPE_TEST_MQTT_BROKER={forced}: use mosquitto or amqtt")
    if os.environ.get("CI") and forced != "amqtt":
        if MOSQUITTO is None:
            raise RuntimeError("CI run without mosquitto: `make test` installs it (apt-get install mosquitto)")
        return "mosquitto"
    if forced:
        if (MOSQUITTO if forced == "mosquitto" else AMQTT) is None:
            raise RuntimeError(f"FACEPIPE_TEST_MQTT_BROKER={forced} but {forced} is not installed")
        return forced
    return "mosquitto" if MOSQUITTO else "amqtt" if AMQTT else None


BROKER = _broker_kind()
pytestmark = pytest.mark.skipif(
    BROKER is None, reason="needs a real MQTT broker: apt-get install mosquitto, or pip install -e .[dev] (amqtt)")


@dataclass
class Broker:
    port: int
    process: subprocess.Popen[bytes]


def _broker_command(kind: str, port: int, directory: Path) -> list[str]:
    if kind == "mosquitto":
        conf = directory / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        return [str(MOSQUITTO), "-c", str(conf)]
    # amqtt: one TCP listener on loopback, anonymous clients; no $SYS topics, no packet logging.
    conf = directory / "amqtt.yaml"
    conf.write_text(yaml.safe_dump({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }))
    return [str(AMQTT), "-c", str(conf)]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    assert BROKER is not None
    port = free_port()
    directory = tmp_path_factory.mktemp(BROKER)
    log = (directory / "broker.log").open("wb")
    process = subprocess.Popen(_broker_command(BROKER, port, directory), stdout=log, stderr=subprocess.STDOUT)

    def accepting() -> bool:
        assert process.poll() is None, f"{BROKER} exited: {(directory / 'broker.log').read_text()[-2000:]}"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(accepting, 20, f"{BROKER} listening")
        yield Broker(port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A real MQTT client subscribed to `#`: every message with its retained flag."""

    def __init__(self, port: int) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}")
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.on_connect = lambda client, *args: client.subscribe("#", qos=1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(message.topic, message.payload, bool(message.retain)))

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _outputs(port: int, metrics: EdgeMetrics, device: str) -> Outputs:
    config = OutputsConfig.model_validate({"log": False, "mqtt": {"host": "127.0.0.1", "port": port}})
    return Outputs(config, device, metrics)


def _picture() -> bytes:
    return packaged("face_recognition/obama.jpg").read_bytes()


def _publish(outputs: Outputs, events: list[Event]) -> None:
    for event in events:
        outputs.event(event, _picture() if event.type != "update" else None)


@dataclass
class Online:
    """A new device's MQTT outputs, seen online by a subscriber to every topic, and its replayed events."""

    device: str
    base: str  # its topics' prefix
    node: str  # its Home Assistant node id
    metrics: EdgeMetrics
    live: Subscriber
    outputs: Outputs
    events: list[Event]  # the two-person recording, as this device's (not yet published)


def _online(broker: Broker, prefix: str) -> Online:
    device = f"{prefix}-{time.monotonic_ns()}"
    base = f"facepipe/{device}"
    metrics = EdgeMetrics()
    live = Subscriber(broker.port)
    outputs = _outputs(broker.port, metrics, device)
    wait_until(lambda: [m.payload for m in live.on(f"{base}/availability")] == [b"online"], 10, "online")
    return Online(device, base, f"facepipe_{device}", metrics, live, outputs, replay(recorded("two"), device=device))


def test_events_state_and_discovery_reach_a_real_broker(broker: Broker) -> None:
    online = _online(broker, "porch")
    device, base, node, metrics, live, outputs, events = (
        online.device, online.base, online.node, online.metrics, online.live, online.outputs, online.events)
    try:
        _publish(outputs, events)
        wait_until(lambda: len(live.on(f"{base}/events")) == len(events), 10, "every event")
        # events: JSON, in order, not retained
        published = [json.loads(m.payload) for m in live.on(f"{base}/events")]
        assert [(p["type"], p["name"]) for p in published] == [(e.type, e.name) for e in events]
        assert {p["device_id"] for p in published} == {device}
        assert not any(m.retain for m in live.on(f"{base}/events"))
        # presence per name: ON while the track is open, then OFF
        for name in ("barack_obama", "joe_biden"):
            wait_until(lambda n=name: [m.payload for m in live.on(f"{base}/presence/{n}")] == [b"ON", b"OFF"],
                       10, f"{name} ON then OFF")
        snapshot = live.on(f"{base}/snapshot")[-1].payload
        assert cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR) is not None  # JPEG bytes
        assert total(metrics.output_errors) == 0
    finally:
        live.close()

    # A client connecting now (e.g. Home Assistant after a restart) gets the retained state at once.
    late = Subscriber(broker.port)
    try:
        wait_until(lambda: bool(late.on(f"{base}/last_person")) and bool(late.on(f"{base}/snapshot")), 10,
                   "retained state")
        last = late.on(f"{base}/last_person")[-1]
        assert last.retain and json.loads(last.payload)["name"] == "joe_biden"  # the last person who arrived
        assert late.on(f"{base}/snapshot")[-1].retain
        assert late.on(f"{base}/availability")[-1].retain and late.on(f"{base}/availability")[-1].payload == b"online"
        presence = [m.payload for m in late.on(f"{base}/presence/barack_obama")]
        if BROKER == "amqtt":
            # amqtt 0.12.1 sends a connecting client the retained messages matching every topic filter held on
            # the broker (other and earlier clients' `#` too: broker.py, after CONNECT), then again for its own
            # SUBSCRIBE: each retained message arrives twice (QoS 1 allows it; Mosquitto sends it once).
            presence = list(dict.fromkeys(presence))
        assert presence == [b"OFF"]
        # Home Assistant discovery: a sensor, a camera and a presence binary_sensor per name seen
        configs = {m.topic: json.loads(m.payload) for m in late.messages if m.topic.startswith("homeassistant/")}
        assert all(m.retain for m in late.messages if m.topic.startswith("homeassistant/"))
        sensor = configs[f"homeassistant/sensor/{node}/last_person/config"]
        assert sensor["state_topic"] == f"{base}/last_person" and sensor["value_template"] == "{{ value_json.name }}"
        camera = configs[f"homeassistant/camera/{node}/snapshot/config"]
        assert camera["topic"] == f"{base}/snapshot"
        for name in ("barack_obama", "joe_biden"):
            presence = configs[f"homeassistant/binary_sensor/{node}/{name}/config"]
            assert presence["state_topic"] == f"{base}/presence/{name}" and presence["device_class"] == "presence"
            assert (presence["payload_on"], presence["payload_off"]) == ("ON", "OFF")
        for config in configs.values():
            assert config["availability_topic"] == f"{base}/availability"
            assert config["device"]["identifiers"] == [node]
        assert len({c["unique_id"] for c in configs.values()}) == len(configs) == 4
        outputs.close()  # a clean stop says offline (retained)
        wait_until(lambda: late.on(f"{base}/availability")[-1].payload == b"offline", 10, "offline on stop")
    finally:
        late.close()


def test_broker_lost_and_back_last_will_dropped_and_counted_reconnect(broker: Broker) -> None:
    device = f"garage-{time.monotonic_ns()}"
    base = f"facepipe/{device}"
    proxy = TcpProxy("127.0.0.1", broker.port)  # the network between camera and broker
    proxy.up()
    metrics = EdgeMetrics()
    watcher = Subscriber(broker.port)
    outputs = _outputs(proxy.port, metrics, device)
    try:
        wait_until(lambda: [m.payload for m in watcher.on(f"{base}/availability")] == [b"online"], 10, "online")
        events = replay(recorded("one"), device=device)
        proxy.down()  # the camera's connection drops without a DISCONNECT: the broker sends the last will
        wait_until(lambda: watcher.on(f"{base}/availability")[-1].payload == b"offline", 60, "last will")
        # The broker can send the will before paho's network thread on the camera side has read the EOF; until
        # then paho still queues QoS 1 messages (sent again after reconnecting) instead of refusing them.
        wait_until(lambda: not outputs._mqtt.connected, 10, "the camera's client sees the connection lost")
        started = time.monotonic()
        _publish(outputs, events)  # never blocks, never raises
        assert time.monotonic() - started < 1.0
        dropped = total(metrics.output_errors, output="mqtt", kind="disconnected")
        assert dropped >= len(events)  # each event (and its state topics) dropped and counted
        assert not watcher.on(f"{base}/events")
        proxy.up()  # back: reconnect with backoff, online again, retained state published again
        wait_until(lambda: watcher.on(f"{base}/availability")[-1].payload == b"online", 30, "reconnected")
        wait_until(lambda: bool(watcher.on(f"{base}/last_person")), 10, "retained state again")
        assert json.loads(watcher.on(f"{base}/last_person")[-1].payload)["name"] == "barack_obama"
        _publish(outputs, events)
        wait_until(lambda: len(watcher.on(f"{base}/events")) == len(events), 10, "events after reconnect")
    finally:
        outputs.close()
        watcher.close()
        proxy.down()


def test_no_broker_at_start_never_stops_the_caller(tmp_path: Path) -> None:
    metrics = EdgeMetrics()
    outputs = _outputs(free_port(), metrics, "nobody-listens")  # nothing listens there
    started = time.monotonic()
    _publish(outputs, replay(recorded("one"), device="nobody-listens"))
    outputs.close()
    assert time.monotonic() - started < 5.0
    assert total(metrics.output_errors, output="mqtt") > 0


def test_names_that_slug_alike_get_distinct_topics_and_entities(broker: Broker) -> None:
    """`李` and `王` both slug to `_`: each gets its own presence topic and entity; ASCII ids stay readable."""
    online = _online(broker, "hall")
    base, node, metrics, live, outputs, events = (
        online.base, online.node, online.metrics, online.live, online.outputs, online.events)
    try:
        renamed = {"barack_obama": "李", "joe_biden": "王"}
        _publish(outputs, [dataclasses.replace(e, name=renamed.get(e.name, e.name)) for e in events])
        _publish(outputs, [dataclasses.replace(e, event_id=f"{e.event_id}-ascii", name="joe_biden")
                           for e in events if e.name == "joe_biden"])
        discovery = f"homeassistant/binary_sensor/{node}/"
        wait_until(lambda: len({m.topic for m in live.messages if m.topic.startswith(discovery)}) == 3, 10,
                   "three presence entities")
        configs = {m.topic: json.loads(m.payload) for m in live.messages if m.topic.startswith(discovery)}
        by_name = {c["name"]: c for c in configs.values()}
        li, wang, ascii_name = by_name["李 present"], by_name["王 present"], by_name["joe_biden present"]
        assert li["state_topic"] != wang["state_topic"]
        assert li["object_id"] != wang["object_id"] and li["unique_id"] != wang["unique_id"]
        assert ascii_name["state_topic"] == f"{base}/presence/joe_biden"
        assert ascii_name["object_id"] == f"{node}_joe_biden_present"
        for config in (li, wang):
            topic = config["state_topic"]
            wait_until(lambda t=topic: [m.payload for m in live.on(t)] == [b"ON", b"OFF"], 10, f"{topic} ON, OFF")
        assert total(metrics.output_errors) == 0
    finally:
        outputs.close()
        live.close()
