"""Label Studio label configs (XML) <-> al-loop ``LabelSchema``.

al-loop drives exactly one labelling control on one ``<Text>`` object:

- NER: ``<Labels name=... toName=<text>>`` with ``<Label value=.../>`` children;
- classification: ``<Choices name=... toName=<text> choice="single"|"single-radio"|"multiple">``
  with ``<Choice value=.../>`` children (``multiple`` = multi-label).

Other, non-labelling controls (``TextArea`` for comments, ``Rating``, ...) are
tolerated and their results ignored. Tag and label names always come from the
config (``LabelConfig.from_name`` / ``to_name`` / ``text_key``); nothing is hard-coded.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from al_loop.data.schema import LabelSchema
from al_loop.errors import SchemaError
from al_loop.types import TaskKind

DEFAULT_FROM_NAME = "label"
DEFAULT_TO_NAME = "text"
DEFAULT_TEXT_KEY = "text"

_LABEL_CONTROLS = {"Labels": TaskKind.NER, "Choices": TaskKind.CLASSIFICATION}
_CHILD_TAG = {"Labels": "Label", "Choices": "Choice"}
_MULTI_CHOICE = {"multiple"}
_SINGLE_CHOICE = {"single", "single-radio"}


@dataclass(frozen=True)
class LabelConfig:
    """What al-loop needs to know about a project's label config.

    ``from_name``/``to_name`` go into every result item; the task text lives in
    ``task.data[text_key]``. ``aliases`` maps a Label/Choice ``alias`` (what Label
    Studio writes into results when set) to the label value.
    """

    schema: LabelSchema
    from_name: str
    to_name: str
    text_key: str = DEFAULT_TEXT_KEY
    control_type: str = ""            # "Labels" or "Choices"
    result_type: str = ""             # "labels" or "choices" (result item "type")
    aliases: Mapping[str, str] = field(default_factory=dict)
    xml: str | None = None

    def __post_init__(self) -> None:
        if not self.control_type:
            object.__setattr__(self, "control_type", "Labels" if self.schema.task is TaskKind.NER else "Choices")
        if not self.result_type:
            object.__setattr__(self, "result_type", self.control_type.lower())

    @property
    def task(self) -> TaskKind:
        return self.schema.task

    def label_of(self, value: str) -> str:
        """Map a label written in a result (value or alias) to the schema's label."""
        return self.aliases.get(value, value)

    def result_label(self, label: str) -> str:
        """The name Label Studio writes into results for schema label ``label`` (its alias if it has one)."""
        for alias, value in self.aliases.items():
            if value == label:
                return alias
        return label


# ---------------------------------------------------------------------------- generate
def _check_name(name: str, what: str) -> str:
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise SchemaError(f"{what} must be a non-empty identifier (letters, digits, _ or -), got {name!r}")
    return name


def ner_config(labels: Iterable[str], *, from_name: str = DEFAULT_FROM_NAME, to_name: str = DEFAULT_TO_NAME,
               text_key: str = DEFAULT_TEXT_KEY) -> str:
    """NER label config: ``<Labels>`` over a ``<Text>`` (labels XML-escaped, sorted)."""
    schema = LabelSchema.build(TaskKind.NER, labels)
    return build_label_config(schema, from_name=from_name, to_name=to_name, text_key=text_key)


def classification_config(labels: Iterable[str], *, multi_label: bool = False, from_name: str = DEFAULT_FROM_NAME,
                          to_name: str = DEFAULT_TO_NAME, text_key: str = DEFAULT_TEXT_KEY) -> str:
    """Classification config: ``<Choices choice="single">`` or ``choice="multiple"`` for multi-label."""
    schema = LabelSchema.build(TaskKind.CLASSIFICATION, labels, multi_label=multi_label)
    return build_label_config(schema, from_name=from_name, to_name=to_name, text_key=text_key)


def build_label_config(schema: LabelSchema, *, from_name: str = DEFAULT_FROM_NAME, to_name: str = DEFAULT_TO_NAME,
                       text_key: str = DEFAULT_TEXT_KEY) -> str:
    """The label config XML Label Studio needs to annotate ``schema``."""
    _check_name(from_name, "from_name")
    _check_name(to_name, "to_name")
    _check_name(text_key, "text_key")
    if from_name == to_name:
        raise SchemaError("from_name and to_name must differ")
    text = f"  <Text name={quoteattr(to_name)} value={quoteattr('$' + text_key)}/>"
    if schema.task is TaskKind.NER:
        items = "".join(f"\n    <Label value={quoteattr(lb)}/>" for lb in schema.labels)
        control = f"  <Labels name={quoteattr(from_name)} toName={quoteattr(to_name)}>{items}\n  </Labels>"
        body = f"{control}\n{text}"
    else:
        choice = "multiple" if schema.multi_label else "single"
        items = "".join(f"\n    <Choice value={quoteattr(lb)}/>" for lb in schema.labels)
        control = (f"  <Choices name={quoteattr(from_name)} toName={quoteattr(to_name)} choice=\"{choice}\" "
                   f"showInline=\"true\">{items}\n  </Choices>")
        body = f"{text}\n{control}"
    return f"<View>\n{body}\n</View>\n"


# ---------------------------------------------------------------------------- parse
def parse_label_config(label_config: str | None = None,
                       parsed_label_config: Mapping[str, Any] | None = None) -> LabelConfig:
    """Read (schema, from_name, to_name, text_key) from a project's label config.

    ``parsed_label_config`` is the project's API field of that name; when given it
    supplies control/object names and labels, and the XML (if given too) is read
    only for the ``choice`` mode (``multiple`` = multi-label), which the parsed form
    lacks. Without it the XML is parsed with ``xml.etree``.
    Raises SchemaError for configs al-loop cannot drive.
    """
    if parsed_label_config:
        cfg = _from_parsed(parsed_label_config, label_config)
    elif label_config:
        cfg = _from_xml(label_config)
    else:
        raise SchemaError("no label config given")
    return cfg


def _parse_xml(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise SchemaError(f"label config is not valid XML: {exc}") from exc


def _is_control(el: ET.Element) -> bool:
    return "toName" in el.attrib and "name" in el.attrib


def _labelling_controls(kinds: Iterable[tuple[str, str]]) -> None:
    """Reject configs with several label-producing controls (``kinds`` = (name, tag))."""
    found = [(n, t) for n, t in kinds if t in _LABEL_CONTROLS or t.endswith("Labels") or t == "Taxonomy"]
    if not found:
        raise SchemaError("label config has no <Labels> or <Choices> control; al-loop drives NER (<Labels> on "
                          "<Text>) or classification (<Choices> on <Text>)")
    if len(found) > 1:
        names = ", ".join(f"<{t} name={n!r}>" for n, t in found)
        raise SchemaError(f"label config has several labelling controls ({names}); al-loop drives exactly one")
    name, tag = found[0]
    if tag not in _LABEL_CONTROLS:
        raise SchemaError(f"unsupported control <{tag} name={name!r}>; al-loop drives <Labels> or <Choices> on <Text>")


def _choice_mode(el: ET.Element) -> bool:
    mode = el.attrib.get("choice", "single")
    if mode in _MULTI_CHOICE:
        return True
    if mode in _SINGLE_CHOICE:
        return False
    raise SchemaError(f"unsupported choice mode {mode!r} on <Choices name={el.attrib.get('name')!r}>")


def _schema(task: TaskKind, labels: list[str], multi_label: bool, control: str) -> LabelSchema:
    if not labels:
        raise SchemaError(f"control {control!r} has no labels")
    if len(set(labels)) != len(labels):
        raise SchemaError(f"control {control!r} lists a label twice")
    return LabelSchema.build(task, labels, multi_label=multi_label)


def _from_xml(xml: str) -> LabelConfig:
    root = _parse_xml(xml)
    controls = [el for el in root.iter() if _is_control(el)]
    _labelling_controls((el.attrib["name"], el.tag) for el in controls)
    control = next(el for el in controls if el.tag in _LABEL_CONTROLS)
    from_name = control.attrib["name"]
    to_names = [n.strip() for n in control.attrib["toName"].split(",") if n.strip()]
    if len(to_names) != 1:
        raise SchemaError(f"control {from_name!r} must point to exactly one object (toName), got {to_names}")
    to_name = to_names[0]
    objects = {el.attrib["name"]: el for el in root.iter() if "name" in el.attrib and "value" in el.attrib
               and not _is_control(el)}
    texts = [el for el in root.iter() if el.tag == "Text"]
    if not texts:
        raise SchemaError("label config has no <Text> object")
    target = objects.get(to_name)
    if target is None:
        raise SchemaError(f"control {from_name!r} points to {to_name!r}, which is not an object in the config")
    if target.tag != "Text":
        raise SchemaError(f"control {from_name!r} points to <{target.tag}>; al-loop needs a <Text> object")
    text_key = _text_key(target.attrib["value"], to_name)
    if target.attrib.get("valueType", "text") != "text":
        raise SchemaError(f"<Text name={to_name!r}> reads a {target.attrib['valueType']!r}; al-loop needs the text "
                          "itself in the task data")
    child_tag = _CHILD_TAG[control.tag]
    labels: list[str] = []
    aliases: dict[str, str] = {}
    for child in control.iter(child_tag):
        value = child.attrib.get("value")
        if value is None:
            raise SchemaError(f"<{child_tag}> without a value in control {from_name!r}")
        labels.append(value)
        if child.attrib.get("alias"):
            aliases[child.attrib["alias"]] = value
    task = _LABEL_CONTROLS[control.tag]
    multi = _choice_mode(control) if task is TaskKind.CLASSIFICATION else False
    return LabelConfig(_schema(task, labels, multi, from_name), from_name, to_name, text_key,
                       control.tag, control.tag.lower(), aliases, xml)


def _text_key(value: str, to_name: str) -> str:
    value = value.strip()
    if not value.startswith("$") or len(value) < 2:
        raise SchemaError(f"<Text name={to_name!r}> must take its text from a task field (value=\"$field\"), "
                          f"got {value!r}")
    return value[1:]


def _from_parsed(parsed: Mapping[str, Any], xml: str | None) -> LabelConfig:
    if not isinstance(parsed, Mapping):
        raise SchemaError("parsed_label_config must be a mapping of control name -> description")
    entries: list[tuple[str, Mapping[str, Any]]] = []
    for name, desc in parsed.items():
        if not isinstance(desc, Mapping) or "type" not in desc:
            raise SchemaError(f"parsed_label_config entry {name!r} has no type")
        entries.append((str(name), desc))
    _labelling_controls((n, str(d["type"])) for n, d in entries)
    from_name, desc = next((n, d) for n, d in entries if d["type"] in _LABEL_CONTROLS)
    control_type = str(desc["type"])
    to_names = list(desc.get("to_name") or [])
    if len(to_names) != 1:
        raise SchemaError(f"control {from_name!r} must point to exactly one object (toName), got {to_names}")
    inputs = list(desc.get("inputs") or [])
    if len(inputs) != 1 or not isinstance(inputs[0], Mapping):
        raise SchemaError(f"control {from_name!r} must read exactly one <Text> object, got inputs {inputs}")
    if inputs[0].get("type") != "Text":
        raise SchemaError(f"control {from_name!r} points to <{inputs[0].get('type')}>; al-loop needs a <Text> object")
    text_key = str(inputs[0].get("value") or "")
    if not text_key:
        raise SchemaError(f"<Text name={to_names[0]!r}> has no task field")
    if inputs[0].get("valueType") not in (None, "", "text"):
        raise SchemaError(f"<Text name={to_names[0]!r}> reads a {inputs[0].get('valueType')!r}; al-loop needs "
                          "the text itself in the task data")
    # Label Studio lists a label by its alias when it has one; labels_attrs maps it back to the value.
    labels: list[str] = []
    aliases: dict[str, str] = {}
    attrs_of = desc.get("labels_attrs") or {}
    for shown in desc.get("labels") or []:
        attrs = attrs_of.get(shown) if isinstance(attrs_of, Mapping) else None
        value = str(attrs.get("value", shown)) if isinstance(attrs, Mapping) else str(shown)
        labels.append(value)
        if value != str(shown):
            aliases[str(shown)] = value
    task = _LABEL_CONTROLS[control_type]
    multi = False
    if task is TaskKind.CLASSIFICATION and xml:
        root = _parse_xml(xml)
        el = next((e for e in root.iter(control_type) if e.attrib.get("name") == from_name), None)
        if el is not None:
            multi = _choice_mode(el)
    return LabelConfig(_schema(task, labels, multi, from_name), from_name, str(to_names[0]), text_key,
                       control_type, control_type.lower(), aliases, xml)
