"""The built-in operation types: importing this package registers all 17."""

from . import (  # noqa: F401 - imported for the registrations they make
    _analysis,
    _indexing,
    _kb_population,
    _knowledge,
    _maintenance,
    _performance,
    _security,
    _test_suite,
)
