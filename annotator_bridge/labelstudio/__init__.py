"""Label Studio adapter: the only package that imports ``label_studio_sdk``.

- ``server``: run a local Label Studio 1.23.2 (own venv ``.ls-venv``) for tests and the local stack;
- ``config``: label config XML <-> ``LabelSchema`` (``LabelConfig``);
- ``convert``: annotations -> ``Example``/``Skipped``, model output -> predictions, webhook events;
- ``gateway``: ``LabelStudioGateway`` over the 2.x SDK (retries, typed errors).

Import the submodules directly; this package imports nothing so that ``server`` and
``config`` stay cheap to import.
"""
