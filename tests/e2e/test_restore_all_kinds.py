"""The contract every registered modification kind meets, parametrised from the registry so that a new kind
(built in or a plugin) cannot be half-supported silently: its examples validate, restore the demo model bit for
bit after a whole examination, and have a one-line summary, a compression level and a predictor mapping (or a
declared absence of each)."""

from __future__ import annotations

import pytest
import torch

from doctor.examination.runner import Options, examine
from doctor.modifications import registry
from doctor.modifications.kinds.compose import leaves
from doctor.predict.cases import Unsupported, cases_for
from doctor.results import ModelFacts
from doctor.spec.checkup import Suite
from doctor.spec.modification import MODIFICATION_KINDS
from tests.conftest import assert_bit_identical, state_snapshot

EXAMPLES = [(kind, example) for kind, m in registry.methods().items() for example in m.examples]
IDS = [f"{kind}-{i}" for i, (kind, _) in enumerate(EXAMPLES)]
FACTS = ModelFacts(id="contract", architecture="LlamaForCausalLM", model_type="llama", family="llama",
                   params=1_000_000_000, layers=16, hidden=2048, heads=32,
                   kv_heads=8, vocab=32000, dtype="float32")


def test_every_kind_module_is_registered():
    import pkgutil

    import doctor.modifications.kinds as package

    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert modules <= set(registry.kinds()), "a kind module failed the registry's checks (see the warning)"
    assert registry.kinds() == MODIFICATION_KINDS


@pytest.mark.parametrize(("kind", "example"), EXAMPLES, ids=IDS)
def test_summary_level_and_expectation_are_declared(kind, example):
    method = registry.method(kind)
    spec = Suite.model_validate({"name": "one", "checkups": [{"id": "c", "modification": example}]}).checkups[0]
    dumped = spec.modification.model_dump(mode="json")
    assert dumped["kind"] == kind
    line = registry.summary(dumped)
    assert line.strip() and "=" not in line.split()[0] and "\n" not in line
    level = registry.compression_level(dumped, {})
    if method.compression.unit == "none":
        assert level is None
    else:
        assert isinstance(level, float) and level > 0
    if all(registry.method(leaf["kind"]).predictor is not None for leaf in leaves(dumped)):
        cases = cases_for(FACTS, dumped, {})
        assert len(cases) == len(leaves(dumped)) and all(c.kind and c.method for c in cases)
    else:
        with pytest.raises(Unsupported):
            cases_for(FACTS, dumped, {})


def _restore_check(patient, tmp_path, examples: list[tuple[str, str, dict]]) -> None:
    model = patient.model
    before = state_snapshot(model)
    config_before = model.config.to_dict()
    suite = Suite.model_validate({
        "name": "all-kinds",
        "eval": {"corpus": "auto", "max_windows": 1, "bootstrap": 0},
        "calibration": {"corpus": "auto", "samples": 4, "seq_len": 64},
        "checkups": [{"id": name, "modification": spec, "metrics": ["perplexity"]} for name, _, spec in examples],
    })
    exam = examine(patient, suite, Options(out_dir=tmp_path, use_predictor=False))
    errors = {c.id: c.error for c in exam.checkups if c.status != "ok"}
    assert not errors
    assert_bit_identical(model, before)
    assert model.config.to_dict() == config_before
    # the function is back too: same logits as a fresh forward before any change
    ids = torch.arange(1, 33)[None]
    with torch.no_grad():
        logits = model(ids).logits
    model.load_state_dict(before)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, logits)


def _examples(slow: bool, needs: str | None = None) -> list[tuple[str, str, dict]]:
    return [(name, kind, spec) for name, (kind, spec) in zip(IDS, EXAMPLES, strict=True)
            if registry.method(kind).slow == slow and registry.method(kind).needs == needs]


def test_every_example_restores_the_demo_model_exactly(demo_patient, tmp_path):
    """All kinds in one examination, so that a kind which leaves anything behind spoils the ones after it too."""
    examples = _examples(slow=False)
    elsewhere = _examples(slow=True) + _examples(slow=False, needs="experts")
    assert {kind for _, kind, _ in examples + elsewhere} == set(registry.kinds())
    _restore_check(demo_patient, tmp_path, examples)


def test_examples_needing_experts_restore_a_tiny_mixture_of_experts_exactly(tmp_path):
    """Kinds the dense demo cannot take (expert pruning) are checked on a tiny random Mixtral."""
    from transformers import MixtralConfig, MixtralForCausalLM

    from tests.conftest import as_patient

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=256, tie_word_embeddings=False)
    _restore_check(as_patient(MixtralForCausalLM(config).eval(), "tiny-mixtral"), tmp_path,
                   _examples(slow=False, needs="experts"))


@pytest.mark.slow
def test_slow_examples_restore_the_demo_model_exactly(demo_patient, tmp_path):
    _restore_check(demo_patient, tmp_path, _examples(slow=True))
