"""The database: its file, schema, tables and remote reading (imports nothing above it)."""
