"""The shape every suite's results take: results.md (a title, text, the figures, the
environment) and results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.suites.environment import markdown as environment_markdown


def write_results(out_dir: Path, title: str, paragraphs: list[str], table: str, figures: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = [f"# {title}", "", *(p + "\n" for p in paragraphs), "```", table, "```", "",
            "## Environment", "", environment_markdown()]
    (out_dir / "results.md").write_text("\n".join(text) + "\n")
    (out_dir / "results.json").write_text(json.dumps(figures, indent=1) + "\n")
