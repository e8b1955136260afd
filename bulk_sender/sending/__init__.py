"""Sending: request bodies, the HTTP transport, outcomes, retries, the rate, the engine."""
