"""MQTT output (paho-mqtt) with Home Assistant discovery.

Topics under `<topic_prefix>/<device_id>/`:
- `events`: each event as JSON (`frames`: each answer, when `outputs.mqtt.on: frames`);
- `last_person` (retained): {"name", "event_id", "at"} of the last person seen;
- `snapshot` (retained): the latest event's annotated best picture, JPEG bytes;
- `presence/<name>` (retained): ON while a track of that name is open, else OFF;
- `availability` (retained): `online`, and `offline` as the last will (and on a clean stop);
with presence (`presence.py`): `here` (retained): {"names", "count"} of its open tracks; `unknown_face`: an
event when an unknown track starts, and `unknown_face/picture` (retained) its best picture.
Under `<topic_prefix>/people/`, shared by every camera on the broker (`people.py`): `<name>` (retained) the
person's newest state, `<name>/picture` (retained) its best picture, `<name>/presence` (retained) `home` or
`not_home`. The daemon subscribes to `people/+` and `people/+/picture` to know the others' sightings.
Home Assistant discovery (`<discovery_prefix>/<component>/<node>/<object>/config`, retained): a sensor
(last person), a camera (snapshot) and, per name seen, a binary_sensor (presence); with presence a sensor (who is
here now), an event (unknown face) and an image (its picture) per camera, and per person a device_tracker, a
"last seen" sensor and an image; a person removed (`people/<name>` with `removed`) loses them (empty configs).

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
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from cloud.functions.contracts import UNKNOWN_NAME
from edge_client.config import PEOPLE_LEVEL
from edge_client.config import MqttOutput as MqttConfig
from edge_client.people import PersonState, parse_state
from edge_client.tracker import Event

if TYPE_CHECKING:
    from edge_client.presence import Presence

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


def new_client(config: MqttConfig, client_id: str) -> mqtt.Client:
    """A client for the configured broker: user (password from the environment only) and TLS as configured."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if config.username:
        client.username_pw_set(config.username, os.environ.get(PASSWORD_ENV))
    if config.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    return client


def person_configs(config: MqttConfig, oid: str, name: str) -> list[tuple[str, bytes]]:
    """A person's Home Assistant entities, one device per person and shared by every camera (so no camera's
    availability): a device_tracker (home / not_home), a "last seen" sensor (the camera; time and distance as
    attributes) and an image (the best picture of the last passage)."""
    prefix, node = config.discovery_prefix, "facepipe_people"
    state = f"{config.topic_prefix}/{PEOPLE_LEVEL}/{oid}"
    device = {"identifiers": [f"facepipe_person_{oid}"], "name": name, "manufacturer": "facepipe",
              "model": "face recognition"}

    def common(suffix: str, entity_id: str) -> dict[str, Any]:
        return {"unique_id": f"facepipe_person_{oid}_{suffix}", "object_id": entity_id, "device": device}

    # source_type router: a stationary tracker, so Home Assistant's person entity takes "home" from it and,
    # once it says not_home, follows the person's GPS tracker (a camera not seeing someone is no location).
    tracker = {**common("presence", f"facepipe_{oid}"), "name": None, "state_topic": f"{state}/presence",
               "payload_home": "home", "payload_not_home": "not_home", "source_type": "router",
               "json_attributes_topic": state}
    last_seen = {**common("last_seen", f"facepipe_{oid}_last_seen"), "name": "Last seen", "icon": "mdi:cctv",
                 "state_topic": state, "value_template": "{{ value_json.camera }}", "json_attributes_topic": state}
    picture = {**common("picture", f"facepipe_{oid}_picture"), "name": "Picture", "image_topic": f"{state}/picture",
               "content_type": "image/jpeg"}
    return [(f"{prefix}/device_tracker/{node}/{oid}/config", json.dumps(tracker).encode()),
            (f"{prefix}/sensor/{node}/{oid}_last_seen/config", json.dumps(last_seen).encode()),
            (f"{prefix}/image/{node}/{oid}/config", json.dumps(picture).encode())]


def _here_payload(names: list[str]) -> bytes:
    return json.dumps({"names": names, "count": len(names)}).encode()


class MqttOutput:
    def __init__(self, config: MqttConfig, device_id: str, count_error: Any, presence: Presence | None = None) -> None:
        self._config = config
        self._device_id = device_id
        self._count_error = count_error
        self.base = f"{config.topic_prefix}/{device_id}"
        self.people_base = f"{config.topic_prefix}/{PEOPLE_LEVEL}"
        self._people = presence
        self._presence_sent: dict[str, str] = {}  # person -> home / not_home published since connecting
        self._people_announced: set[str] = set()  # people whose discovery configs went out since connecting
        self.node = object_id(f"facepipe_{device_id}")
        self._lock = threading.Lock()
        self._names_seen: set[str] = set()
        self._present: Counter[str] = Counter()  # name -> open tracks reported with it
        self._track_names: dict[str, str] = {}  # event_id -> name last reported
        self._retained: dict[str, bytes] = {}  # topic -> payload, published again on each (re)connect
        client = new_client(config, f"facepipe-{device_id}")
        client.will_set(self.topic("availability"), b"offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        if presence is not None:
            presence.link(self)
            self._retained[self.topic("here")] = _here_payload([])  # nobody in view yet, said on connecting
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
        if self._people is not None:
            with self._lock:
                self._presence_sent.clear()
                self._people_announced.clear()
            client.subscribe([(f"{self.people_base}/+", 1), (f"{self.people_base}/+/picture", 1)])
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

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        """`people/<id>` and `people/<id>/picture` (an empty payload is a cleared topic: nothing to learn)."""
        if self._people is None or not message.payload:
            return
        oid, _, leaf = message.topic.removeprefix(f"{self.people_base}/").partition("/")
        payload = bytes(message.payload)
        if leaf == "picture":
            self._people.remote_picture(oid, payload)
        elif not leaf and (state := parse_state(payload)) is not None:
            self._people.remote(oid, state)

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
        """The presence states this event touches: [(name, 'ON' | 'OFF')] (repeating a state is harmless).
        A name removed since the track began is left out: its entity and topic were cleared for good."""
        new_name = None
        with self._lock:
            before = self._track_names.pop(event.event_id, None)
            if before is not None:
                self._present[before] -= 1
            if event.type != "end" and event.name != UNKNOWN_NAME:
                self._track_names[event.event_id] = event.name
                self._present[event.name] += 1
            touched = sorted(name for name in {before, event.name} if name and name != UNKNOWN_NAME
                             and not (self._people is not None and self._people.forgotten(name, event.start)))
            if event.type != "end" and event.name in touched and event.name not in self._names_seen:
                self._names_seen.add(event.name)
                new_name = event.name
            changes = [(name, "ON" if self._present[name] > 0 else "OFF") for name in touched]
            self._present = +self._present  # drop names no open track has
        if new_name is not None and self._config.discovery:  # Home Assistant learns the entity first
            topic, payload = self._presence_config(new_name)
            self._publish(topic, payload, retain=True)
        return changes

    # --- presence (presence.PresenceLink) -----------------------------------------------------

    def person(self, oid: str, state: PersonState, picture: bytes | None) -> None:
        if not state.removed and self._config.discovery:
            with self._lock:
                announce = oid not in self._people_announced
                self._people_announced.add(oid)
            for topic, payload in person_configs(self._config, oid, state.name) if announce else ():
                self._publish(topic, payload, retain=True)
        self._publish(f"{self.people_base}/{oid}", state.payload(), retain=True)
        if picture is not None:
            self._publish(f"{self.people_base}/{oid}/picture", picture, retain=True)

    def presence(self, oid: str, home: bool) -> None:
        value = "home" if home else "not_home"
        with self._lock:
            if self._presence_sent.get(oid) == value:
                return
            self._presence_sent[oid] = value
        # Not published again on reconnect: each daemon says it again from the states it then holds.
        self._publish(f"{self.people_base}/{oid}/presence", value.encode(), retain=True, again=False)

    def removed(self, oid: str, state: PersonState) -> None:
        """The person's entities go (empty configs first), then their topics, this camera's presence too."""
        with self._lock:
            self._presence_sent.pop(oid, None)
            self._people_announced.discard(oid)
            seen_here = state.name in self._names_seen
            self._names_seen.discard(state.name)
        cleared = [topic for topic, _ in person_configs(self._config, oid, state.name)]
        if seen_here:
            cleared += [self._presence_config(state.name)[0], self.topic(f"presence/{oid}")]
        for topic in [*cleared, f"{self.people_base}/{oid}/presence", f"{self.people_base}/{oid}/picture"]:
            self._publish(topic, b"", retain=True)
        with self._lock:  # on reconnecting, the removal goes out again rather than a sighting from before it
            self._retained[f"{self.people_base}/{oid}"] = state.payload()

    def here(self, names: list[str]) -> None:
        self._publish(self.topic("here"), _here_payload(names), retain=True)

    def unknown_face(self, record: dict[str, Any], picture: bytes | None) -> None:
        if picture is not None:
            self._publish(self.topic("unknown_face/picture"), picture, retain=True)
        self._publish(self.topic("unknown_face"), json.dumps(record).encode())

    def _publish(self, topic: str, payload: bytes, retain: bool = False, again: bool = True) -> None:
        if retain and again:
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
        if self._people is not None:
            configs += self._camera_presence_configs()
        with self._lock:
            names = sorted(self._names_seen)
        return configs + [self._presence_config(name) for name in names]

    def _camera_presence_configs(self) -> list[tuple[str, bytes]]:
        prefix = self._config.discovery_prefix
        here = {**self._common("here"), "name": "Here now", "icon": "mdi:account-group",
                "state_topic": self.topic("here"), "value_template": "{{ value_json.names | join(', ') }}",
                "json_attributes_topic": self.topic("here")}
        event = {**self._common("unknown_face"), "name": "Unknown face", "icon": "mdi:account-question",
                 "state_topic": self.topic("unknown_face"), "event_types": ["unknown_face"]}
        image = {**self._common("unknown_face_picture"), "name": "Unknown face picture",
                 "image_topic": self.topic("unknown_face/picture"), "content_type": "image/jpeg"}
        return [(f"{prefix}/sensor/{self.node}/here/config", json.dumps(here).encode()),
                (f"{prefix}/event/{self.node}/unknown_face/config", json.dumps(event).encode()),
                (f"{prefix}/image/{self.node}/unknown_face/config", json.dumps(image).encode())]

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
