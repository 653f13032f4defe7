"""Several hosts sharing one PostgreSQL ledger (docs/cluster.md)."""
