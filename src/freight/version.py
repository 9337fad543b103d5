"""The version of freight (what the OpenAPI document and the package say)."""

__version__ = "0.1.0"
