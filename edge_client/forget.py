"""`facepipe-edge forget NAME...`: a person removed from the gallery leaves Home Assistant too.

A camera's identity cannot read the gallery, and a name that stops being recognised looks the same as a
person away on holiday, so the removal has to be said: after `facepipe gallery remove NAME`, run this on any
camera host (it uses that camera's `outputs.mqtt`). It publishes, retained, the person's removal state on
`people/<name>` (`removed`, at now: a sighting made before it cannot bring the person back, one made after it,
the person enrolled again, can), and empty payloads for their entities' discovery configs, their topics and
every camera's presence binary_sensor for that name. Daemons that are up see the removal and clear what they
published as well; one that was down gets it from the broker when it connects.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt

from edge_client.config import PEOPLE_LEVEL, MqttOutput
from edge_client.mqtt import new_client, object_id, person_configs
from edge_client.people import PersonState, presence_refusal

RETAINED_WAIT_S = 1.0  # the broker sends retained messages right after SUBSCRIBE; this is ample on a LAN


def _camera_presence(client: mqtt.Client, config: MqttOutput, oid: str) -> list[str]:
    """Every camera's presence binary_sensor of `oid` on the broker: its config topic and its state topic."""
    found: dict[str, str] = {}  # config topic -> state topic (a broker may send a retained message twice)
    lock = threading.Lock()

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            state_topic = json.loads(message.payload).get("state_topic", "")
        except (ValueError, AttributeError):
            return
        camera = state_topic.removeprefix(f"{config.topic_prefix}/").removesuffix(f"/presence/{oid}")
        if state_topic == f"{config.topic_prefix}/{camera}/presence/{oid}" and "/" not in camera:
            with lock:
                found[message.topic] = state_topic

    client.on_message = on_message
    client.subscribe(f"{config.discovery_prefix}/binary_sensor/+/{oid}/config", qos=1)
    time.sleep(RETAINED_WAIT_S)
    client.unsubscribe(f"{config.discovery_prefix}/binary_sensor/+/{oid}/config")
    with lock:
        return [topic for pair in found.items() for topic in pair]


def forget(config: MqttOutput, device_id: str, names: list[str], timeout_s: float = 10.0) -> list[str]:
    """Remove `names` from the broker; returns one line per name. ValueError (before anything is sent) when a
    name is none presence carries, OSError when the broker is unreachable, TimeoutError when it did not take
    every message within `timeout_s`."""
    refusals = [refusal for name in names if (refusal := presence_refusal(name)) is not None]
    if refusals:
        raise ValueError("; ".join(refusals))
    client = new_client(config, f"facepipe-forget-{uuid.uuid4().hex[:8]}")
    client.connect(config.host or "", config.port, keepalive=30)
    client.loop_start()
    lines: list[str] = []
    try:
        sent: list[mqtt.MQTTMessageInfo] = []
        for name in names:
            oid = object_id(name)
            people = f"{config.topic_prefix}/{PEOPLE_LEVEL}/{oid}"
            cleared = [topic for topic, _ in person_configs(config, oid, name)]
            cameras = _camera_presence(client, config, oid)
            for topic in [*cleared, *cameras, f"{people}/presence", f"{people}/picture"]:
                sent.append(client.publish(topic, b"", qos=1, retain=True))
            removal = PersonState(name=name, camera=device_id, at=time.time(), removed=True)
            sent.append(client.publish(people, removal.payload(), qos=1, retain=True))
            lines.append(f"forgot {name!r}: {people} removed at {removal.time}, "
                         f"{len(cleared)} entities and {len(cameras) // 2} camera presence sensor(s) cleared")
        deadline = time.monotonic() + timeout_s
        for info in sent:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError(f"the broker did not take every message within {timeout_s:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
    return lines
