"""Explain a whole collection of models, index the results in SQLite, and find models by what they do.

``explain_many`` (``finexl explain-many``), ``rebuild_index`` (``finexl index rebuild``), ``search``
(``finexl search``) and ``show`` (``finexl show``).
"""

from finexl.collection.index import rebuild_index
from finexl.collection.run import ManyResult, explain_many
from finexl.collection.search import Hit, search, show

__all__ = ["Hit", "ManyResult", "explain_many", "rebuild_index", "search", "show"]
