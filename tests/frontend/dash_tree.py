"""Walking a Dash layout tree in tests: find a component by id, and the text a user would read."""

from __future__ import annotations

import dash


def find(component, component_id):
    """The component with this id inside a layout tree (None if absent)."""
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    if children is None:
        return None
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if isinstance(child, dash.development.base_component.Component):
            hit = find(child, component_id)
            if hit is not None:
                return hit
    return None


def text_of(component) -> str:
    if isinstance(component, (str, int, float)):
        return str(component)
    children = getattr(component, "children", None)
    if children is None:
        return ""
    if isinstance(children, (list, tuple)):
        return " ".join(text_of(x) for x in children)
    return text_of(children)
