"""Edge daemon configuration: typed models (one per YAML section) and loading with clear errors.

Every section forbids unknown keys, so a typo or a stray secret fails loudly instead of being
ignored. Credentials never live here: the uploader and the SQS client use the standard AWS
credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance role).

Environment variables override YAML keys: ``FACEPIPE_EDGE__<SECTION>__<KEY>`` (nested sections add
``__`` levels), e.g. ``FACEPIPE_EDGE__DEVICE_ID=porch``, ``FACEPIPE_EDGE__ENDPOINT__URL=https://...``,
``FACEPIPE_EDGE__THROTTLE__MOTION__ENABLED=false``. Values are strings converted to the key's type;
``null`` or an empty value means None.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from cloud.functions.contracts import DEVICE_ID_PATTERN, QUEUE_NAME_PATTERN
from edge_client.access import TOKEN_PATTERN, TOKEN_RULE, is_loopback, split_host
from edge_client.redact import redact_url
from edge_client.server import parse_listen

ENV_PREFIX = "FACEPIPE_EDGE__"
PEOPLE_LEVEL = "people"  # <topic_prefix>/people/<name>: the state every camera on a broker shares
EX_CONFIG = 78  # sysexits.h; systemd's RestartPreventExitStatus=78 stops a restart loop on bad config
_CREDENTIAL_HINT = re.compile(r"secret|access_key|session_token|password|credential", re.IGNORECASE)
# Keys of earlier releases, so an old file's error says where the setting went.
_MOVED = {("outputs", "webhook_url"): "outputs.webhook.url",
          ("outputs", "snapshots_dir"): "outputs.snapshots.directory"}
_LAMBDA_URL_REGION = re.compile(r"\.lambda-url\.([a-z0-9-]+)\.on\.aws$")
_SQS_URL_REGION = re.compile(r"^sqs\.([a-z0-9-]+)\.amazonaws\.com$")


class ConfigError(Exception):
    """A bad configuration: one line per problem, each naming the offending key (`lines`)."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectConfig(_Section):
    initial_s: float = Field(default=1.0, gt=0, description="first wait before reopening a lost camera")
    max_s: float = Field(default=30.0, gt=0, description="cap of the doubling wait between reopen attempts")

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self


class CameraConfig(_Section):
    source: int | str = Field(
        description="USB index (0) or /dev/videoN, rtsp:// or http(s):// stream URL, video file, or folder of images"
    )
    loop: bool = Field(default=False, description="files and folders: start again at the end instead of stopping")
    width: int | None = Field(default=None, ge=16, le=8192, description="requested capture width (live cameras)")
    height: int | None = Field(default=None, ge=16, le=8192, description="requested capture height (live cameras)")
    fps: float | None = Field(
        default=None, ge=0, le=240,
        description="live cameras: requested rate; files/folders: playback rate (null = the file's own rate, "
        "1 image/s for folders; 0 = as fast as possible)",
    )
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="backoff when the camera is lost")

    @field_validator("source", mode="before")
    @classmethod
    def _source_kind(cls, value: Any) -> Any:
        # bool is an int subclass and YAML gives lists/maps too: say what a source is, once.
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            raise ValueError("must be a USB index, a /dev/videoN path, a stream URL, a video file or a folder")
        return value


class MotionConfig(_Section):
    enabled: bool = Field(default=True, description="send a frame only when enough of the scene changed")
    threshold: int = Field(default=25, ge=1, le=255, description="grey-level difference (0-255) that counts as change")
    min_area_ratio: float = Field(
        default=0.01, gt=0, le=1, description="fraction of pixels that must change for the frame to count as motion"
    )
    downscale_width: int = Field(default=160, ge=16, le=1920, description="width of the grey frame motion runs on")
    keepalive_s: float | None = Field(
        default=1.0, gt=0, le=300,
        description="while a person is being tracked, a still scene still sends a frame this often, so someone "
                    "standing still stays one event (below events.max_gap_s); null = never",
    )


class ThrottleConfig(_Section):
    max_fps: float = Field(default=2.0, gt=0, le=60, description="most frames per second sent to the cloud")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="motion gating")
    max_in_flight: int = Field(
        default=4, ge=1, le=64,
        description="frames sent (or being sent) whose answer has not arrived yet; more are skipped",
    )
    jpeg_quality: int = Field(default=85, ge=10, le=100, description="JPEG quality of uploaded frames")
    max_side: int = Field(default=1280, ge=64, le=8192, description="longer side is scaled down to this before upload")


class RetriesConfig(_Section):
    max_attempts: int = Field(
        default=4, ge=1, le=20, description="attempts per upload (timeouts, connection errors, 429, 5xx)"
    )
    base_s: float = Field(default=0.5, gt=0, description="first backoff; doubles per attempt, with full jitter")
    max_s: float = Field(default=8.0, gt=0, description="backoff cap")

    @model_validator(mode="after")
    def _ordered(self) -> RetriesConfig:
        if self.max_s < self.base_s:
            raise ValueError("max_s must be >= base_s")
        return self


class EndpointConfig(_Section):
    url: str = Field(description="the detection Function URL (https://<id>.lambda-url.<region>.on.aws/)")
    auth: Literal["aws_iam", "none"] = Field(
        default="aws_iam", description="aws_iam: SigV4-sign every request (service lambda); none: unsigned"
    )
    region: str | None = Field(
        default=None, description="signing region; null = taken from the URL, else AWS_REGION / the AWS profile"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per-request connect+read timeout")
    retries: RetriesConfig = Field(default_factory=RetriesConfig, description="retry policy")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    def region_from_url(self) -> str | None:
        match = _LAMBDA_URL_REGION.search(urlparse(self.url).hostname or "")
        return match.group(1) if match else None


class ResponsesConfig(_Section):
    queue_url: str = Field(description="SQS queue the answers arrive on")
    endpoint_url: str | None = Field(
        default=None, description="SQS endpoint override (the local stack); null = AWS (or AWS_ENDPOINT_URL_SQS)"
    )
    # 0 would be a short poll in a tight loop: a busy core and a billed SQS request each time round.
    wait_s: int = Field(default=10, ge=1, le=20, description="SQS long-poll wait per receive")
    answer_timeout_s: float = Field(
        default=30.0, gt=0, description="a frame with no answer by then is counted unanswered"
    )
    reply_to: str | None = Field(
        default=None, pattern=QUEUE_NAME_PATTERN,
        description="queue name sent as X-Reply-To (a per-device queue; must match the backend's prefix)",
    )

    @model_validator(mode="after")
    def _reply_to_is_listened_to(self) -> ResponsesConfig:
        if self.reply_to and self.queue_url.rstrip("/").rsplit("/", 1)[-1] != self.reply_to:
            raise ValueError("reply_to must name the queue of queue_url, or answers would go where nobody listens")
        return self


class SpoolConfig(_Section):
    directory: Path = Field(
        default=Path("/var/lib/facepipe/spool"), description="where frames wait while the endpoint is unreachable"
    )
    max_bytes: ByteSize = Field(
        default=ByteSize(256 * 1024 * 1024), gt=0,
        description="spool size cap (e.g. 268435456 or '256MiB'); oldest frames are dropped beyond it",
    )


On = Literal["events", "frames"]
_ON = "events: one record when a person arrives (is named) and one when they leave; frames: one per answered frame"


def _http_url(value: str | None) -> str | None:
    if value is not None:
        EndpointConfig._http_url(value)
    return value


class _Output(_Section):
    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, value: Any) -> Any:
        # YAML 1.1 (PyYAML) reads a bare `on:` key as the boolean true.
        if isinstance(value, dict) and True in value:
            value = {("on" if key is True else key): item for key, item in value.items()}
        return value


class LogOutput(_Output):
    enabled: bool = Field(default=True, description="write a log line per event (or per answer)")
    on: On = Field(default="events", description=_ON)

    @model_validator(mode="before")
    @classmethod
    def _bool_shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value  # `log: false`


class JsonlOutput(_Output):
    path: Path | None = Field(default=None, description="append one JSON record per event (or answer) to this file")
    on: On = Field(default="frames", description=_ON)


class WebhookOutput(_Output):
    url: str | None = Field(default=None, description="POST each event (or answer) as JSON to this URL")
    on: On = Field(default="events", description=_ON)

    _url = field_validator("url")(_http_url)


class SnapshotsOutput(_Output):
    directory: Path | None = Field(
        default=None, description="annotated JPEGs (boxes, names): an event's best picture, or one per answer"
    )
    on: On = Field(default="events", description=_ON)
    keep: int = Field(default=500, ge=1, description="only the newest this many files are kept")


class MqttOutput(_Output):
    host: str | None = Field(default=None, description="MQTT broker host; null = no MQTT")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port (8883 is the usual TLS port)")
    tls: bool = Field(default=False, description="connect with TLS (system CA certificates)")
    username: str | None = Field(
        default=None, description="broker user; its password comes only from FACEPIPE_MQTT_PASSWORD in the environment"
    )
    topic_prefix: str = Field(
        default="facepipe", pattern=r"^[^#+/\s][^#+\s]*$", description="topics are <topic_prefix>/<device_id>/..."
    )
    discovery: bool = Field(default=True, description="publish Home Assistant MQTT discovery configs")
    discovery_prefix: str = Field(default="homeassistant", description="Home Assistant's discovery topic prefix")
    on: On = Field(default="events", description=_ON)


class OutputsConfig(_Section):
    log: LogOutput = Field(default_factory=LogOutput, description="log lines: 'front-door: alice arrived ...'")
    jsonl: JsonlOutput = Field(default_factory=JsonlOutput, description="a JSON-lines file")
    webhook: WebhookOutput = Field(default_factory=WebhookOutput, description="HTTP POSTs (best effort)")
    snapshots: SnapshotsOutput = Field(default_factory=SnapshotsOutput, description="annotated JPEG files")
    mqtt: MqttOutput = Field(default_factory=MqttOutput, description="MQTT with Home Assistant discovery")


class EventsConfig(_Section):
    max_gap_s: float = Field(
        default=3.0, gt=0, le=300,
        description="a face seen again within this many seconds, near where it was, is the same person's track",
    )
    unknown_after_s: float = Field(
        default=2.0, ge=0, le=300,
        description="a track nobody could name is reported as 'unknown' once it lasted this long",
    )
    max_distance: float = Field(
        default=1.02, gt=0,
        description="a name wins a track's vote only if its mean distance over the track is below this",
    )
    min_iou: float = Field(
        default=0.1, ge=0, le=1, description="box overlap (IoU) that links a face to a track (or a near centre)"
    )
    # The track decision (edge_client/evidence.py); defaults calibrated in docs/edge.md "Naming a track".
    decision: Literal["evidence", "votes"] = Field(
        default="evidence",
        description="evidence: support per candidate over all sightings, weighted by quality; votes: the majority of "
                    "named sightings under max_distance (the decision before evidence)",
    )
    min_faces: int = Field(default=1, ge=1, description="a track is named only once this many sightings voted")
    min_face_px: float = Field(default=0.0, ge=0, description="narrower faces stay in the track but do not vote")
    min_sharpness: float = Field(
        default=3.0, ge=0, description="faces less sharp (Laplacian variance of the crop) stay in the track, no vote"
    )
    full_weight_px: float = Field(default=40.0, gt=0, description="a face this wide (or wider) votes with full size")
    full_weight_sharpness: float = Field(
        default=8.0, gt=0, description="a face this sharp (or sharper) votes with full sharpness"
    )
    full_support_distance: float = Field(
        default=1.02, gt=0,
        description="a candidate this near (or nearer) a face support_wide_px wide gets the sighting's whole weight",
    )
    no_support_distance: float = Field(
        default=1.1, gt=0, description="a candidate this far (or farther) from such a face gets nothing from it"
    )
    support_wide_px: float = Field(
        default=48.0, gt=0, description="faces this wide (or wider) are scored by the two distances above"
    )
    support_narrow_px: float = Field(
        default=28.0, gt=0, description="faces this narrow (or narrower) are scored with both raised by the rise"
    )
    narrow_support_rise: float = Field(
        default=0.05, ge=0, le=0.5,
        description="how far both support distances rise for a face support_narrow_px wide; linear in width between",
    )
    min_support: float = Field(
        default=0.3, ge=0, le=1, description="the winner's support (share of the voting weight) that names a track"
    )
    min_margin: float = Field(default=0.1, ge=0, le=1, description="support by which the winner beats the runner-up")

    @model_validator(mode="after")
    def _support_ramp(self) -> EventsConfig:
        if self.no_support_distance <= self.full_support_distance:
            raise ValueError("events.no_support_distance must be above events.full_support_distance")
        if self.support_narrow_px >= self.support_wide_px:
            raise ValueError("events.support_narrow_px must be below events.support_wide_px")
        return self


class PresenceConfig(_Section):
    away_after_s: float = Field(
        default=300.0, gt=0, le=7 * 86400,
        description="a person is home until this many seconds after their last sighting on any camera",
    )


class MetricsConfig(_Section):
    listen: str | None = Field(
        default="127.0.0.1:9108",
        description="host:port of the status page, /metrics and /healthz; null = off; off loopback a token is required",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (host or host:port) answered besides localhost, 127.0.0.1, [::1] and the listen "
                    "address, e.g. the camera's LAN name or a reverse proxy's; others get 421 (DNS rebinding)",
    )
    token: SecretStr | None = Field(
        default=None, exclude=True,
        description="token the server requires (bearer header or the cookie /?token= sets); prefer "
                    "FACEPIPE_EDGE__METRICS__TOKEN or token_file",
    )
    token_file: Path | None = Field(default=None, description="file holding the token (e.g. a systemd credential)")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)  # the one parser the metrics server uses
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            split_host(host)
        return [host.strip().lower() for host in value]

    def status_token(self) -> str | None:
        """The token in force (from `token` or `token_file`); ValueError when it is missing off loopback,
        unreadable or malformed (the message never quotes it)."""
        if self.token is not None and self.token_file is not None:
            raise ValueError("'metrics.token' and 'metrics.token_file': set one, not both")
        token = self.token.get_secret_value() if self.token is not None else None
        if self.token_file is not None:
            try:
                token = self.token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"'metrics.token_file': cannot read {self.token_file}: {exc}") from None
        if token is not None and TOKEN_PATTERN.fullmatch(token) is None:
            raise ValueError(f"'metrics.token': must be {TOKEN_RULE}")
        if token is None and self.listen is not None and not is_loopback(parse_listen(self.listen)[0]):
            raise ValueError(f"'metrics.listen' ({self.listen}) is not loopback: the status page shows who came by, "
                             "so it needs a token (FACEPIPE_EDGE__METRICS__TOKEN, metrics.token_file or "
                             "metrics.token)")
        return token


class EdgeConfig(_Section):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="this camera's name, sent as X-Device-Id")
    camera: CameraConfig = Field(description="where frames come from")
    throttle: ThrottleConfig = Field(default_factory=ThrottleConfig, description="which frames are sent")
    endpoint: EndpointConfig = Field(description="the detection Function URL")
    responses: ResponsesConfig = Field(description="the response queue")
    spool: SpoolConfig = Field(default_factory=SpoolConfig, description="disk buffer for an unreachable endpoint")
    events: EventsConfig = Field(default_factory=EventsConfig, description="faces in answers -> tracks -> events")
    outputs: OutputsConfig = Field(default_factory=OutputsConfig, description="where events and answers go")
    presence: PresenceConfig = Field(default_factory=PresenceConfig, description="who is home, across cameras")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus endpoint")
    stop_timeout_s: float = Field(
        default=10.0, gt=0, le=600,
        description="on SIGTERM, how long in-flight uploads and answers may take before exit (keep < TimeoutStopSec)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="logging level")

    @model_validator(mode="after")
    def _keepalive_within_gap(self) -> EdgeConfig:
        keepalive, gap = self.throttle.motion.keepalive_s, self.events.max_gap_s
        if self.throttle.motion.enabled and keepalive is not None and keepalive >= gap:
            raise ValueError(f"throttle.motion.keepalive_s ({keepalive:g}) must be below events.max_gap_s ({gap:g}), "
                             "or a person standing still is no longer seen in time and their event ends")
        return self

    @model_validator(mode="after")
    def _device_is_no_people_topic(self) -> EdgeConfig:
        if self.outputs.mqtt.host and self.device_id == PEOPLE_LEVEL:
            raise ValueError(f"device_id {PEOPLE_LEVEL!r} would share its MQTT topics with the people's "
                             f"(<topic_prefix>/{PEOPLE_LEVEL}/<name>): choose another")
        return self

    def signing_region(self) -> str | None:
        """Region for SigV4 and SQS: explicit, else from the Function URL or queue URL, else the AWS default."""
        if self.endpoint.region:
            return self.endpoint.region
        from_url = self.endpoint.region_from_url()
        if from_url:
            return from_url
        from_queue = _SQS_URL_REGION.search(urlparse(self.responses.queue_url).hostname or "")
        if from_queue:
            return from_queue.group(1)
        import botocore.session  # only here: the config models stay importable without touching AWS config
        from botocore.exceptions import BotoCoreError

        try:
            region = botocore.session.Session().get_config_variable("region")
        except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
            raise ConfigError(f"config error: AWS configuration: {exc}") from None
        return str(region) if region else None


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict of overrides from FACEPIPE_EDGE__A__B=value variables."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if not all(path):
            raise ConfigError(f"config error: environment variable {name}: empty key segment")
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config error: environment variable {name} conflicts with another override")
            node = child
        node[path[-1]] = None if raw.strip().lower() in ("", "null", "none", "~") else raw
    return tree


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, recursing into mappings both have (YAML, then environment overrides)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: Mapping[str, Any], env_keys: set[tuple[str, ...]]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc) or "(top level)"
    origin = f" (from {ENV_PREFIX}{'__'.join(loc).upper()})" if loc in env_keys else ""
    kind = error["type"]
    if kind == "extra_forbidden":
        hint = ""
        if loc in _MOVED:
            hint = f"; it is now '{_MOVED[loc]}'"
        elif loc[:2] == ("outputs", "mqtt") and _CREDENTIAL_HINT.search(loc[-1]):
            hint = "; the broker password comes only from FACEPIPE_MQTT_PASSWORD in the environment"
        elif _CREDENTIAL_HINT.search(loc[-1]):
            hint = ("; credentials never go in the config: they come from the standard AWS chain "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance role)")
        return f"unknown key '{key}'{origin}{hint}"
    if kind == "missing":
        return f"missing required key '{key}'"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = repr(redact_url(value) if isinstance(value, str) else value)  # a mistyped URL may hold a token
    shown = "<redacted>" if loc[-1:] == ("token",) else shown
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"'{key}'{origin}: {message} (got {shown})"


def _leaf_paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for key, value in tree.items():
        path = (*prefix, key)
        paths.add(path)
        if isinstance(value, dict):
            paths |= _leaf_paths(value, path)
    return paths


def parse_config(data: Any, environ: Mapping[str, str] | None = None, source: str = "config") -> EdgeConfig:
    """Validate already-parsed YAML data plus environment overrides; raise ConfigError naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"config error in {source}: the top level must be a mapping of sections, got {kind}")
    overrides = env_overrides(os.environ if environ is None else environ)
    try:
        config = EdgeConfig.model_validate(deep_merge(data, overrides))
    except ValidationError as exc:
        env_keys = _leaf_paths(overrides)
        # Unknown keys first: a misspelt key is often why a required one is "missing".
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        raise ConfigError(*(f"config error in {source}: {_describe(error, env_keys)}" for error in errors)) from None
    try:
        config.metrics.status_token()
    except ValueError as exc:
        raise ConfigError(f"config error in {source}: {exc}") from None
    if not config.signing_region():
        raise ConfigError(
            f"config error in {source}: 'endpoint.region' is required: neither the endpoint or queue URL nor "
            "AWS_REGION/AWS_DEFAULT_REGION/the AWS profile names a region"
        )
    return config


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> EdgeConfig:
    """Read a YAML file, apply FACEPIPE_EDGE__* overrides, validate; ConfigError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config error: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config error: cannot read {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config error in {path}{where}: invalid YAML: {problem}") from None
    return parse_config(data, environ, source=str(path))
