"""Land Hatch Bulk Export API data in Google BigQuery with Dagster."""
