"""Label Studio adapter: the only package that imports ``label_studio_sdk``.

- ``local``: Label Studio 1.23.2 in its own venv (``.ls-venv``), its environment, free ports, default credentials;
- ``server``: ``LabelStudioServer``, a local Label Studio process for tests and the local stack;
- ``users``: annotator users of that server, their tokens and organization;
- ``config``: label config XML <-> ``LabelSchema`` (``LabelConfig``);
- ``convert``: annotations -> ``Example``/``Skipped``, model output -> predictions, webhook events;
- ``connection`` (SDK clients, retries, typed errors) -> ``projects`` -> ``tasks`` -> ``gateway``:
  ``LabelStudioGateway`` over the 2.x SDK, one layer of calls per module;
- ``annotator``: a scripted annotator over the gateway.

Import the submodules directly; this package imports nothing so that ``server`` and
``config`` stay cheap to import.
"""
