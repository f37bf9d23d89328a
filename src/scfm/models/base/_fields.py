"""scvi-tools fields of the family model classes, and their registry in a JSON-ready form.

A foundation model reads any gene panel (the genes are aligned to its vocabulary), and its grouping columns
(samples, metadata terms, labels) take new values on new data. So, unlike scvi-tools' own fields:

- :class:`GenePanelLayerField` transfers to an AnnData with other genes;
- :class:`ObsCategoryField` keeps missing values (code ``-1``) and, on transfer, keeps the registered categories'
  codes and appends new categories after them (scvi-tools' ``extend_categories=True``). The column must exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.data._constants import _FIELD_REGISTRIES_KEY, _STATE_REGISTRY_KEY
from scvi.data.fields import CategoricalObsField, LayerField


class GenePanelLayerField(LayerField):
    """The expression layer; a new AnnData may hold other genes (they are aligned to the vocabulary)."""

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        """Register the layer of ``adata_target`` whatever its genes."""
        return self.register_field(adata_target)


class ObsCategoryField(CategoricalObsField):
    """A categorical ``obs`` column whose missing values are allowed and whose new categories extend the mapping.

    The codes (``-1`` for a missing value) go to ``obs['_scvi_<registry_key>']`` as in scvi-tools; the state
    registry holds the ``categorical_mapping`` and the original column name.
    """

    def _codes(self, adata: AnnData, categories: np.ndarray | None) -> np.ndarray:
        column = adata.obs[self._original_attr_key]
        values = column.astype(object).where(column.notna(), None)
        if categories is None:
            present = pd.unique(np.asarray(values[values.notna()], dtype=object))
            categories = np.asarray(sorted(present, key=str), dtype=object)
        codes = pd.Categorical(values, categories=pd.Index(categories, dtype=object)).codes.astype(np.int64)
        adata.obs[self.attr_key] = codes
        return categories

    def register_field(self, adata: AnnData) -> dict:
        """Register the column: its sorted categories (missing values excluded) and its codes."""
        if self.is_default:
            self._setup_default_attr(adata)
            self.validate_field(adata)
            mapping = np.zeros(1, dtype=np.int64)
        else:
            self.validate_field(adata)
            mapping = self._codes(adata, None)
        return {self.CATEGORICAL_MAPPING_KEY: mapping, self.ORIGINAL_ATTR_KEY: self._original_attr_key}

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        """Code ``adata_target``'s column with the registered categories, new ones appended in sorted order."""
        if self.is_default:
            return self.register_field(adata_target)
        if self._original_attr_key not in adata_target.obs:
            raise KeyError(
                f"adata.obs has no column {self._original_attr_key!r}, which the model registered as its "
                f"{self.registry_key!r} field; add it, or pass the setup arguments that fit this AnnData"
            )
        known = np.asarray(state_registry[self.CATEGORICAL_MAPPING_KEY], dtype=object)
        column = adata_target.obs[self._original_attr_key]
        present = pd.unique(np.asarray(column[column.notna()], dtype=object))
        new = sorted(set(present) - set(known.tolist()), key=str)
        mapping = self._codes(adata_target, np.concatenate([known, np.asarray(new, dtype=object)]))
        return {self.CATEGORICAL_MAPPING_KEY: mapping, self.ORIGINAL_ATTR_KEY: self._original_attr_key}


def registry_to_json(registry: dict) -> dict[str, Any]:
    """Return the field states of an scvi-tools registry as JSON-ready values (arrays become lists)."""
    fields = {}
    for key, field in registry[_FIELD_REGISTRIES_KEY].items():
        state = field.get(_STATE_REGISTRY_KEY, {})
        fields[key] = {name: _plain(value) for name, value in state.items()}
    return fields


def registry_from_json(fields: dict[str, Any]) -> dict:
    """Return an scvi-tools ``source_registry`` from :func:`registry_to_json`'s output."""
    return {
        _FIELD_REGISTRIES_KEY: {key: {_STATE_REGISTRY_KEY: dict(state)} for key, state in fields.items()},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | pd.Index):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
