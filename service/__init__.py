"""The composition root: the one place that puts the parts together.

- ``service.app``: the ASGI apps (API and dashboard on one port; each alone);
- ``service.supervisor``: the processes of ``layertracer up`` started, watched and stopped;
- ``service.demo``: the demo launcher, a client of the service like any other;
- ``service.commands``: their CLI commands, added to ``layertracer`` through entry points.

``backend`` (the API), ``frontend`` (the dashboard) and ``worker`` never import it, nor each other
beyond what ``tests/test_layering.py`` allows.
"""
