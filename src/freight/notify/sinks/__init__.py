"""One module per destination type; each class follows :class:`base.Sink`.

Modules are imported on demand (``notify/config.py``), so a deployment that uses
only webhooks never imports a broker client.
"""
