"""What difymaint knows about Dify itself: its schema (tables, cascades), its archive format, and the
services Dify's jobs talk to (billing, the Celery task table, mail, object storage, TiDB Cloud) and its beat
switches.
"""
