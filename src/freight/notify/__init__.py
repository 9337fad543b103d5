"""Notifications: tell whoever asked when a prediction (or a pipeline run) starts or
completes.

The durable outbox and its delivery loop decide what to send and when, with
retries; the sinks (``sinks/``) deliver one :class:`~freight.notify.event.Event`
to one destination and know nothing of the store or the agent. ``config.py``
reads the ``notifications:`` section of ``freight.yaml``; ``build.py`` makes the
sinks from it; ``addresses.py`` is the SSRF guard; ``signing.py`` holds the
webhook secrets; ``envelope.py`` wraps events as CloudEvents for the brokers.
Broker client libraries are imported by their sink modules only, when a sink of
that type is built.
"""
