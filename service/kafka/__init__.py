"""Kafka ingestion (`livefeat consume`)."""
