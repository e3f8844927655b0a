"""A stored export ZIP → one Parquet file per day. `export.py` is the way through (`parse_export`): the ZIP's one
file is inflated (`zip_stream.py`) and cut into parts in memory (`member.py`); the first part settles the columns
(`columns.py`), each later NDJSON part is searched for a key seen late (`json_keys.py`), and every part's values are
typed (`values.py`) and appended to a Parquet writer per day (`day_files.py`). Only when polars fails or the counts
disagree does the slow path (`explain.py`) read the file again, record by record, to name the line at fault."""
