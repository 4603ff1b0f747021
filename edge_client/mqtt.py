"""MQTT output (paho-mqtt) with Home Assistant discovery.

Topics under `<topic_prefix>/<device_id>/`:
- `events`: each event as JSON (`frames`: each answer, when `outputs.mqtt.on: frames`);
- `last_person` (retained): {"name", "event_id", "at"} of the last person seen;
- `snapshot` (retained): the latest event's annotated best picture, JPEG bytes;
- `presence/<name>` (retained): ON while a track of that name is open, else OFF;
- `availability` (retained): `online`, and `offline` as the last will (and on a clean stop).
Home Assistant discovery (`<discovery_prefix>/<component>/<node>/<object>/config`, retained): a sensor
(last person), a camera (snapshot) and, per name seen, a binary_sensor (presence).

paho's network thread connects, reconnects with backoff (1 s doubling to 60 s) and sends; `publish`
never blocks the pipeline. While the broker is away messages are dropped and counted
(`facepipe_edge_output_errors_total{output="mqtt"}`); retained state is published again on reconnect.
The password comes only from FACEPIPE_MQTT_PASSWORD in the environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import ssl
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt

from cloud.functions.contracts import UNKNOWN_NAME
from edge_client.config import MqttOutput as MqttConfig
from edge_client.tracker import Event

log = logging.getLogger(__name__)

PASSWORD_ENV = "FACEPIPE_MQTT_PASSWORD"
MAX_QUEUED = 100  # messages paho may hold for a slow broker; beyond, publishes are dropped and counted
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def object_id(text: str) -> str:
    """A Home Assistant node/object id: letters, digits, _ and - only.

    A text already in that set is kept as it is; any other gets `_` and 6 hex digits of its sha256, so
    names that slug alike (`李` and `王` are both `_`) keep distinct topics and entities."""
    slug = _UNSAFE.sub("_", text)
    if slug == text:
        return text
    return f"{slug}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"


class MqttOutput:
    def __init__(self, config: MqttConfig, device_id: str, count_error: Any) -> None:
        self._config = config
        self._device_id = device_id
        self._count_error = count_error
        self.base = f"{config.topic_prefix}/{device_id}"
        self.node = object_id(f"facepipe_{device_id}")
        self._lock = threading.Lock()
        self._names_seen: set[str] = set()
        self._present: Counter[str] = Counter()  # name -> open tracks reported with it
        self._track_names: dict[str, str] = {}  # event_id -> name last reported
        self._retained: dict[str, bytes] = {}  # topic -> payload, published again on each (re)connect
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"facepipe-{device_id}")
        if config.username:
            client.username_pw_set(config.username, os.environ.get(PASSWORD_ENV))
        if config.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(self.topic("availability"), b"offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        client.connect_async(config.host or "", config.port, keepalive=30)
        client.loop_start()

    def topic(self, leaf: str) -> str:
        return f"{self.base}/{leaf}"

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    # --- paho callbacks (its network thread) --------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt: %s:%d refused the connection: %s", self._config.host, self._config.port, reason)
            return
        log.info("mqtt: connected to %s:%d", self._config.host, self._config.port)
        client.publish(self.topic("availability"), b"online", qos=1, retain=True)
        if self._config.discovery:
            for topic, payload in self._discovery_configs():
                client.publish(topic, payload, qos=1, retain=True)
        with self._lock:
            retained = list(self._retained.items())
        for topic, payload in retained:
            client.publish(topic, payload, qos=1, retain=True)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt: lost the broker (%s); reconnecting with backoff", reason)

    # --- what the outputs publish -------------------------------------------------------------

    def publish_frame(self, record: dict[str, Any]) -> None:
        self._publish(self.topic("frames"), json.dumps(record).encode())

    def publish_event(self, event: Event, record: dict[str, Any], picture: bytes | None) -> None:
        self._publish(self.topic("events"), json.dumps(record).encode())
        if picture is not None:
            self._publish(self.topic("snapshot"), picture, retain=True)
        if event.type != "end":
            last = {"name": event.name, "event_id": event.event_id, "at": round(event.start, 3)}
            self._publish(self.topic("last_person"), json.dumps(last).encode(), retain=True)
        for name, state in self._presence(event):
            self._publish(self.topic(f"presence/{object_id(name)}"), state.encode(), retain=True)

    def _presence(self, event: Event) -> list[tuple[str, str]]:
        """The presence states this event touches: [(name, 'ON' | 'OFF')] (repeating a state is harmless)."""
        new_name = None
        with self._lock:
            before = self._track_names.pop(event.event_id, None)
            if before is not None:
                self._present[before] -= 1
            if event.type != "end" and event.name != UNKNOWN_NAME:
                self._track_names[event.event_id] = event.name
                self._present[event.name] += 1
                if event.name not in self._names_seen:
                    self._names_seen.add(event.name)
                    new_name = event.name
            touched = sorted(name for name in {before, event.name} if name and name != UNKNOWN_NAME)
            changes = [(name, "ON" if self._present[name] > 0 else "OFF") for name in touched]
            self._present = +self._present  # drop names no open track has
        if new_name is not None and self._config.discovery:  # Home Assistant learns the entity first
            topic, payload = self._presence_config(new_name)
            self._publish(topic, payload, retain=True)
        return changes

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if retain:
            with self._lock:
                self._retained[topic] = payload
        if not self._client.is_connected():
            self._count_error("disconnected", "mqtt: broker not connected; %s not published", topic)
            return
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._count_error("publish", "mqtt: %s not published: %s", topic, mqtt.error_string(info.rc))

    # --- Home Assistant discovery -------------------------------------------------------------

    def _device(self) -> dict[str, Any]:
        return {"identifiers": [self.node], "name": f"facepipe {self._device_id}", "manufacturer": "facepipe",
                "model": "facepipe-edge"}

    def _common(self, object_name: str) -> dict[str, Any]:
        return {"unique_id": f"{self.node}_{object_name}", "object_id": f"{self.node}_{object_name}",
                "availability_topic": self.topic("availability"), "device": self._device()}

    def _discovery_configs(self) -> list[tuple[str, bytes]]:
        prefix = self._config.discovery_prefix
        sensor = {**self._common("last_person"), "name": "Last person", "icon": "mdi:account",
                  "state_topic": self.topic("last_person"), "value_template": "{{ value_json.name }}",
                  "json_attributes_topic": self.topic("last_person")}
        camera = {**self._common("snapshot"), "name": "Snapshot", "topic": self.topic("snapshot")}
        configs = [(f"{prefix}/sensor/{self.node}/last_person/config", json.dumps(sensor).encode()),
                   (f"{prefix}/camera/{self.node}/snapshot/config", json.dumps(camera).encode())]
        with self._lock:
            names = sorted(self._names_seen)
        return configs + [self._presence_config(name) for name in names]

    def _presence_config(self, name: str) -> tuple[str, bytes]:
        oid = object_id(name)
        config = {**self._common(f"{oid}_present"), "name": f"{name} present", "device_class": "presence",
                  "state_topic": self.topic(f"presence/{oid}"), "payload_on": "ON", "payload_off": "OFF"}
        return f"{self._config.discovery_prefix}/binary_sensor/{self.node}/{oid}/config", json.dumps(config).encode()

    def close(self, timeout_s: float = 2.0) -> None:
        """Say `offline` (retained), give queued messages `timeout_s` to leave, disconnect."""
        if self._client.is_connected():
            info = self._client.publish(self.topic("availability"), b"offline", qos=1, retain=True)
            deadline = time.monotonic() + timeout_s
            while not info.is_published() and time.monotonic() < deadline and self._client.is_connected():
                time.sleep(0.02)
        self._client.disconnect()
        self._client.loop_stop()
