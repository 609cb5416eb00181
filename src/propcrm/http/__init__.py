"""The HTTP kernel: what the API (:mod:`propcrm.api`), the pages (:mod:`propcrm.web`) and the features'
routes build on — authentication and roles (:mod:`.auth`), page rendering, CSRF and flashes (:mod:`.pages`),
errors as JSON or pages (:mod:`.errors`).

Nothing here imports :mod:`propcrm.api`, :mod:`propcrm.web` or :mod:`propcrm.features`; the services and
the layers below never import this package (``tests/unit/test_layers.py``).
"""
