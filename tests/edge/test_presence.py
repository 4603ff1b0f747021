"""Presence across cameras on a real broker (test_mqtt's: Mosquitto, else amqtt, in a separate process): cameras
made of the daemon's own parts (tracker, answer handler, outputs, presence with its ticking thread) replaying
answers recorded from the local stack (tests/edge/data), shifted to now; a real subscriber reads what Home
Assistant would. Discovery, state changes, expiry across cameras (the camera that saw someone last goes away
and the other one still sends them away on time), removal with `facepipe-edge forget` (a real process), the
unknown-face event, hostile payloads, and the same facts on /api/status and the picture route."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import requests
import yaml

from cloud.functions.contracts import ResponseMessage
from edge_client.answers import AnswerHandler
from edge_client.config import ConfigError, EventsConfig, OutputsConfig, PresenceConfig
from edge_client.correlator import Pending
from edge_client.metrics import EdgeMetrics, total
from edge_client.mqtt import object_id
from edge_client.outputs import Outputs
from edge_client.people import MAX_PEOPLE, Full, People, PersonState, Stale
from edge_client.presence import Presence
from edge_client.server import MetricsServer, StatusSource
from edge_client.status import LiveStatus
from edge_client.throttle import InFlight
from edge_client.tracker import Tracker
from tests.edge import test_mqtt
from tests.edge.conftest import TcpProxy, make_config, wait_until
from tests.edge.test_mqtt import Broker, Message, Subscriber
from tests.edge.test_tracker import recorded
from tests.photos import REPO, packaged

broker = test_mqtt.broker  # the same real broker fixture (a process of its own for this module)
pytestmark = test_mqtt.pytestmark
OBAMA = "barack_obama"
GONE = "gone_one"  # barack_obama renamed: the person the forget test removes
AWAY_S = 1.5
SPEED = 4.0  # the recorded clips play four times as fast as filmed; the tracker's times are scaled alike
EVENTS = EventsConfig(max_gap_s=3.0 / SPEED, unknown_after_s=2.0 / SPEED)


def _frame() -> bytes:
    return packaged("face_recognition/obama.jpg").read_bytes()


@dataclass
class Camera:
    """One daemon's event path and presence, with MQTT to the broker (its own client, as a daemon has)."""

    device: str
    presence: Presence
    outputs: Outputs
    answers: AnswerHandler
    metrics: EdgeMetrics
    in_flight: InFlight

    @property
    def base(self) -> str:
        return f"facepipe/{self.device}"

    def play(self, clip: str, rename: dict[str, str] | None = None, ago_s: float | None = None) -> None:
        """The recorded answers of `clip` as they come, at SPEED times their pace (tracks left open); or, with
        `ago_s`, all at once, as if captured then (answers long on their way)."""
        rows = recorded(clip)
        first = rows[0]["frame_timestamp"]
        started = time.time() - (ago_s or 0.0)
        for row in rows:
            captured = started + (row["frame_timestamp"] - first) / SPEED
            if ago_s is None:
                time.sleep(max(0.0, captured - time.time()))
            faces = [{**face, "name": (rename or {}).get(face["name"], face["name"])} for face in row["faces"]]
            answer = ResponseMessage.model_validate({
                **{k: v for k, v in row.items() if k not in ("answered_at", "latency_s")},
                "device_id": self.device, "frame_timestamp": captured, "faces": faces})
            assert self.in_flight.try_acquire()
            self.answers.answered(answer, Pending(answer.request_id, captured, _frame()), 0.2)
            self.answers.expire(captured)

    def see(self, name: str, at: float) -> None:
        """One frame of `name` standing where `one`'s first frame has them (a person standing still)."""
        row = next(row for row in recorded("one") if row["faces"])
        answer = ResponseMessage.model_validate({
            **{k: v for k, v in row.items() if k not in ("answered_at", "latency_s")},
            "request_id": f"{row['request_id'][:-12]}{int(at * 1000) % 10**12:012d}",
            "device_id": self.device, "frame_timestamp": at,
            "faces": [{**face, "name": name} for face in row["faces"]]})
        assert self.in_flight.try_acquire()
        self.answers.answered(answer, Pending(answer.request_id, at, _frame()), 0.2)

    def leave(self) -> None:
        self.answers.expire(None)  # every open track ends (as on a stop)

    def close(self) -> None:
        self.presence.close()
        self.outputs.close()


def _camera(broker: Broker, prefix: str, away_after_s: float = AWAY_S, port: int | None = None) -> Camera:
    device = f"{prefix}-{time.monotonic_ns()}"
    metrics = EdgeMetrics()
    presence = Presence(PresenceConfig(away_after_s=away_after_s), device)
    config = OutputsConfig.model_validate({"log": False, "mqtt": {"host": "127.0.0.1", "port": port or broker.port}})
    outputs = Outputs(config, device, metrics, presence)
    in_flight = InFlight(1000)
    answers = AnswerHandler(in_flight, metrics, outputs, Tracker(EVENTS, device), LiveStatus(), presence)
    presence.start(answers.open_tracks)
    wait_until(lambda: outputs._mqtt.connected, 10, f"{device} connected")
    return Camera(device, presence, outputs, answers, metrics, in_flight)


class Timed(Subscriber):
    """A subscriber to `#` that also notes when each message arrived."""

    def __init__(self, port: int) -> None:
        self.arrived: list[tuple[float, Message]] = []
        super().__init__(port)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        super()._on_message(client, userdata, message)
        with self._lock:
            self.arrived.append((time.time(), self.messages[-1]))

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.on(topic)]


def retained(broker: Broker, settle_s: float = 0.5) -> dict[str, bytes]:
    """What a client connecting now is sent: the retained payload per topic (a broker keeps no empty one)."""
    late = Subscriber(broker.port)
    try:
        time.sleep(settle_s)  # the broker sends them right after the subscription
        return {m.topic: m.payload for m in late.messages if m.retain}
    finally:
        late.close()


@pytest.fixture
def live(broker: Broker) -> Iterator[Timed]:
    subscriber = Timed(broker.port)
    yield subscriber
    subscriber.close()


def _discovery(subscriber: Subscriber, topic: str) -> dict[str, Any]:
    return json.loads(subscriber.on(topic)[-1].payload)


def test_person_entities_discovery_states_and_expiry(broker: Broker, live: Timed) -> None:
    camera = _camera(broker, "porch")
    try:
        camera.play("one")
        seen_at = time.time()
        people = f"facepipe/people/{OBAMA}"
        assert json.loads(live.on(f"{camera.base}/here")[0].payload) == {"names": [], "count": 0}  # on connecting
        wait_until(lambda: live.payloads(f"{people}/presence") == [b"home"], 10, "home")
        # Home Assistant learns the person's device: a device_tracker, a last-seen sensor, an image
        tracker = _discovery(live, f"homeassistant/device_tracker/facepipe_people/{OBAMA}/config")
        assert tracker["state_topic"] == f"{people}/presence" and tracker["json_attributes_topic"] == people
        assert (tracker["payload_home"], tracker["payload_not_home"], tracker["source_type"]) == (
            "home", "not_home", "router")
        assert tracker["device"] == {"identifiers": [f"facepipe_person_{OBAMA}"], "name": OBAMA,
                                     "manufacturer": "facepipe", "model": "face recognition"}
        last_seen = _discovery(live, f"homeassistant/sensor/facepipe_people/{OBAMA}_last_seen/config")
        assert last_seen["state_topic"] == people and last_seen["value_template"] == "{{ value_json.camera }}"
        image = _discovery(live, f"homeassistant/image/facepipe_people/{OBAMA}/config")
        assert image["image_topic"] == f"{people}/picture" and image["content_type"] == "image/jpeg"
        ids = [c["unique_id"] for c in (tracker, last_seen, image)]
        assert len(set(ids)) == 3 and not any("availability_topic" in c for c in (tracker, last_seen, image))
        # ... and the camera's own: who is here now, the unknown-face event and its picture
        node = f"facepipe_{camera.device}"
        here = _discovery(live, f"homeassistant/sensor/{node}/here/config")
        assert here["state_topic"] == f"{camera.base}/here"
        event = _discovery(live, f"homeassistant/event/{node}/unknown_face/config")
        assert event["state_topic"] == f"{camera.base}/unknown_face" and event["event_types"] == ["unknown_face"]
        assert _discovery(live, f"homeassistant/image/{node}/unknown_face/config")["image_topic"] == (
            f"{camera.base}/unknown_face/picture")
        # the shared state: last camera, time, best distance; the best picture (JPEG); who is here
        state = json.loads(live.on(people)[-1].payload)
        assert state["camera"] == camera.device and not state["removed"]
        assert seen_at - 6 < state["at"] <= seen_at and 0 < state["best_distance"] < 1.0
        assert state["time"].endswith("+00:00")
        picture = live.on(f"{people}/picture")[-1].payload
        assert cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR) is not None
        assert json.loads(live.on(f"{camera.base}/here")[-1].payload) == {"names": [OBAMA], "count": 1}
        kept = retained(broker)
        assert json.loads(kept[people])["camera"] == camera.device and json.loads(kept[people])["at"] >= state["at"]
        assert kept[f"{people}/picture"] == picture
        assert kept[f"{people}/presence"] == b"home" and f"{camera.base}/here" in kept

        camera.leave()  # the passage ends: nobody here, and away `away_after_s` after the last sighting
        wait_until(lambda: json.loads(live.on(f"{camera.base}/here")[-1].payload)["count"] == 0, 10, "nobody here")
        last_at = json.loads(live.on(people)[-1].payload)["at"]
        assert camera.presence.status()["people"][0]["home"] is True
        wait_until(lambda: live.payloads(f"{people}/presence")[-1] == b"not_home", 10, "not_home")
        went = next(t for t, m in live.arrived if m.topic == f"{people}/presence" and m.payload == b"not_home")
        assert last_at + AWAY_S - 0.05 <= went <= last_at + AWAY_S + 2.0, (went - last_at)
        assert live.payloads(f"{people}/presence") == [b"home", b"not_home"]  # one message per change

        # the same facts on /api/status and the picture route
        status = camera.presence.status()
        assert status["here"] == [] and status["away_after_s"] == AWAY_S
        (shown,) = [p for p in status["people"] if p["camera"] == camera.device]
        assert (shown["name"], shown["home"], shown["camera"], shown["picture"]) == (OBAMA, False, camera.device, True)
        source = StatusSource(lambda: {"presence": camera.presence.status()}, list, lambda: None, lambda _: None,
                              camera.presence.people.picture)
        server = MetricsServer(camera.metrics, "127.0.0.1:0", lambda: {"ok": True}, source)
        try:
            url = f"http://127.0.0.1:{server.address[1]}"
            listed = requests.get(f"{url}/api/status", timeout=5).json()["presence"]["people"]
            assert OBAMA in [p["name"] for p in listed]
            served = requests.get(f"{url}/api/people/{OBAMA}.jpg", timeout=5)
            newest = live.on(f"{people}/picture")[-1].payload  # the passage's best, from its end
            assert served.headers["Content-Type"] == "image/jpeg" and served.content == newest
            assert requests.get(f"{url}/api/people/nobody.jpg", timeout=5).status_code == 404
            assert requests.get(f"{url}/api/people/..%2Fx.jpg", timeout=5).status_code == 404
        finally:
            server.shutdown()
        assert total(camera.metrics.output_errors) == 0
    finally:
        camera.close()


def test_someone_staying_in_view_stays_home_and_expiry_counts_from_their_last_sighting(
        broker: Broker, live: Timed) -> None:
    camera = _camera(broker, "kitchen", away_after_s=1.0)
    people = "facepipe/people/sitter"  # each test its own person: the broker keeps the others' retained states
    try:
        started = time.time()
        while time.time() < started + 3.5:  # 3.5 s standing still: one open track, far longer than away_after_s
            camera.see("sitter", time.time())
            time.sleep(0.3)
        last = time.time() - 0.3
        assert live.payloads(f"{people}/presence") == [b"home"]  # never away while in view
        times = [json.loads(m.payload)["at"] for m in live.on(people)]
        assert len(times) >= 4 and times == sorted(times) and times[-1] - times[0] > 2.5  # refreshed while in view
        wait_until(lambda: live.payloads(f"{people}/presence")[-1] == b"not_home", 10, "not_home")
        went = next(t for t, m in live.arrived if m.topic == f"{people}/presence" and m.payload == b"not_home")
        assert went >= last + 1.0 - 0.4  # counted from the last sighting (one refresh period early at most)
        assert len(camera.answers.open_tracks()) == 1  # away although the track is still open: no sighting since
    finally:
        camera.close()


def test_away_on_time_when_another_camera_saw_them_later_and_went_offline(broker: Broker, live: Timed) -> None:
    porch, garden = _camera(broker, "porch", away_after_s=2.0), _camera(broker, "garden", away_after_s=2.0)
    people = "facepipe/people/walker"
    try:
        porch.play("one", rename={OBAMA: "walker"})
        porch.leave()
        wait_until(lambda: bool(live.on(people)), 10, "porch's sighting")
        porch_at = json.loads(live.on(people)[-1].payload)["at"]
        time.sleep(1.0)
        garden.play("one", rename={OBAMA: "walker"})
        garden.leave()
        wait_until(lambda: json.loads(live.on(people)[-1].payload)["camera"] == garden.device, 10, "garden's")
        garden_at = json.loads(live.on(people)[-1].payload)["at"]
        assert garden_at > porch_at + 0.9
        garden.close()  # the camera that saw them last is gone; porch knows its sighting from the broker
        wait_until(lambda: porch.presence.people.get("walker") is not None
                   and porch.presence.people.get("walker").camera == garden.device, 5, "porch holds garden's sighting")
        time.sleep(max(0.0, porch_at + 2.0 + 0.3 - time.time()))
        assert live.payloads(f"{people}/presence")[-1] == b"home"  # porch's own sighting has expired: not enough
        wait_until(lambda: live.payloads(f"{people}/presence")[-1] == b"not_home", 10, "not_home")
        went = [t for t, m in live.arrived if m.topic == f"{people}/presence" and m.payload == b"not_home"][0]
        assert garden_at + 2.0 - 0.05 <= went <= garden_at + 2.0 + 2.0, went - garden_at

        # An older state written over the newer one (a daemon back from a long disconnect) is repaired.
        before = len(live.on(people))
        rogue = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-rogue")
        rogue.connect("127.0.0.1", broker.port)
        rogue.loop_start()
        old = PersonState(name="walker", camera="attic", at=porch_at - 60, best_distance=0.5)
        rogue.publish(people, old.payload(), qos=1, retain=True).wait_for_publish(5)
        rogue.disconnect()
        rogue.loop_stop()
        wait_until(lambda: len(live.on(people)) >= before + 2, 10, "the old state and its repair")
        assert json.loads(live.on(people)[before].payload)["camera"] == "attic"
        assert json.loads(live.on(people)[-1].payload)["camera"] == garden.device
        assert json.loads(retained(broker)[people])["camera"] == garden.device
    finally:
        porch.close()
        garden.close()


def _edge_yaml(tmp_path: Path, broker: Broker) -> Path:
    config = {"device_id": "operator-desk", "camera": {"source": 0},
              "endpoint": {"url": "http://127.0.0.1:9/", "auth": "none", "region": "us-east-1"},
              "responses": {"queue_url": "http://127.0.0.1:9/000000000000/none"},
              "outputs": {"mqtt": {"host": "127.0.0.1", "port": broker.port}}}
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_forget_removes_the_person_everywhere_and_only_a_later_sighting_brings_them_back(
        broker: Broker, live: Timed, tmp_path: Path) -> None:
    camera = _camera(broker, "hall", away_after_s=30)
    node = f"facepipe_{camera.device}"
    mine = [f"homeassistant/device_tracker/facepipe_people/{GONE}/config",
            f"homeassistant/sensor/facepipe_people/{GONE}_last_seen/config",
            f"homeassistant/image/facepipe_people/{GONE}/config",
            f"homeassistant/binary_sensor/{node}/{GONE}/config"]  # the camera's own presence sensor too
    try:
        camera.play("two", rename={OBAMA: GONE})
        camera.leave()
        wait_until(lambda: all(live.on(t) for t in mine) and b"home" in live.payloads(
            "facepipe/people/joe_biden/presence"), 10, "both people's entities")
        assert all(t in retained(broker) for t in mine)
        forgotten_at = time.time()
        result = subprocess.run([sys.executable, "-m", "edge_client", "forget", "--config",
                                 str(_edge_yaml(tmp_path, broker)), GONE], capture_output=True, text=True,
                                timeout=60, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert f"forgot '{GONE}'" in result.stdout and "1 camera presence sensor(s) cleared" in result.stdout
        wait_until(lambda: GONE not in [p["name"] for p in camera.presence.status()["people"]], 10, "forgotten")
        kept = retained(broker)
        assert not [t for t in kept if GONE in t and t != f"facepipe/people/{GONE}"], sorted(kept)
        removal = json.loads(kept[f"facepipe/people/{GONE}"])
        assert removal["removed"] and removal["at"] >= forgotten_at
        assert all(live.on(t)[-1].payload == b"" for t in mine)  # Home Assistant removes the entities
        assert "homeassistant/device_tracker/facepipe_people/joe_biden/config" in kept  # the other stays
        assert [p["name"] for p in camera.presence.status()["people"] if p["camera"] == camera.device] == ["joe_biden"]

        # An answer still on its way from before the removal does not bring them back ...
        camera.play("one", rename={OBAMA: GONE}, ago_s=time.time() - forgotten_at + 5)
        camera.leave()
        time.sleep(0.5)
        assert GONE not in [p["name"] for p in camera.presence.status()["people"]]
        assert json.loads(retained(broker)[f"facepipe/people/{GONE}"])["removed"]
        # ... a sighting after it (enrolled again) does, entities and all
        camera.play("one", rename={OBAMA: GONE})
        wait_until(lambda: live.payloads(f"facepipe/people/{GONE}/presence")[-1:] == [b"home"], 10, "back home")
        kept = retained(broker)
        assert mine[0] in kept and not json.loads(kept[f"facepipe/people/{GONE}"])["removed"]
    finally:
        camera.close()


def _removed(camera: Camera, who: str) -> bool:
    held = camera.presence.people.get(who)
    return held is not None and held.removed


def test_forgetting_someone_in_view_holds_while_their_track_goes_on(
        broker: Broker, live: Timed, tmp_path: Path) -> None:
    camera = _camera(broker, "study", away_after_s=1.5)  # a sighting refreshed every 0.5 s while in view
    who = "in_view_forgotten"
    people, mine = f"facepipe/people/{who}", f"{camera.base}/presence/{who}"
    try:
        for _ in range(4):
            camera.see(who, time.time())
            time.sleep(0.3)
        wait_until(lambda: bool(live.on(mine)) and bool(live.on(people)), 10, "the sighting")
        forget = subprocess.Popen([sys.executable, "-m", "edge_client", "forget", "--config",
                                   str(_edge_yaml(tmp_path, broker)), who], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while forget.poll() is None or not _removed(camera, who):
            assert time.time() < deadline, "the removal did not reach the camera"
            camera.see("unknown", time.time())  # they stay in view; the gallery no longer knows them
            time.sleep(0.3)
        _, errors = forget.communicate(timeout=10)
        assert forget.returncode == 0, errors
        removed_at = camera.presence.people.get(who).at
        for _ in range(10):  # 3 s more in view, six refresh periods: the same track, still named as it was
            camera.see("unknown", time.time())
            time.sleep(0.3)
        assert [t["name"] for t in camera.answers.open_tracks()] == [who]
        assert camera.presence.status()["here"] == [] and json.loads(live.on(f"{camera.base}/here")[-1].payload) == {
            "names": [], "count": 0}
        camera.leave()  # and their track ends
        time.sleep(0.5)
        assert camera.presence.people.get(who).removed and who not in [
            p["name"] for p in camera.presence.status()["people"]]
        kept = retained(broker)
        assert json.loads(kept[people])["removed"] and json.loads(kept[people])["at"] == removed_at
        assert not [t for t in kept if who in t and t != people], sorted(kept)
        after = [m for t, m in live.arrived if who in m.topic and t > removed_at]  # only clears and the removal
        assert after and all(m.payload == b"" or (m.topic == people and json.loads(m.payload)["removed"])
                             for m in after), [(m.topic, m.payload[:80]) for m in after if m.payload]
    finally:
        camera.close()


def test_a_camera_offline_during_forget_learns_it_on_reconnecting(broker: Broker, live: Timed, tmp_path: Path) -> None:
    proxy = TcpProxy("127.0.0.1", broker.port)  # the camera's network to the broker
    proxy.up()
    camera = _camera(broker, "shed", away_after_s=30, port=proxy.port)
    who, oid = "offline_forgotten", "offline_forgotten"
    try:
        camera.play("one", rename={OBAMA: who})
        camera.leave()
        wait_until(lambda: bool(live.on(f"facepipe/people/{oid}")), 10, "the sighting")
        proxy.down()
        wait_until(lambda: not camera.outputs._mqtt.connected, 30, "the camera offline")
        result = subprocess.run([sys.executable, "-m", "edge_client", "forget", "--config",
                                 str(_edge_yaml(tmp_path, broker)), who], capture_output=True, text=True,
                                timeout=60, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert who in [p["name"] for p in camera.presence.status()["people"]]  # it cannot know yet
        proxy.up()  # back: it republishes what it keeps, hears the removal, and the broker ends with the removal
        wait_until(lambda: who not in [p["name"] for p in camera.presence.status()["people"]], 30, "forgotten")
        time.sleep(0.5)
        kept = retained(broker)
        assert json.loads(kept[f"facepipe/people/{oid}"])["removed"]
        assert not [t for t in kept if oid in t and t != f"facepipe/people/{oid}"], sorted(kept)
    finally:
        camera.close()
        proxy.down()


def test_a_sighting_from_the_future_does_not_outlive_forget(broker: Broker, live: Timed, tmp_path: Path) -> None:
    camera = _camera(broker, "loft", away_after_s=30)
    who = "future_pinned"
    people = f"facepipe/people/{who}"
    try:
        camera.see(who, time.time())
        wait_until(lambda: bool(live.on(people)), 10, "the sighting")
        rogue = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-future")
        rogue.connect("127.0.0.1", broker.port)
        rogue.loop_start()
        pinned = PersonState(name=who, camera="attic", at=time.time() + 3600)  # a clock an hour fast, or a forgery
        rogue.publish(people, pinned.payload(), qos=1, retain=True).wait_for_publish(5)
        rogue.disconnect()
        rogue.loop_stop()
        wait_until(lambda: json.loads(live.on(people)[-1].payload)["camera"] == "attic", 10, "the future state")
        result = subprocess.run([sys.executable, "-m", "edge_client", "forget", "--config",
                                 str(_edge_yaml(tmp_path, broker)), who], capture_output=True, text=True,
                                timeout=60, cwd=REPO)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: who not in [p["name"] for p in camera.presence.status()["people"]], 10, "forgotten")
        time.sleep(0.5)  # time for a "repair" with the future sighting, were it held
        assert json.loads(retained(broker)[people])["removed"]
        assert camera.presence.people.get(who).removed
    finally:
        camera.close()


def test_forget_checks_every_name_before_publishing_anything(broker: Broker, live: Timed, tmp_path: Path) -> None:
    # the second name holds an escape character: refused, and the first one is not half-removed either
    result = subprocess.run([sys.executable, "-m", "edge_client", "forget", "--config",
                             str(_edge_yaml(tmp_path, broker)), "kept_one", "bad\x1b[2Jname"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr and "control characters" in result.stderr
    assert "\x1b" not in result.stderr  # the name is shown escaped
    time.sleep(0.5)
    assert not [m.topic for m in live.messages if "kept_one" in m.topic or "bad" in m.topic]


def test_forget_without_a_broker_configured_is_a_config_error(tmp_path: Path) -> None:
    config = {"device_id": "desk", "camera": {"source": 0},
              "endpoint": {"url": "http://127.0.0.1:9/", "auth": "none", "region": "us-east-1"},
              "responses": {"queue_url": "http://127.0.0.1:9/000000000000/none"}}
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "edge_client", "forget", "--config", str(tmp_path / "edge.yaml"),
                             OBAMA], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 78 and "outputs.mqtt.host is not set" in result.stderr


def test_unknown_face_event_with_its_picture_and_who_is_here(broker: Broker, live: Timed) -> None:
    camera = _camera(broker, "gate")
    try:
        camera.play("demo")  # obama2, a group photo of six strangers, obama3
        camera.leave()
        topic = f"{camera.base}/unknown_face"
        wait_until(lambda: bool(live.on(topic)), 10, "an unknown_face event")
        events = [json.loads(m.payload) for m in live.on(topic)]
        assert not any(m.retain for m in live.on(topic))
        assert {e["event_type"] for e in events} == {"unknown_face"} and {e["camera"] for e in events} == {
            camera.device}
        assert len({e["event_id"] for e in events}) == len(events) >= 1
        picture = retained(broker)[f"{topic}/picture"]
        assert cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR) is not None
        here = [json.loads(m.payload)["names"] for m in live.on(f"{camera.base}/here")]
        assert any("unknown" in names for names in here) and any(OBAMA in names for names in here)
        assert here[-1] == []
        assert camera.presence.status()["unknown_face"]["event_id"] == events[-1]["event_id"]
        mine = [p["name"] for p in camera.presence.status()["people"] if p["camera"] == camera.device]
        assert mine == [OBAMA]  # strangers are no one's presence
    finally:
        camera.close()


def test_names_and_payloads_from_the_broker_are_checked(broker: Broker, live: Timed) -> None:
    camera = _camera(broker, "door")
    try:
        camera.play("one", rename={OBAMA: "李"})  # a name outside the topic alphabet
        oid = object_id("李")
        assert oid.startswith("__") and oid != object_id("王")
        wait_until(lambda: live.payloads(f"facepipe/people/{oid}/presence") == [b"home"], 10, "李 home")
        assert json.loads(live.on(f"facepipe/people/{oid}")[-1].payload)["name"] == "李"
        device = _discovery(live, f"homeassistant/device_tracker/facepipe_people/{oid}/config")["device"]
        assert device["name"] == "李"

        hostile = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-hostile")
        hostile.connect("127.0.0.1", broker.port)
        hostile.loop_start()
        now, future = time.time(), time.time() + 3600
        for topic, payload in [
            ("facepipe/people/mallory", b"not json"),
            ("facepipe/people/alice", PersonState(name="bob", camera="x", at=now).payload()),  # another's topic
            ("facepipe/people/carol", json.dumps({"name": "carol\x1b[2J", "camera": "x", "at": now}).encode()),
            ("facepipe/people/dave", json.dumps({"name": "dave", "camera": "a/b", "at": now}).encode()),
            ("facepipe/people/erin", json.dumps({"name": "erin", "camera": "x", "at": "NaN"}).encode()),
            # an hour ahead: it would win every merge, pin them home and outlive `facepipe-edge forget`
            (f"facepipe/people/{oid}", PersonState(name="李", camera="x", at=future).payload()),
            ("facepipe/people/grace", PersonState(name="grace", camera="x", at=future).payload()),
            (f"facepipe/people/{oid}/picture", b"<script>alert(1)</script>"),  # no JPEG
        ]:
            hostile.publish(topic, payload, qos=1, retain=False).wait_for_publish(5)
        hostile.publish("facepipe/people/frank", PersonState(name="frank", camera="x", at=now + 5).payload(),
                        qos=1).wait_for_publish(5)  # well-formed, a clock a little ahead: a marker that the rest came
        hostile.disconnect()
        hostile.loop_stop()
        wait_until(lambda: "frank" in [p["name"] for p in camera.presence.status()["people"]], 10, "the marker")
        names = {p["name"] for p in camera.presence.status()["people"]}
        assert {"李", "frank"} <= names and not names & {"mallory", "alice", "bob", "carol", "dave", "erin", "grace"}
        assert camera.presence.people.get(oid).camera == camera.device  # still this camera's sighting
        assert camera.presence.people.picture(oid) == live.on(f"facepipe/people/{oid}/picture")[0].payload
        # nor does an answer of a frame captured (so its timestamp says) an hour from now
        camera.see("time_traveller", future)
        time.sleep(0.5)
        assert camera.presence.people.get("time_traveller") is None and not live.on("facepipe/people/time_traveller")
    finally:
        camera.close()


def test_the_newer_state_wins_and_a_removal_wins_a_tie() -> None:
    people = People()
    seen = PersonState(name="alice", camera="porch", at=100.0, best_distance=0.6)
    assert people.merge("alice", seen) is None
    with pytest.raises(Stale) as stale:
        people.merge("alice", PersonState(name="alice", camera="attic", at=99.0))
    assert stale.value.held == seen
    later = PersonState(name="alice", camera="garden", at=101.0)
    assert people.merge("alice", later) == seen
    removal = PersonState(name="alice", camera="desk", at=101.0, removed=True)
    assert people.merge("alice", removal) == later  # same time: the removal wins
    assert not removal.home(101.5, 300) and later.home(101.5, 300) and not later.home(401.0, 300)
    assert people.listing(102.0, 300) == []
    assert not people.set_picture("alice", b"\xff\xd8 a removed person's picture")


def test_the_cache_is_bounded() -> None:
    people = People()
    for index in range(1000):
        people.merge(f"p{index}", PersonState(name=f"p{index}", camera="x", at=1.0))
    with pytest.raises(Full):
        people.merge("one-more", PersonState(name="one more", camera="x", at=1.0))


def test_removals_are_bounded_apart_from_the_people_they_leave_room_for() -> None:
    people = People()
    for index in range(MAX_PEOPLE):  # a thousand forgets over the years (or a flood of removals on the broker)
        people.merge(f"r{index}", PersonState(name=f"r{index}", camera="x", at=1.0, removed=True))
    people.merge("new", PersonState(name="new", camera="x", at=2.0))  # someone enrolled since still counts
    assert [p["name"] for p in people.listing(2.0, 300)] == ["new"]
    people.merge("r-last", PersonState(name="r last", camera="x", at=3.0, removed=True))
    states = people.states()
    assert sum(s.removed for s in states.values()) == MAX_PEOPLE  # the longest-held removal made room
    assert "r0" not in states and "r1" in states and "r-last" in states
    for index in range(MAX_PEOPLE - 1):
        people.merge(f"p{index}", PersonState(name=f"p{index}", camera="x", at=1.0))
    with pytest.raises(Full):  # the people themselves are still bounded
        people.merge("one-more", PersonState(name="one more", camera="x", at=1.0))
    people.merge("new", PersonState(name="new", camera="x", at=4.0, removed=True))  # a person becomes a removal
    assert "r1" not in people.states()  # (it made room for that one)
    people.merge("r500", PersonState(name="r500", camera="x", at=5.0))  # a removal a person again: room for it
    assert people.get("new").removed and not people.get("r500").removed


def test_a_device_named_like_the_people_topic_is_refused_with_mqtt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="share its MQTT topics"):
        make_config(tmp_path, device_id="people", outputs={"mqtt": {"host": "127.0.0.1"}})
    assert make_config(tmp_path, device_id="people").device_id == "people"  # without MQTT nothing is shared
