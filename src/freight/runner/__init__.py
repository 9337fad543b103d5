"""Runner processes: one per model replica, the model loaded once.

The agent talks to a runner over its stdin/stdout with length-prefixed JSON
frames (:mod:`freight.runner.protocol`); the model's own prints go to stderr.
"""
