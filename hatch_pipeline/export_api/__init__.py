"""The vendor side: HTTP client, typed errors, rate ledger and export-window planning."""
