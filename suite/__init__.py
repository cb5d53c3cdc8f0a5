"""The suite: the command line, the process supervisor and the demo, above the services.

Nothing in `shared/` or `services/` imports this package; it finds the services
through the explicit registry in `suite/registry.py`.
"""
