"""The fields of a schema 1 answer as the first contract defined them (cloud/contracts.py up to f320d55): its
readers, this project's edge among them, refuse any other field, so a schema 1 answer carries exactly these."""

SCHEMA_1_ANSWER_FIELDS = {"schema_version", "request_id", "device_id", "frame_timestamp", "faces", "faces_dropped",
                          "timings", "model", "filename", "result"}
SCHEMA_1_FACE_FIELDS = {"box", "name", "distance", "probability"}
