"""The three stages of a data source as plain functions: export to raw ZIPs (`raw.py`), ZIPs to Parquet
(`parquet.py`), Parquet to BigQuery (`bigquery.py`); `common.py` holds what they share (days that can never be
landed, the errors that say a stage has nothing to work on).

Assets call these and turn their results into metadata; everything here runs without Dagster. Each stage reads
only what the stage before it stored: parsing and loading never call the API, so any later stage can be run again
from the bucket without spending an export.
"""
