"""The agent: claims work, drives runner processes, enforces leases and deadlines."""

from freight.agent.agent import Agent

__all__ = ["Agent"]
