"""How skills and queries are turned into model input text.

Both stages see the skill as ``name | description | body`` with per-field character budgets;
the name+description ablation drops the body. The budgets follow the SkillRouter setup:
300/2500 characters of description/body for the encoder, 500/2000 for the reranker.
"""

from __future__ import annotations

from typing import Literal

from zjulab.common.errors import ConfigError
from zjulab.skillrouter.skill import Skill

__all__ = ["Fields", "format_query", "format_skill"]

Fields = Literal["full", "name_description"]
"""Which skill fields a stage sees: everything, or the metadata an agent normally gets."""


def format_skill(
    skill: Skill,
    *,
    fields: Fields = "full",
    desc_max: int = 300,
    body_max: int = 2500,
    sep: str = " | ",
) -> str:
    """Render a skill as ``name | description[:desc_max] | body[:body_max]``.

    A skill with an empty body renders as ``name | description`` in both modes.

    Args:
        skill: The skill.
        fields: ``"full"`` keeps the body; ``"name_description"`` renders ``name | description``.
        desc_max: Characters of the description kept.
        body_max: Characters of the body kept.
        sep: Field separator.

    Returns:
        The text, truncated by characters (not tokens), so it is identical on every model.

    Raises:
        ConfigError: ``fields`` is unknown or a budget is negative.
    """
    if desc_max < 0 or body_max < 0:
        raise ConfigError(f"character budgets must be >= 0, got desc_max={desc_max}, body_max={body_max}")
    desc = skill.description[:desc_max]
    if fields == "full" and not skill.body.strip():
        return f"{skill.name}{sep}{desc}"  # a registry entry without a body
    if fields == "full":
        return f"{skill.name}{sep}{desc}{sep}{skill.body[:body_max]}"
    if fields == "name_description":
        return f"{skill.name}{sep}{desc}"
    raise ConfigError(f"fields must be 'full' or 'name_description', got {fields!r}")


def format_query(query: str, *, prompt: str = "", max_chars: int = 2000) -> str:
    """Prefix ``prompt`` (an embedding instruction, possibly empty) to ``query[:max_chars]``."""
    return f"{prompt}{query[:max_chars]}"
