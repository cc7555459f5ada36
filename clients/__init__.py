"""Chorus clients: the `chorus` command (enqueue, say, stitch, report, run)."""
