"""The embedded demo: a seeded SQLite database with Dify's real table names, and row builders for tests."""
