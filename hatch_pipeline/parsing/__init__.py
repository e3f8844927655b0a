"""A stored export ZIP → one Parquet file per day: `export.py` is the way through (`parse_export`); the ZIP's one
file is inflated (`zip_stream.py`) and cut into parts in memory (`member.py`), each NDJSON part searched for a key
seen late (`json_keys.py`), and the typed rows appended to a Parquet writer per day (`day_files.py`)."""
