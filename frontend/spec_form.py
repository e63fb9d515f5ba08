"""Form fields generated from the spec's pydantic declarations: one renderer that turns a field into a
Dash input (its label, its description, its default, its bounds or choices), one reader that turns
the inputs back into values and has the same pydantic model check them, and the way back from a
stored spec to the inputs (cloning a run).

A field is named by its path in the spec (``top_k``, ``placement.device_map``); its input's id is
``<prefix>-<path with '.' as '-'>`` and its message box ``<id>-error``. The widget follows the type:

- ``int`` / ``float``: a number input, the spec's bounds (``layertracer.spec.fields.number_bounds``) in
  its help line (not on the input: the spec judges the number typed, see ``control``);
- ``Literal[...]``: a dropdown of its choices (clearable when the field is Optional);
- ``bool``: one checkbox (value ``["on"]`` or ``[]``); ``Optional[bool]``: a dropdown yes / no;
- ``str``: a text input; ``list[int]``: comma-separated text; ``list[str]``: a text area, one per line;
- ``dict[str, str]``: a text area of ``key = value`` lines;
- a nested model: its own fields, under its name.

A field added to a spec model appears on the forms with no other code (the forms' tests compare their
inputs with the spec's fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Sequence, Union, get_args, get_origin

from dash import dcc, html
from pydantic import BaseModel, ValidationError

from layertracer.spec.fields import NumberBounds, number_bounds

ON = "on"
KINDS = ("int", "float", "choice", "bool", "maybe_bool", "text", "int_list", "text_list", "mapping")


@dataclass(frozen=True)
class Field:
    """One leaf field of a spec model. path: ``name`` or ``outer.name``; kind: one of ``KINDS``;
    choices: a Literal's values; optional: None is a value; default: the spec's (None when required or
    given by a factory that makes an empty list/dict); bounds: a number's."""

    path: str
    model: type
    name: str
    kind: str
    choices: tuple = ()
    optional: bool = False
    required: bool = False
    default: Any = None
    description: str = ""
    bounds: Optional[NumberBounds] = None

    def label(self, labels: Optional[dict[str, str]] = None) -> str:
        if labels and self.path in labels:
            return labels[self.path]
        return self.name.replace("_", " ").capitalize()


def _strip(annotation: Any) -> tuple[Any, bool]:
    """(annotation without Optional / Annotated, whether None is allowed)."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union:
            args = [a for a in get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def _kind(annotation: Any) -> tuple[str, tuple]:
    base, _ = _strip(annotation)
    origin = get_origin(base)
    if origin is Literal:
        return "choice", tuple(get_args(base))
    if base is bool:
        return "bool", ()
    if base is int:
        return "int", ()
    if base is float:
        return "float", ()
    if base is str:
        return "text", ()
    if origin is list:
        item, _ = _strip(get_args(base)[0])
        return ("int_list" if item is int else "text_list"), ()
    if origin is dict:
        return "mapping", ()
    raise TypeError(f"no form widget for the annotation {annotation!r}")


def _is_model(annotation: Any) -> bool:
    base, _ = _strip(annotation)
    return isinstance(base, type) and issubclass(base, BaseModel)


def fields_of(model: type[BaseModel], *, skip: Sequence[str] = (), under: str = "") -> list[Field]:
    """Every leaf field of ``model`` in declaration order (nested models expanded under their name),
    except the paths in ``skip`` (those a page renders its own way)."""
    out = []
    for name, info in model.model_fields.items():
        path = f"{under}{name}"
        if path in skip:
            continue
        if _is_model(info.annotation):
            out.extend(fields_of(_strip(info.annotation)[0], skip=skip, under=f"{path}."))
            continue
        kind, choices = _kind(info.annotation)
        _, optional = _strip(info.annotation)
        if kind == "bool" and optional:
            kind = "maybe_bool"
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        bounds = number_bounds(model, name) if kind in ("int", "float") else None
        out.append(Field(path=path, model=model, name=name, kind=kind, choices=choices, optional=optional,
                         required=required, default=default, description=info.description or "", bounds=bounds))
    return out


def by_path(fields: Sequence[Field]) -> dict[str, Field]:
    return {f.path: f for f in fields}


def input_id(prefix: str, field: Field) -> str:
    return f"{prefix}-{field.path.replace('.', '-')}"


# -- spec value <-> widget value ------------------------------------------------------------------

def to_widget(field: Field, value: Any) -> Any:
    """A spec value (a stored spec's, or the default) -> what the field's input holds."""
    if field.kind == "bool":
        return [ON] if value else []
    if field.kind == "maybe_bool":
        return None if value is None else ("yes" if value else "no")
    if field.kind == "int_list":
        return ", ".join(str(v) for v in value or [])
    if field.kind == "text_list":
        return "\n".join(str(v) for v in value or [])
    if field.kind == "mapping":
        return "\n".join(f"{k} = {v}" for k, v in (value or {}).items())
    if field.kind == "text":
        return "" if value is None else str(value)
    return value


def from_widget(field: Field, raw: Any) -> Any:
    """What an input holds -> the value handed to the spec model (which then judges it: a value the
    form cannot read is passed on as typed, so that the message is the spec's)."""
    if field.kind == "bool":
        return ON in (raw or [])
    if field.kind == "maybe_bool":
        return None if raw in (None, "") else raw == "yes"
    if field.kind in ("int", "float"):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, float) and field.kind == "int" and raw.is_integer():
            return int(raw)
        return raw
    if field.kind == "choice":
        return None if raw == "" else raw
    text = "" if raw is None else str(raw)
    if field.kind == "text":
        return None if field.optional and not text.strip() else text.strip()
    if field.kind == "int_list":
        return [int(p) if re.fullmatch(r"[+-]?\d+", p) else p for p in re.split(r"[,\s]+", text.strip()) if p]
    if field.kind == "text_list":
        return [line.strip() for line in text.splitlines() if line.strip()]
    # mapping: "key = value" lines; a line without "=" is handed on as the whole text (not a mapping)
    pairs = {}
    for line in filter(None, (line.strip() for line in text.splitlines())):
        key, sep, value = line.partition("=")
        if not sep:
            return text
        pairs[key.strip()] = value.strip()
    return pairs


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """{"a": 1, "placement.device_map": "auto"} -> {"a": 1, "placement": {"device_map": "auto"}}."""
    out: dict[str, Any] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            out.setdefault(head, {}).update(nest({rest: value}))
        else:
            out[head] = value
    return out


def lookup(spec: dict, path: str) -> tuple[bool, Any]:
    """(found, value) of ``path`` in a nested spec dict."""
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def widget_values(fields: Sequence[Field], spec: Optional[dict] = None) -> dict[str, Any]:
    """Every field's input value: the stored spec's where it has the field, else the spec's default."""
    out = {}
    for f in fields:
        found, value = lookup(spec or {}, f.path)
        out[f.path] = to_widget(f, value if found else f.default)
    return out


def query_values(fields: Sequence[Field], query: dict) -> dict[str, Any]:
    """Fields given in a page's URL by their path (``?steps=5&eval_mode=cloze&similarity=0``), as their
    inputs hold them; a value that cannot be one (a word for a number, an unknown choice) is left out,
    so the field keeps its default, as every unknown query value does."""
    out: dict[str, Any] = {}
    for f in fields:
        if f.path not in query:
            continue
        text = str(query[f.path]).strip()
        if f.kind in ("int", "float"):
            try:
                out[f.path] = int(text) if f.kind == "int" and re.fullmatch(r"[+-]?\d+", text) else float(text)
            except ValueError:
                continue
        elif f.kind == "bool":
            out[f.path] = [ON] if text.lower() in ("1", "true", "on", "yes") else []
        elif f.kind == "maybe_bool":
            if text in ("yes", "no"):
                out[f.path] = text
        elif f.kind == "choice":
            if text in [str(c) for c in f.choices]:
                out[f.path] = next(c for c in f.choices if str(c) == text)
        else:
            out[f.path] = text
    return out


# -- rendering -------------------------------------------------------------------------------------

def control(prefix: str, field: Field, value: Any, label: str) -> Any:
    ident = input_id(prefix, field)
    if field.kind in ("int", "float"):
        # No min / max / step on the input: Dash turns a value the browser finds invalid into None, so
        # the spec would see "no number" instead of the number typed (a top-k of 1000 would read as
        # "give a number"); the bounds are in the help line, and the spec judges what was typed.
        return dcc.Input(id=ident, type="number", value=value, step="any", className="lt-input",
                         placeholder="empty: the default (none)" if field.optional else None)
    if field.kind == "choice":
        return dcc.Dropdown(id=ident, options=[{"label": str(c), "value": c} for c in field.choices], value=value,
                            clearable=field.optional, placeholder="the default" if field.optional else None,
                            className="lt-input")
    if field.kind == "maybe_bool":
        return dcc.Dropdown(id=ident, options=[{"label": "yes", "value": "yes"}, {"label": "no", "value": "no"}],
                            value=value, clearable=True, placeholder="the default", className="lt-input")
    if field.kind == "bool":
        return dcc.Checklist(id=ident, options=[{"label": f" {label}", "value": ON}], value=value, className="lt-checks")
    if field.kind in ("text_list", "mapping"):
        return dcc.Textarea(id=ident, value=value, className="lt-input lt-textarea",
                            placeholder="one per line" if field.kind == "text_list" else "key = value, one per line")
    return dcc.Input(id=ident, type="text", value=value, className="lt-input lt-wide" if field.kind != "int_list" else "lt-input",
                     placeholder="comma-separated" if field.kind == "int_list" else None)


def render(prefix: str, field: Field, value: Any, labels: Optional[dict[str, str]] = None) -> html.Div:
    """The field's block: label, input, the spec's description, and a box for its message."""
    label = field.label(labels)
    ident = input_id(prefix, field)
    head = [] if field.kind == "bool" else [html.Label(label, htmlFor=ident)]
    help_text = field.description
    if field.kind in ("int", "float") and field.bounds is not None:
        help_text = " ".join(filter(None, [help_text, _range_text(field.bounds)]))
    return html.Div(head + [
        control(prefix, field, value, label),
        html.Div(help_text, className="lt-muted lt-help") if help_text else None,
        html.Div("", id=f"{ident}-error", className="lt-field-error", role="alert"),
    ], className="lt-field", **{"data-field": field.path})


def _shown(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


def _range_text(b: NumberBounds) -> str:
    if b.low is None and b.high is None:
        return ""
    low = "" if b.low is None else (f"> {_shown(b.low)}" if b.strict_low else f"≥ {_shown(b.low)}")
    high = "" if b.high is None else (f"< {_shown(b.high)}" if b.strict_high else f"≤ {_shown(b.high)}")
    return f"({', '.join(filter(None, [low, high]))})"


def render_all(prefix: str, fields: Sequence[Field], values: dict[str, Any],
               labels: Optional[dict[str, str]] = None) -> list[html.Div]:
    return [render(prefix, f, values.get(f.path), labels) for f in fields]


# -- reading and checking --------------------------------------------------------------------------

def read(fields: Sequence[Field], raws: dict[str, Any]) -> dict[str, Any]:
    """Input values by path -> spec values by path (fields absent from ``raws`` are left out)."""
    return {f.path: from_widget(f, raws[f.path]) for f in fields if f.path in raws}


def _message(error: dict) -> str:
    return " ".join(str(error.get("msg", "invalid value")).removeprefix("Value error, ").split())


def field_errors(exc: ValidationError, fields: Sequence[Field]) -> tuple[dict[str, str], list[str]]:
    """A ValidationError -> ({path: first message} for the given fields, [messages of other paths]).
    An error at a list item (``seeds.1``) belongs to its field; a model-wide error (no location) goes
    to the first field its message names, else to the others."""
    paths = [f.path for f in fields]
    by_field: dict[str, str] = {}
    others: list[str] = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        message = _message(error)
        where = None
        for n in range(len(loc), 0, -1):
            if ".".join(loc[:n]) in paths:
                where = ".".join(loc[:n])
                break
        if where is None and not loc:
            named = [p for p in paths if re.search(rf"\b{re.escape(p.rsplit('.', 1)[-1])}\b", message)]
            where = named[0] if named else None
        if where is None:
            others.append(f"{'.'.join(loc) + ': ' if loc else ''}{message}")
        else:
            by_field.setdefault(where, message)
    return by_field, others


def check(model: type[BaseModel], data: dict[str, Any], fields: Sequence[Field]) -> tuple[Optional[BaseModel], dict[str, str], list[str]]:
    """Validate ``data`` (nested) with ``model``: (the model, {}, []) or (None, {path: message}, others)."""
    try:
        return model.model_validate(data), {}, []
    except ValidationError as exc:
        by_field, others = field_errors(exc, fields)
        return None, by_field, others


def messages(fields: Sequence[Field], errors: dict[str, str], labels: Optional[dict[str, str]] = None) -> list[str]:
    """The list shown above the submit button: ``Label: message.`` per field, in the form's order."""
    order = {f.path: i for i, f in enumerate(fields)}
    named = {f.path: f.label(labels) for f in fields}
    return [f"{named.get(p, p)}: {m}{'' if m.endswith('.') else '.'}"
            for p, m in sorted(errors.items(), key=lambda kv: order.get(kv[0], len(order)))]
