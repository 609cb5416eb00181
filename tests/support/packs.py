"""Rule packs for property tests, parsed once per run.

Parsing a pack's YAML costs 5-8 ms, more than a generated example's engine work; a property test that parsed
its pack in every example spent seconds re-reading the same text. A parsed ``RulePack`` is frozen and nothing
changes it, so each test still compiles its own engine from an identical pack. (Parsing itself is tested in
tests/unit/test_schema_and_presets.py and tests/unit/rules/test_rulepack_validation.py.)
"""

from __future__ import annotations

import functools

from propcrm.domain.rulepack import RulePack, load_pack, parse_pack


@functools.cache
def parsed(pack: str) -> RulePack:
    """A pack from its YAML/JSON text, or a preset by name."""
    return parse_pack(pack) if "\n" in pack else load_pack(pack)
