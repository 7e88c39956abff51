"""Verbs of the ``webiml`` command beyond LightningCLI's fit/validate/test/predict.

Each module of this package registers its verbs with :func:`webiml.cli.register_verb`; every module is
imported here, so adding a verb means adding a module.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
