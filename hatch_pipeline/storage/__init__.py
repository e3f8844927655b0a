"""The bucket: raw ZIPs, per-day Parquet and the manifests between them, in one GCS bucket under a prefix.
`store.py` talks to it (`ObjectStore`), `keys.py` names every object, and `manifests.py` reads and writes the
manifests that say which export and which Parquet file is the truth for each day."""
