"""The faces library page's HTML: every value from S3 (names, cameras, keys, a crop's bytes) goes through `esc` or
is re-encoded (crops as base64 data: URLs), and every form carries the CSRF token."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from urllib.parse import urlencode

from cloud.functions.recognition.face_records import KNOWN_PREFIX
from cloud.operator.faces.actions import Person
from cloud.operator.faces.clusters import Group
from cloud.operator.faces.store import Retention, Stored

# At most this many rows and group cards on one page (each crop is ~10 KB inline): filter to see the rest.
MAX_ROWS, MAX_GROUPS, CROPS_PER_GROUP = 200, 100, 6
RETENTION_ROWS = (("faces/known/", "named faces"), ("faces/unknown/", "unknown faces"),
                  ("results/", "results"), ("crops/", "overflow crops"), ("uploads/", "uploaded photos"))

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em}
.card img,td img{width:80px;height:80px;border-radius:4px}.crops img{margin-right:2px}
table{border-collapse:collapse;background:#fff}td,th{border-bottom:1px solid #eee;padding:.3em .6em;text-align:left}
.unknown{color:#a33}.msg{background:#eef6ee;border:1px solid #9c9;padding:.4em .8em}
form{display:inline}input[type=text]{width:9em}small{color:#666}
"""


def esc(value: object) -> str:
    return escape(str(value), quote=True)


@dataclass(frozen=True)
class Filters:
    days: int = 7
    camera: str = ""
    name: str = ""
    unknown_only: bool = False

    def query(self) -> str:
        return urlencode({"days": self.days, "camera": self.camera, "name": self.name,
                          "unknown": "1" if self.unknown_only else ""})


def _crop(stored: Stored) -> str:
    data = base64.b64encode(stored.record.crop_jpeg()).decode()  # re-encoded: only base64 characters reach the page
    return f'<img alt="face" src="data:image/jpeg;base64,{data}">'


def _hidden(csrf: str, back: str, **fields: str) -> str:
    values = {"csrf": csrf, "back": back, **fields}
    return "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in values.items())


def _form(csrf: str, back: str, verb: str, label: str, *, keys: Sequence[str] = (), name_field: bool = False,
          confirm: bool = False, **fields: str) -> str:
    inputs = "".join(f'<input type="hidden" name="key" value="{esc(k)}">' for k in keys)
    if name_field:
        inputs += '<input type="text" name="name" placeholder="name" required>'
    if confirm:
        inputs += '<label><input type="checkbox" name="confirm" value="yes" required> sure</label>'
    return (f'<form method="post" action="/action">{_hidden(csrf, back, verb=verb, **fields)}{inputs}'
            f'<button type="submit" data-verb="{esc(verb)}">{esc(label)}</button></form>')


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def page(*, faces: Sequence[Stored], groups: Sequence[Group], people: Sequence[Person],
         retention: Retention | None, filters: Filters, csrf: str, message: str, bucket: str) -> str:
    back = "/?" + filters.query()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>facepipe faces</title>"
             f"<style>{STYLE}</style></head><body><h1>facepipe faces library <small>{esc(bucket)}</small></h1>"]
    if message:
        parts.append(f'<p class="msg" id="message">{esc(message)}</p>')
    parts.append(_filters(filters))
    parts.append(_retention(retention))
    parts.append(f"<h2>Unknown faces, grouped ({len(groups)})</h2>{_more(len(groups), MAX_GROUPS, 'groups')}"
                 "<div class='cards' id='groups'>")
    for group in groups[:MAX_GROUPS]:
        newest = group.members[0].record
        crops = "".join(_crop(s) for s in group.members[:CROPS_PER_GROUP])
        keys = [s.key for s in group.members]
        parts.append(
            f"<div class='card group' data-group='{esc(group.group_id)}'><div class='crops'>{crops}</div>"
            f"<div>{len(group.members)} sighting(s), last {esc(when(newest.detected_at))} on "
            f"{esc(newest.device_id)}</div>"
            f"{_form(csrf, back, 'assign', 'assign group', keys=keys, name_field=True)} "
            f"{_form(csrf, back, 'delete', 'delete group', keys=keys)}</div>")
    parts.append("</div>")
    parts.append(_recent(faces, csrf, back))
    parts.append(_people(people, csrf, back))
    parts.append("</body></html>")
    return "".join(parts)


def _more(count: int, shown: int, what: str) -> str:
    return f"<p><small>the newest {shown} {what} of {count} shown: narrow the filters</small></p>" \
        if count > shown else ""


def _filters(filters: Filters) -> str:
    checked = " checked" if filters.unknown_only else ""
    return ("<form method='get' action='/' id='filters'>"
            f"last <input type='number' name='days' min='1' max='400' value='{filters.days}'> days, "
            f"camera <input type='text' name='camera' value='{esc(filters.camera)}'> "
            f"name <input type='text' name='name' value='{esc(filters.name)}'> "
            f"<label><input type='checkbox' name='unknown' value='1'{checked}> unknown only</label> "
            "<button type='submit'>show</button></form>")


def _kept(retention: Retention | None, prefix: str) -> str:
    if retention is None:
        return "unknown (the bucket's lifecycle rules could not be read)"
    days = retention.get(prefix)
    return f"{days} day(s)" if days else "no expiry rule"


def _retention(retention: Retention | None) -> str:
    rows = "".join(
        f"<tr><td>{esc(label)}</td><td><code>{esc(prefix)}</code></td><td>{esc(_kept(retention, prefix))}</td></tr>"
        for prefix, label in RETENTION_ROWS)
    rows += "<tr><td>gallery, enrollment crops</td><td><code>gallery/</code></td><td>until forgotten</td></tr>"
    return (f"<h2>What is kept, for how long</h2><table id='retention'><tr><th>what</th><th>where</th>"
            f"<th>kept</th></tr>{rows}</table><small>the bucket's lifecycle rules (template parameters)</small>")


def _recent(faces: Sequence[Stored], csrf: str, back: str) -> str:
    rows = []
    for stored in faces[:MAX_ROWS]:
        r = stored.record
        named = stored.key.startswith(KNOWN_PREFIX)
        distance = "-" if r.distance is None else f"{r.distance:.3f}"
        actions = _form(csrf, back, "assign", "assign", keys=[stored.key], name_field=True)
        if named:
            actions += " " + _form(csrf, back, "wrong", f"not {r.name}", keys=[stored.key])
        actions += " " + _form(csrf, back, "delete", "delete", keys=[stored.key])
        css = "" if named else " class='unknown'"
        assigned = f" <small>(named by {esc(r.assigned_by)})</small>" if r.assigned_by else ""
        rows.append(f"<tr data-key='{esc(stored.key)}'><td>{_crop(stored)}</td><td>{esc(r.device_id)}</td>"
                    f"<td>{esc(when(r.detected_at))}</td><td{css}>{esc(r.name)}{assigned}</td>"
                    f"<td>{esc(distance)}</td><td>{actions}</td></tr>")
    return (f"<h2>Recent faces ({len(faces)})</h2>{_more(len(faces), MAX_ROWS, 'faces')}"
            "<table id='recent'><tr><th></th><th>camera</th><th>time</th>"
            f"<th>name</th><th>distance</th><th></th></tr>{''.join(rows)}</table>")


def _people(people: Sequence[Person], csrf: str, back: str) -> str:
    cards = []
    for person in people:
        seen = "not seen lately" if person.last_seen is None else \
            f"last seen {when(person.last_seen.detected_at)} on {person.last_seen.device_id}"
        crops = "".join(
            f"<span><img alt='enrollment' src='/enrolled.jpg?{esc(urlencode({'name': person.name, 'source': s}))}'>"
            f"{_form(csrf, back, 'unenroll', 'remove', name=person.name, source=s)}</span>"
            for s in person.sources if s)
        photos = sum(1 for s in person.sources if not s)
        cards.append(
            f"<div class='card person' data-name='{esc(person.name)}'><b>{esc(person.name)}</b> "
            f"<small>{person.embeddings} enrollment face(s), {photos} from photos, {person.negatives} "
            f"negative(s); {esc(seen)}</small><div class='crops'>{crops}</div>"
            f"{_form(csrf, back, 'rename', 'rename', old=person.name, name_field=True)} "
            f"{_form(csrf, back, 'forget', 'forget ' + person.name, confirm=True, name=person.name)}</div>")
    return f"<h2>People ({len(people)})</h2><div class='cards' id='people'>{''.join(cards)}</div>"
