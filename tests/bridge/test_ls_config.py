"""Label config XML <-> LabelSchema (no server)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from al_loop.data.schema import LabelSchema
from al_loop.errors import SchemaError
from al_loop.types import TaskKind
from annotator_bridge.labelstudio.config import (
    LabelConfig,
    build_label_config,
    classification_config,
    ner_config,
    parse_label_config,
)

# Shapes as Label Studio 1.23 returns them in project.parsed_label_config (LABEL_STUDIO.md §5).
PARSED_CLS = {"sentiment": {"type": "Choices", "to_name": ["text"],
                            "inputs": [{"type": "Text", "valueType": None, "value": "text"}],
                            "labels": ["Positive", "Negative", "Neutral"],
                            "labels_attrs": {"Positive": {"value": "Positive"}, "Negative": {"value": "Negative"},
                                             "Neutral": {"value": "Neutral"}}}}
XML_CLS = """<View><Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/></Choices></View>"""
XML_NER = """<View><Labels name="label" toName="text">
  <Label value="PER"/><Label value="ORG"/><Label value="LOC"/></Labels>
  <Text name="text" value="$text"/></View>"""


def test_ner_config_round_trip() -> None:
    xml = ner_config(["PER", "ORG", "LOC"])
    ET.fromstring(xml)  # well-formed
    cfg = parse_label_config(xml)
    assert cfg.schema == LabelSchema.build(TaskKind.NER, ["LOC", "ORG", "PER"])
    assert (cfg.from_name, cfg.to_name, cfg.text_key) == ("label", "text", "text")
    assert (cfg.control_type, cfg.result_type) == ("Labels", "labels")


@pytest.mark.parametrize("multi", [False, True])
def test_classification_config_round_trip(multi: bool) -> None:
    xml = classification_config(["pos", "neg"], multi_label=multi, from_name="sentiment", to_name="doc",
                                text_key="body")
    assert ('choice="multiple"' in xml) is multi
    assert ('choice="single"' in xml) is not multi
    cfg = parse_label_config(xml)
    assert cfg.schema == LabelSchema.build(TaskKind.CLASSIFICATION, ["neg", "pos"], multi_label=multi)
    assert (cfg.from_name, cfg.to_name, cfg.text_key) == ("sentiment", "doc", "body")
    assert cfg.result_type == "choices"


def test_label_values_are_escaped() -> None:
    labels = ['A&B', 'say "hi"', "<tag>", "it's"]
    xml = classification_config(labels, multi_label=True)
    cfg = parse_label_config(xml)
    assert set(cfg.schema.labels) == set(labels)
    xml = build_label_config(LabelSchema.build(TaskKind.NER, ["O&RG", "P<ER>"]))
    assert parse_label_config(xml).schema.labels == ("O&RG", "P<ER>")


def test_parse_existing_configs_from_docs() -> None:
    ner = parse_label_config(XML_NER)
    assert ner.task is TaskKind.NER and ner.schema.labels == ("LOC", "ORG", "PER")
    cls = parse_label_config(XML_CLS)
    assert cls.task is TaskKind.CLASSIFICATION and not cls.schema.multi_label
    assert cls.from_name == "sentiment"


def test_parsed_label_config_is_preferred_and_xml_gives_choice_mode() -> None:
    cfg = parse_label_config(None, PARSED_CLS)
    assert cfg.from_name == "sentiment" and cfg.to_name == "text" and cfg.text_key == "text"
    assert cfg.schema.labels == ("Negative", "Neutral", "Positive") and not cfg.schema.multi_label
    multi_xml = XML_CLS.replace('choice="single"', 'choice="multiple"')
    assert parse_label_config(multi_xml, PARSED_CLS).schema.multi_label


def test_aliases_map_back_to_values() -> None:
    xml = """<View><Labels name="ner" toName="t"><Label value="Person" alias="PER"/><Label value="Org"/></Labels>
      <Text name="t" value="$content"/></View>"""
    cfg = parse_label_config(xml)
    assert cfg.schema.labels == ("Org", "Person")
    assert cfg.label_of("PER") == "Person" and cfg.result_label("Person") == "PER"
    parsed = {"ner": {"type": "Labels", "to_name": ["t"], "inputs": [{"type": "Text", "value": "content"}],
                      "labels": ["PER", "Org"],
                      "labels_attrs": {"PER": {"value": "Person", "alias": "PER"}, "Org": {"value": "Org"}}}}
    cfg2 = parse_label_config(xml, parsed)
    assert cfg2.schema == cfg.schema and dict(cfg2.aliases) == {"PER": "Person"} and cfg2.text_key == "content"


def test_extra_non_labelling_controls_are_tolerated() -> None:
    xml = XML_NER.replace("</View>", '<TextArea name="comment" toName="text"/></View>')
    assert parse_label_config(xml).from_name == "label"


@pytest.mark.parametrize(("xml", "message"), [
    ('<View><Choices name="c" toName="t"><Choice value="a"/><Choice value="b"/></Choices></View>', "no <Text>"),
    ('<View><Text name="t" value="$text"/></View>', "no <Labels> or <Choices>"),
    ('<View><Text name="t" value="$text"/><Labels name="a" toName="t"><Label value="X"/></Labels>'
     '<Choices name="b" toName="t"><Choice value="p"/><Choice value="q"/></Choices></View>', "several"),
    ('<View><Text name="t" value="$text"/><Labels name="a" toName="t"><Label value="X"/></Labels>'
     '<Labels name="b" toName="t"><Label value="Y"/></Labels></View>', "several"),
    ('<View><Image name="img" value="$image"/><Text name="t" value="$text"/>'
     '<Labels name="a" toName="img"><Label value="X"/></Labels></View>', "<Image>"),
    ('<View><Text name="t" value="$text"/><Labels name="a" toName="t"></Labels></View>', "no labels"),
    ('<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
     "at least two"),
    ('<View><Text name="t" value="text"/><Choices name="c" toName="t"><Choice value="a"/><Choice value="b"/>'
     '</Choices></View>', "$field"),
    ('<View><Text name="t" value="$text"/><Taxonomy name="c" toName="t"><Choice value="a"/></Taxonomy></View>',
     "Taxonomy"),
    ("<View><Text", "not valid XML"),
])
def test_unsupported_configs_raise_schema_error(xml: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message.replace("$", r"\$")):
        parse_label_config(xml)


def test_unsupported_parsed_configs_raise_schema_error() -> None:
    two = {**PARSED_CLS, "other": {**PARSED_CLS["sentiment"]}}
    with pytest.raises(SchemaError, match="several"):
        parse_label_config(None, two)
    hyper = {"sentiment": {**PARSED_CLS["sentiment"], "inputs": [{"type": "HyperText", "value": "html"}]}}
    with pytest.raises(SchemaError, match="HyperText"):
        parse_label_config(None, hyper)
    with pytest.raises(SchemaError, match="no label config"):
        parse_label_config(None, None)


def test_bad_names_rejected() -> None:
    with pytest.raises(SchemaError):
        ner_config(["PER"], from_name='x" onload="')
    with pytest.raises(SchemaError):
        ner_config(["PER"], from_name="text", to_name="text")


def test_label_config_defaults_types() -> None:
    cfg = LabelConfig(LabelSchema.build("ner", ["PER"]), "label", "text")
    assert cfg.control_type == "Labels" and cfg.result_type == "labels" and cfg.text_key == "text"
