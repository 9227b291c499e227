"""The case store: schema and migrations, the group-committing writer, customers, cases, screen-pop,
data quality and privacy. Everything here runs on SQLite (the embedded default) and PostgreSQL."""
